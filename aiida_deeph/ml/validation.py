"""How far a prediction is from DFT on the same structure: H blocks and the bands near the Fermi level."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..io.deeph_format import DeepHStructure

if TYPE_CHECKING:  # bands pulls in matplotlib; the command line imports this module for its default window
    from .bands import BandsResult

BAND_WINDOW_EV = 2.0  # bands within ±2 eV of the DFT Fermi level: what transport and optics look at


def hamiltonian_errors(predicted: DeepHStructure, reference: DeepHStructure) -> dict[str, float]:
    """MAE and max |ΔH| (meV) over the blocks both hold; the count of blocks compared and of reference-only ones."""
    if predicted.hamiltonian is None or reference.hamiltonian is None:
        raise ValueError("both structures need a hamiltonian.h5 to be compared")
    total, count, largest, compared = 0.0, 0, 0.0, 0
    for key, block in reference.hamiltonian.items():
        if key not in predicted.hamiltonian:
            continue
        difference = np.abs(predicted.hamiltonian[key] - block)
        total, count = total + float(difference.sum()), count + difference.size
        largest, compared = max(largest, float(difference.max())), compared + 1
    return {"hamiltonian_mae_meV": 1e3 * total / max(count, 1), "hamiltonian_max_error_meV": 1e3 * largest,
            "blocks_compared": compared, "blocks_missing": len(reference.hamiltonian) - compared}


def band_errors(predicted: "BandsResult", reference: "BandsResult", window: float = BAND_WINDOW_EV) -> dict[str, float]:
    """MAE and max |Δε| (meV) of the bands, on the same k-path, whose DFT energy lies within ±``window`` eV of the
    DFT Fermi level; both must hold every band (dense solver) so that band n is band n in both."""
    if predicted.eigenvalues.shape != reference.eigenvalues.shape:
        raise ValueError(f"band arrays differ: {predicted.eigenvalues.shape} vs {reference.eigenvalues.shape}")
    if not (predicted.full_spectrum and reference.full_spectrum):
        raise ValueError("band errors need every band of both (the dense solver without num_bands)")
    fermi = reference.fermi_energy_eV
    inside = np.abs(reference.eigenvalues - fermi) <= window
    if not inside.any():
        raise ValueError(f"no DFT band within ±{window} eV of the Fermi level {fermi:.3f} eV")
    signed = (predicted.eigenvalues - reference.eigenvalues)[inside]
    # A rigid offset is the absolute potential reference of a periodic cell, which moves with the cell (its vacuum,
    # its average potential); it shifts E_F with the bands and changes no band energy relative to E_F.
    offset = float(signed.mean())
    return {"band_mae_meV": 1e3 * float(np.abs(signed).mean()), "band_max_error_meV": 1e3 * float(np.abs(signed).max()),
            "band_offset_meV": 1e3 * offset, "band_mae_without_offset_meV": 1e3 * float(np.abs(signed - offset).mean()),
            "band_window_eV": window, "band_values_compared": int(inside.sum()), "dft_fermi_energy_eV": fermi}

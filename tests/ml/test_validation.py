"""Errors of a prediction against DFT: exact for a known perturbation of a real ABACUS MoS2 Hamiltonian."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aiida_deeph.io.deeph_format import BlockMatrix
from aiida_deeph.ml.bands import compute_bands
from aiida_deeph.ml.validation import band_errors, hamiltonian_errors

from .synthetic import read_mos2


@pytest.fixture(scope="module")
def mos2(dft_fixtures):
    return read_mos2(dft_fixtures)


def shifted(structure, shift: float):
    """H + shift·S: every eigenvalue moves by exactly ``shift``."""
    blocks = {key: block + shift * structure.overlap[key] for key, block in structure.hamiltonian.items()}
    return dataclasses.replace(structure, hamiltonian=BlockMatrix.from_blocks(blocks))


def test_identical_prediction_has_no_error(mos2):
    bands = compute_bands(mos2, npoints=12, solver="dense")
    assert band_errors(bands, bands)["band_mae_meV"] == 0.0
    assert hamiltonian_errors(mos2, mos2)["hamiltonian_mae_meV"] == 0.0


def test_a_rigid_shift_is_measured_exactly(mos2):
    reference = compute_bands(mos2, npoints=12, solver="dense")
    predicted = compute_bands(shifted(mos2, 0.05), kpath=reference.kpath, solver="dense")
    errors = band_errors(predicted, reference, window=2.0)
    assert errors["band_mae_meV"] == pytest.approx(50.0, abs=1e-6)
    assert errors["band_max_error_meV"] == pytest.approx(50.0, abs=1e-6)
    assert errors["band_offset_meV"] == pytest.approx(50.0, abs=1e-6)  # H + cS: every band moves by c exactly
    assert errors["band_mae_without_offset_meV"] == pytest.approx(0.0, abs=1e-6)
    inside = np.abs(reference.eigenvalues - reference.fermi_energy_eV) <= 2.0
    assert errors["band_values_compared"] == int(inside.sum()) > 0
    h_errors = hamiltonian_errors(shifted(mos2, 0.05), mos2)
    assert h_errors["blocks_missing"] == 0 and 0 < h_errors["hamiltonian_max_error_meV"] <= 50.0 + 1e-9


def test_windowed_bands_are_refused(mos2):
    full = compute_bands(mos2, npoints=6, solver="dense")
    window = compute_bands(mos2, kpath=full.kpath, solver="dense", num_bands=4)
    with pytest.raises(ValueError, match="every band"):
        band_errors(window, window)


def test_fermi_level_of_a_prediction_from_its_electron_count(mos2):
    """A structure that knows its electrons (as a prediction on an overlap with --electrons does) gets E_F from them:
    the DFT Fermi level back, from an info.json that said 0."""
    from aiida_deeph.ml.bands import fermi_mesh, with_fermi_from_occupation

    assert with_fermi_from_occupation(mos2) is mos2  # DFT structures keep the code's E_F
    blind = dataclasses.replace(mos2, fermi_energy_eV=0.0, occupation=26.0)  # SG15 MoS2: 26 valence electrons
    recovered = with_fermi_from_occupation(blind)
    assert fermi_mesh(mos2)[2] == 1  # the vacuum axis: no atom pair crosses it
    gap_low = compute_bands(mos2, npoints=12, solver="dense").eigenvalues[:, 12].max()
    gap_high = compute_bands(mos2, npoints=12, solver="dense").eigenvalues[:, 13].min()
    assert gap_low - 0.05 <= recovered.fermi_energy_eV <= gap_high + 0.05  # in the gap, as the DFT E_F
    assert gap_low - 0.05 <= mos2.fermi_energy_eV <= gap_high + 0.05

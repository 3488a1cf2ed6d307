"""Band structures and densities of states of a DeepH structure (DFT or predicted Hamiltonian), with plots.

``compute_bands`` diagonalises H(k) along a k-path — densely for small cells, by shift-invert around σ for large
ones — and writes DeepH-dock's ``band.h5`` (energies relative to the Fermi level, which the file records as
``fermi_energy_before_shift_eV``), so dock's plotter reads our files and ours reads dock's. ``compute_dos`` uses
Gaussian-broadened eigenvalues on a k-mesh for small cells and the KPM for large ones.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io.atomic_write import atomic_path
from ..io.deeph_format import DeepHStructure
from .dos import KPMSum, gaussian_dos, kpm_expansion, probe_count
from .eigensolvers import ShiftInvert, dense_eigh, fermi_level, nearest
from .kpath import KPath, standard_kpath
from .pardiso import Backend, Precision
from .sparse import BlochOperators
from .symmetry import GammaFolding, gamma_eigenvalues

logger = logging.getLogger(__name__)
Solver = Literal["auto", "dense", "sparse"]
DENSE_LIMIT = 3000  # matrix size up to which 'auto' diagonalises densely (every band, O(N³)), not around σ
FERMI_TOLERANCE = 1e-3  # eV: a state this close above E_F still counts as occupied (E_F placed at the VBM)
METAL_GAP = 1e-2  # eV: with a window of bands (no band indices) a smaller gap is read as a metal
FERMI_MOMENTS = 512  # KPM moments for a large cell's Fermi level from its electron count (a smooth IDOS)


# --- bands -------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class BandsResult:
    kpath: KPath
    eigenvalues: np.ndarray  # (nk, nbands) eV, absolute, ascending per k
    fermi_energy_eV: float
    spinful: bool
    full_spectrum: bool  # all bands (band index known) rather than the window nearest σ

    @property
    def band_gap(self) -> float:
        return band_edges(self.eigenvalues, self.fermi_energy_eV, self.full_spectrum)[0]

    @property
    def is_metal(self) -> bool:
        return band_edges(self.eigenvalues, self.fermi_energy_eV, self.full_spectrum)[1]

    def write(self, path: str | os.PathLike) -> Path:
        """``band.h5`` in DeepH-dock's layout; ``band_data`` is (nbands, nk) relative to the Fermi level."""
        path = Path(path)
        kpath = self.kpath
        data = {
            "rlv": kpath.reciprocal_lattice,
            "spinful": self.spinful,
            "band_quantity": self.eigenvalues.shape[1],
            "fermi_energy_before_shift_eV": self.fermi_energy_eV,
            "fermi_energy_eV": 0.0,
            "k_path_quantity": len(kpath.npoints),
            "k_path_density_list": np.array(kpath.npoints),
            "hsk_vector_list": np.stack([kpath.start, kpath.end], axis=1),
            "hsk_symbol_list": np.array([[a.encode(), b.encode()] for a, b in kpath.labels]),
            "kpoints_quantity": len(self.eigenvalues),
            "kpoints_frac_list": kpath.kpoints,
            "kpoints_distance_list": kpath.distances,
            "hsk_distance_list": kpath.label_positions,
            "band_data": (self.eigenvalues - self.fermi_energy_eV).T,
            "band_gap": self.band_gap,
            "is_metal": self.is_metal,
        }
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as handle:
                for key, value in data.items():
                    handle.create_dataset(key, data=value)
        return path


def band_edges(eigenvalues: np.ndarray, fermi: float, full_spectrum: bool) -> tuple[float, bool]:
    """(band gap in eV, is_metal). NaN gap when E_F lies outside the computed bands.

    With every band, band n is the same band at every k: the system is a metal when the number of states below
    E_F changes along the path, else the gap is min(band n_occ) − max(band n_occ − 1). A window of bands near σ
    has no band index, so its gap is the lowest state above E_F minus the highest below, and below
    :data:`METAL_GAP` it counts as a metal.
    """
    occupied = eigenvalues <= fermi + FERMI_TOLERANCE
    if not occupied.any() or occupied.all():
        return float("nan"), False
    if full_spectrum:
        counts = occupied.sum(axis=1)
        if np.any(counts != counts[0]):
            return 0.0, True
        n = counts[0]
        gap = float(eigenvalues[:, n].min() - eigenvalues[:, n - 1].max())
        return max(gap, 0.0), gap <= 0.0
    gap = float(eigenvalues[~occupied].min() - eigenvalues[occupied].max())
    return (0.0, True) if gap < METAL_GAP else (gap, False)


def compute_bands(
    structure: DeepHStructure,
    kpath: KPath | None = None,
    npoints: int = 100,
    num_bands: int | None = None,
    solver: Solver = "auto",
    sigma: float | None = None,
    ill_threshold: float | None = None,
    output_dir: str | os.PathLike | None = None,
    backend: Backend = "auto",
    symmetry: bool = False,
    precision: Precision = "double",
) -> BandsResult:
    """Bands along ``kpath`` (default: the standard path of the cell, 2D-aware, with ~``npoints`` k-points).

    ``solver='dense'`` returns every band, or with ``num_bands`` the ones nearest ``sigma``; ``'sparse'`` returns
    the ``num_bands`` (default 50) nearest ``sigma`` by shift-invert; ``'auto'`` picks dense up to
    :data:`DENSE_LIMIT` orbitals. ``sigma`` defaults to the structure's Fermi level. ``ill_threshold`` (dense only)
    drops S(k) eigenvectors below it. ``symmetry`` (sparse solver): Γ is solved in the irrep blocks of the cell's
    highest-order rotation and, when there is one, the 2-fold flip that inverts it (:mod:`.symmetry`; twisted
    bilayers, D3: real blocks of N/6, N/6 and N/3 rows), an error when the cell has no rotation. ``precision``
    (sparse solver): the factor's, ``"single"`` halving its memory (:class:`~.eigensolvers.ShiftInvert`). With
    ``output_dir`` the result is also written there as ``band.h5``.
    """
    operators = BlochOperators(structure)
    if kpath is None:
        kpath = standard_kpath(structure.lattice, structure.positions, npoints=npoints)
    sigma = structure.fermi_energy_eV if sigma is None else sigma
    if solver == "auto":
        solver = "dense" if operators.size <= DENSE_LIMIT else "sparse"
    if solver == "dense":
        if ill_threshold is not None and num_bands is None:  # the kept subspace may differ between k-points
            raise ValueError("ill_threshold needs num_bands: the number of bands left may change with k")
        bands = [dense_eigh(*operators.at_k(k), ill_threshold=ill_threshold) for k in kpath.kpoints]
        if num_bands is not None:
            bands = [nearest(values, sigma, num_bands) for values in bands]
    elif solver == "sparse":
        num_bands = num_bands or min(50, operators.size - 2)
        at_gamma = _gamma_solver(structure, num_bands, sigma, backend, precision) if symmetry else None
        progress = _PathProgress(output_dir, structure, kpath, num_bands, sigma, symmetry)
        bands = progress.load()
        with ShiftInvert(sigma, backend=backend, precision=precision) as solver:
            for k in kpath.kpoints[len(bands):]:
                bands.append(at_gamma() if at_gamma is not None and _is_gamma(k)
                             else solver.at_k(operators, k, num_bands))
                progress.save(bands)
        progress.finish()
    else:
        raise ValueError(f"solver must be 'auto', 'dense' or 'sparse', not {solver!r}")
    result = BandsResult(kpath, np.array(bands), structure.fermi_energy_eV, operators.spinful,
                         full_spectrum=solver == "dense" and num_bands is None)
    if output_dir is not None:
        result.write(Path(output_dir) / "band.h5")
    return result


class _PathProgress:
    """The sparse bands of the k-points done so far, in ``band.progress.npz`` beside ``band.h5`` (written atomically
    after each k-point): at 10⁴ atoms a k-point takes minutes, and a rerun of the same path on the same structure
    after a crash or a wall-time kill picks up where it stopped. Without ``output_dir`` nothing is kept."""

    def __init__(self, output_dir: str | os.PathLike | None, structure: DeepHStructure, kpath: KPath,
                 num_bands: int, sigma: float, symmetry: bool) -> None:
        self.path = None if output_dir is None else Path(output_dir) / "band.progress.npz"
        digest = hashlib.sha256(repr((num_bands, float(sigma), symmetry)).encode())
        for array in (kpath.kpoints, structure.lattice, structure.positions):
            digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
        for matrix in (structure.hamiltonian, structure.overlap):  # pairs, and a sample of the entries (GBs whole)
            digest.update(matrix.atom_pairs.tobytes())
            digest.update(np.ascontiguousarray(matrix.entries[:: max(1, len(matrix.entries) // 4096)]).tobytes())
        self.fingerprint = digest.hexdigest()

    def load(self) -> list[np.ndarray]:
        if self.path is None or not self.path.is_file():
            return []
        try:
            with np.load(self.path) as saved:
                if str(saved["fingerprint"]) == self.fingerprint:
                    logger.info("resuming the band path after %d k-points from %s", len(saved["bands"]), self.path)
                    return list(saved["bands"])
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring the unreadable %s (%s)", self.path, exc)
        return []

    def save(self, bands: list[np.ndarray]) -> None:
        if self.path is not None:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, fingerprint=self.fingerprint, bands=np.array(bands))

    def finish(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _is_gamma(kpoint: np.ndarray) -> bool:
    return bool(np.allclose(kpoint, np.round(kpoint), atol=1e-12))


def _gamma_solver(structure: DeepHStructure, num: int, sigma: float, backend: Backend,
                  precision: Precision) -> Callable[[], np.ndarray]:
    """Γ's eigenvalues through the irrep blocks, computed at the first call and then remembered (a path meets Γ
    more than once)."""
    folding = GammaFolding(structure)  # raises for structures without a rotation, or spinful ones
    values: list[np.ndarray] = []

    def at_gamma() -> np.ndarray:
        if not values:
            with ShiftInvert(sigma, backend=backend, precision=precision) as solver:
                values.append(gamma_eigenvalues(folding, num, sigma, solver.taking, dense_limit=DENSE_LIMIT))
        return values[0]

    return at_gamma


def plot_bands(
    result: BandsResult,
    path: str | os.PathLike,
    reference: BandsResult | np.ndarray | None = None,
    reference_fermi_eV: float | None = None,
    window: tuple[float, float] = (-6.0, 6.0),
    title: str | None = None,
) -> Path:
    """PNG of the bands relative to E_F (at 0), with optional reference bands (e.g. DFT) dashed on the same path.

    ``reference`` is a result on the same k-path or its (nk, nbands) absolute eigenvalues; they are shifted by
    ``reference_fermi_eV`` (default: the result's or the reference's own Fermi level).
    """
    x = result.kpath.distances
    figure = Figure(figsize=(5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(x, result.eigenvalues - result.fermi_energy_eV, color="tab:red", linewidth=1.2)
    axes.plot([], [], color="tab:red", label="DeepH")
    if reference is not None:
        if isinstance(reference, BandsResult):
            fermi = reference.fermi_energy_eV if reference_fermi_eV is None else reference_fermi_eV
            reference = reference.eigenvalues
        else:
            fermi = result.fermi_energy_eV if reference_fermi_eV is None else reference_fermi_eV
        axes.plot(x, np.asarray(reference) - fermi, color="black", linestyle="--", linewidth=0.9)
        axes.plot([], [], color="black", linestyle="--", label="reference")
        axes.legend(loc="upper right", fontsize="small")
    for position in result.kpath.label_positions:
        axes.axvline(position, color="grey", linewidth=0.6)
    axes.axhline(0.0, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xticks(result.kpath.label_positions, result.kpath.tick_labels)
    axes.set_xlim(x[0], x[-1])
    axes.set_ylim(*window)
    axes.set_ylabel("E − E$_F$ (eV)")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150)
    return path


# --- density of states -------------------------------------------------------------------------------------------
@dataclass(eq=False)
class DosResult:
    energies: np.ndarray  # eV
    dos: np.ndarray  # states per eV per cell (spin-orbitals when spinful), averaged over the k-mesh
    integrated: np.ndarray  # states below each energy
    fermi_energy_eV: float
    method: str  # 'gaussian' or 'kpm'
    resolution_eV: float  # std of the broadening: the Gaussians' width, or the KPM's coarsest (may exceed width)

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as handle:
                for key, value in (("energies_eV", self.energies), ("dos", self.dos),
                                   ("integrated_dos", self.integrated), ("fermi_energy_eV", self.fermi_energy_eV),
                                   ("method", self.method), ("resolution_eV", self.resolution_eV)):
                    handle.create_dataset(key, data=value)
        return path


def monkhorst_pack(mesh: tuple[int, int, int]) -> np.ndarray:
    """Γ-centred uniform mesh of fractional k-points, (n1·n2·n3, 3)."""
    return np.array(list(itertools.product(*(np.arange(n) / n for n in mesh))), dtype=float)


def compute_dos(
    structure: DeepHStructure,
    kmesh: tuple[int, int, int] = (1, 1, 1),
    energies: np.ndarray | None = None,
    method: Literal["auto", "gaussian", "kpm"] = "auto",
    width: float = 0.1,
    num_moments: int | None = None,
    num_vectors: int | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    backend: Backend = "auto",
    symmetry: bool = False,
) -> DosResult:
    """DOS on a Γ-centred ``kmesh``: eigenvalues broadened by Gaussians of std ``width`` eV, or the KPM.

    The KPM takes as many moments as its Jackson broadening needs to reach ``width`` at the centre of the spectrum
    (:func:`~.dos.moments_for`, at most :data:`~.dos.MAX_MOMENTS`; ``num_moments`` fixes the count instead) and
    :func:`~.dos.probe_count` random vectors unless ``num_vectors`` is given; ``result.resolution_eV`` is what it
    reached. ``symmetry``: the KPM at Γ runs on the irrep blocks of the cell's rotation (and flip) one at a time,
    each weighted by its irrep's dimension, as the bands do (:mod:`.symmetry`). When the structure knows its
    electron count (``occupation``) the Fermi level is recomputed from it (eigenvalues: step or Fermi–Dirac at
    ``temperature`` K; KPM: where the integrated DOS holds the electrons); otherwise the structure's own Fermi
    level is kept. ``output_dir`` also writes ``dos.h5`` there.
    """
    kpoints = monkhorst_pack(kmesh)
    spin = 2 if structure.spinful else 1
    method = ("gaussian" if spin * structure.norbitals <= DENSE_LIMIT else "kpm") if method == "auto" else method
    spin_degeneracy = 1 if structure.spinful else 2
    fermi = structure.fermi_energy_eV
    if method == "gaussian":
        operators = BlochOperators(structure)
        eigenvalues = np.array([dense_eigh(*operators.at_k(k)) for k in kpoints])
        if energies is None:
            energies = np.linspace(eigenvalues.min() - 5 * width, eigenvalues.max() + 5 * width, 4001)
        dos, integrated = gaussian_dos(eigenvalues, energies, width)
        resolution = width
        if structure.occupation is not None:
            fermi = fermi_level(eigenvalues, structure.occupation, temperature=temperature,
                                spin_degeneracy=spin_degeneracy)
    elif method == "kpm":
        # the blocks get the whole cell's vectors (probe_count: the noise of their sum)
        num_vectors = probe_count(spin * structure.norbitals) if num_vectors is None else num_vectors
        options = dict(resolution=width, num_moments=num_moments, num_vectors=num_vectors, seed=seed, backend=backend)
        folding = GammaFolding(structure) if symmetry and any(_is_gamma(k) for k in kpoints) else None
        # only Γ, in blocks: the whole cell's CSR layout (GBs at 10⁴ atoms) is never built
        operators = None if folding is not None and all(_is_gamma(k) for k in kpoints) else BlochOperators(structure)
        expansions = [_kpm_at(operators, folding, k, options) for k in kpoints]
        if energies is None:
            low, high = min(e.bounds[0] for e in expansions), max(e.bounds[1] for e in expansions)
            energies = np.linspace(low, high, 8 * max(e.num_moments for e in expansions) + 1)
        dos = np.mean([e.dos(energies) for e in expansions], axis=0)
        integrated = np.mean([e.integrated(energies) for e in expansions], axis=0)
        resolution = max(e.resolution for e in expansions)
        if structure.occupation is not None:
            # the stochastic IDOS may wiggle by a hair: make it monotone before inverting it
            fermi = float(np.interp(structure.occupation / spin_degeneracy, np.maximum.accumulate(integrated),
                                    energies))
    else:
        raise ValueError(f"method must be 'auto', 'gaussian' or 'kpm', not {method!r}")
    result = DosResult(np.asarray(energies, dtype=float), dos, integrated, float(fermi), method, float(resolution))
    if output_dir is not None:
        result.write(Path(output_dir) / "dos.h5")
    return result


def _kpm_at(operators: BlochOperators | None, folding: GammaFolding | None, kpoint: np.ndarray,
            options: dict) -> KPMSum:
    """The KPM at one k-point: at Γ with ``folding`` block by block (one factor of S at a time), else whole."""
    if folding is not None and _is_gamma(kpoint):
        return KPMSum(tuple((folding.degeneracy(p), kpm_expansion(*folding.matrices(p), **options))
                            for p in folding.irreps))
    return KPMSum(((1, kpm_expansion(*operators.at_k(kpoint), **options)),))


def plot_dos(result: DosResult, path: str | os.PathLike, window: tuple[float, float] = (-6.0, 6.0)) -> Path:
    """PNG of the DOS against E − E_F (Fermi level at 0)."""
    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(result.energies - result.fermi_energy_eV, result.dos, color="tab:blue", linewidth=1.0)
    axes.axvline(0.0, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xlim(*window)
    axes.set_xlabel("E − E$_F$ (eV)")
    axes.set_ylabel(f"DOS (states/eV, {result.method})")
    return _save(figure, path)


FERMI_KSPACING = 0.2  # Å⁻¹ (2π included): the Γ-centred mesh on which the electron count fixes E_F


def fermi_mesh(structure: DeepHStructure, spacing: float = FERMI_KSPACING) -> tuple[int, int, int]:
    """A Γ-centred mesh of ``spacing``, with 1 k-point along axes no atom pair crosses (vacuum)."""
    matrix = structure.overlap if structure.overlap is not None else structure.hamiltonian
    reciprocal = 2 * np.pi * np.linalg.inv(structure.lattice).T
    crossed = np.any(matrix.atom_pairs[:, :3] != 0, axis=0)
    return tuple(int(max(1, np.ceil(np.linalg.norm(b) / spacing))) if periodic else 1
                 for b, periodic in zip(reciprocal, crossed))


def with_fermi_from_occupation(structure: DeepHStructure, symmetry: bool = False) -> DeepHStructure:
    """``structure`` with its Fermi level from its electron count (``occupation``) when it has one — a prediction
    on an overlap that knew the electrons —, else unchanged (a DFT structure keeps the code's own E_F).
    ``symmetry``: a large cell's KPM runs Γ in its irrep blocks (:func:`compute_dos`)."""
    if structure.occupation is None:
        return structure
    fermi = compute_dos(structure, kmesh=fermi_mesh(structure), num_moments=FERMI_MOMENTS,
                        symmetry=symmetry).fermi_energy_eV
    return replace(structure, fermi_energy_eV=float(fermi))

"""Perturbed structures for DeepH training data: randomly displaced/strained supercells and interlayer-shift grids.

All randomness comes from one ``numpy.random.default_rng(seed)``, so a seed reproduces the whole set. Every
structure is checked for overlapping atoms: a ValueError names the offending pair if the amplitude is too large.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.neighborlist import neighbor_list

from .defects import group_by_element

DISTRIBUTIONS = ("uniform", "gaussian")
_REFERENCE_CUTOFF = 6.0  # Å; beyond it atoms are taken as far apart when setting the default overlap limit


def minimum_distance(atoms: Atoms, cutoff: float = _REFERENCE_CUTOFF) -> float:
    """Shortest interatomic distance (periodic images included), ``inf`` if no pair is closer than ``cutoff``."""
    distances = neighbor_list("d", atoms, cutoff)
    return float(distances.min()) if len(distances) else float("inf")


def _overlap_limit(reference: Atoms, min_distance: float | None) -> float:
    """``min_distance`` or, by default, half the shortest distance of the unperturbed structure."""
    if min_distance is None:
        return 0.5 * min(minimum_distance(reference), _REFERENCE_CUTOFF)
    if min_distance <= 0:
        raise ValueError(f"min_distance must be > 0, got {min_distance}")
    return float(min_distance)


def _check_no_overlap(atoms: Atoms, limit: float, label: str) -> None:
    first, second, distances = neighbor_list("ijd", atoms, limit)
    if len(distances):
        k = int(np.argmin(distances))
        raise ValueError(
            f"{label}: atoms {first[k]} and {second[k]} are {distances[k]:.3f} Å apart (< {limit:.3f} Å); "
            "lower the displacement or strain amplitude"
        )


def _supercell_matrix(supercell: int | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
    matrix = np.asarray(supercell)
    if matrix.shape in ((), (3,)):
        matrix = np.diag(np.broadcast_to(matrix, 3))
    if matrix.shape != (3, 3) or not np.issubdtype(matrix.dtype, np.integer):
        raise ValueError(f"supercell must be an integer, 3 integers or a 3x3 integer matrix, got {supercell!r}")
    if round(np.linalg.det(matrix)) <= 0:
        raise ValueError(f"supercell matrix must have a positive determinant, got {matrix.tolist()}")
    return matrix


def _displacements(rng: np.random.Generator, count: int, amplitude: float, distribution: str) -> np.ndarray:
    """Per-component uniform displacements in [−amplitude, amplitude] or Gaussian ones with σ = amplitude."""
    if distribution == "uniform":
        return rng.uniform(-amplitude, amplitude, size=(count, 3))
    return rng.normal(0.0, amplitude, size=(count, 3))


def _check_displacement(amplitude: float, distribution: str) -> None:
    if amplitude < 0:
        raise ValueError(f"displacement must be >= 0, got {amplitude}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def _check_strain(atoms: Atoms, strain: tuple[float, float]) -> None:
    low, high = strain
    if not -1 < low <= high:
        raise ValueError(f"strain must be (min, max) with -1 < min <= max, got {strain}")
    cell = np.asarray(atoms.cell)
    for k in np.flatnonzero(~atoms.pbc):
        # The strain leaves Cartesian axis k alone, which is only the vacuum direction if cell[k] lies along it.
        others = [i for i in range(3) if i != k]
        if np.any(np.abs(cell[k, others]) > 1e-8) or np.any(np.abs(cell[others, k]) > 1e-8):
            raise ValueError(f"non-periodic cell vector {k} must lie along Cartesian axis {k} to strain the structure")


def _random_strain(rng: np.random.Generator, strain: tuple[float, float], pbc: np.ndarray) -> np.ndarray:
    """Symmetric strain tensor with components uniform in ``strain``; zero along non-periodic axes."""
    upper = np.triu(rng.uniform(*strain, size=(3, 3)))
    tensor = upper + np.triu(upper, k=1).T
    tensor[~pbc, :] = 0.0
    tensor[:, ~pbc] = 0.0
    return tensor


def perturbed_supercells(
    atoms: Atoms,
    supercell: int | Sequence[int] | Sequence[Sequence[int]] = (1, 1, 1),
    n_samples: int = 10,
    *,
    displacement: float = 0.1,
    distribution: str = "uniform",
    strain: tuple[float, float] | None = None,
    seed: int | None = None,
    min_distance: float | None = None,
) -> list[Atoms]:
    """``n_samples`` randomly strained and displaced copies of the ``supercell`` of ``atoms``.

    ``displacement`` (Å) is the half-width of a uniform distribution per Cartesian component, or σ of a
    Gaussian one (``distribution``). ``strain = (min, max)`` draws a random symmetric strain tensor per sample
    (applied before the displacements; vacuum axes are left unstrained). Samples closer than ``min_distance``
    (default: half the unperturbed shortest distance) raise ValueError. ``info`` records each sample's
    index, strain tensor and settings.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    _check_displacement(displacement, distribution)
    if strain is not None:
        _check_strain(atoms, strain)
    reference = make_supercell(group_by_element(atoms), _supercell_matrix(supercell), order="atom-major")
    limit = _overlap_limit(reference, min_distance)
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(n_samples):
        sample = reference.copy()
        tensor = np.zeros((3, 3)) if strain is None else _random_strain(rng, strain, sample.pbc)
        sample.set_cell(np.asarray(sample.cell) @ (np.eye(3) + tensor), scale_atoms=True)
        sample.positions += _displacements(rng, len(sample), displacement, distribution)
        _check_no_overlap(sample, limit, f"sample {index}")
        sample.info.update(sample=index, strain=tensor, displacement=displacement, distribution=distribution)
        samples.append(sample)
    return samples


def find_top_layer(bilayer: Atoms, z_threshold: float | None = None) -> np.ndarray:
    """Atoms above ``z_threshold`` (Å), by default the middle of the widest gap between atomic z planes."""
    z = bilayer.positions[:, 2]
    if z_threshold is None:
        planes = np.unique(z)
        if len(planes) < 2:
            raise ValueError("all atoms lie in one plane: cannot tell the layers apart")
        widest = int(np.argmax(np.diff(planes)))
        z_threshold = (planes[widest] + planes[widest + 1]) / 2
    mask = z > z_threshold
    if mask.all() or not mask.any():
        raise ValueError(f"z threshold {z_threshold} does not split the structure into two layers")
    return mask


def interlayer_shift_grid(
    bilayer: Atoms,
    n1: int,
    n2: int,
    *,
    top_layer_mask: np.ndarray | Sequence[bool] | None = None,
    z_threshold: float | None = None,
    displacement: float = 0.0,
    distribution: str = "uniform",
    seed: int | None = None,
    min_distance: float | None = None,
) -> list[Atoms]:
    """Bilayers with the top layer shifted by (i/n1) a1 + (j/n2) a2 for i < n1, j < n2 (i-major order).

    The top layer is the boolean ``top_layer_mask``, else the atoms above ``z_threshold`` (see
    ``find_top_layer``); z must be the stacking direction. A non-zero ``displacement`` also perturbs every
    structure as in ``perturbed_supercells``. ``info['shift']`` holds the fractional shift.
    """
    if min(n1, n2) < 1:
        raise ValueError(f"n1 and n2 must be >= 1, got {n1} and {n2}")
    if np.any(np.abs(np.asarray(bilayer.cell)[:2, 2]) > 1e-8):
        raise ValueError("the in-plane cell vectors a1, a2 must lie in the xy plane")
    _check_displacement(displacement, distribution)
    if top_layer_mask is None:
        mask = find_top_layer(bilayer, z_threshold)
    else:
        mask = np.asarray(top_layer_mask, dtype=bool)
    if mask.shape != (len(bilayer),) or mask.all() or not mask.any():
        raise ValueError("top_layer_mask must be a boolean mask over the atoms selecting some but not all of them")
    limit = _overlap_limit(bilayer, min_distance)
    rng = np.random.default_rng(seed)
    structures = []
    for s1, s2 in product(np.arange(n1) / n1, np.arange(n2) / n2):
        shifted = bilayer.copy()
        shifted.positions[mask] += s1 * bilayer.cell[0] + s2 * bilayer.cell[1]
        shifted.wrap()
        if displacement > 0:
            shifted.positions += _displacements(rng, len(shifted), displacement, distribution)
        _check_no_overlap(shifted, limit, f"shift ({s1:.3f}, {s2:.3f})")
        shifted.info.update(shift=(float(s1), float(s2)), displacement=displacement)
        structures.append(shifted)
    return structures

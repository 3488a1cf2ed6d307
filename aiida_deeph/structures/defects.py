"""Point defects on supercells: vacancies, substitutions, interstitials and random substitutional alloys.

Every function returns a new Atoms grouped by element (the DeepH/POSCAR order: the input's elements, then new ones)
and records what it did in ``atoms.info`` (``defect`` plus its parameters). Site indices always refer to the input
structure's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atom, Atoms
from ase.build import sort
from ase.data import atomic_numbers
from pymatgen.optimization.neighbors import find_points_in_spheres

_ZOOM_STEPS = 12  # halvings of the grid spacing while climbing to the emptiest point


def group_by_element(atoms: Atoms, order: Sequence[str] = ()) -> Atoms:
    """Copy with atoms grouped by element, keeping the order within an element.

    Elements come in ``order``, then any others in order of first appearance.
    """
    symbols = atoms.get_chemical_symbols()
    rank = {symbol: i for i, symbol in enumerate(dict.fromkeys([*order, *symbols]))}
    return sort(atoms, tags=[rank[s] for s in symbols])


def _elements(atoms: Atoms) -> list[str]:
    """Element order of ``atoms``: a defect keeps it and appends new elements."""
    return list(dict.fromkeys(atoms.get_chemical_symbols()))


def _check_element(element: str) -> None:
    if element not in atomic_numbers or element == "X":
        raise ValueError(f"unknown element {element!r}")


def _check_site(atoms: Atoms, site: int) -> int:
    if not isinstance(site, (int, np.integer)) or not 0 <= site < len(atoms):
        raise ValueError(f"site must be an index in [0, {len(atoms)}), got {site!r}")
    return int(site)


def _record(atoms: Atoms, **info: object) -> Atoms:
    atoms.info.update(info)
    return atoms


def vacancy(atoms: Atoms, sites: int | Sequence[int]) -> Atoms:
    """Remove the atom(s) at ``sites``."""
    indices = [_check_site(atoms, s) for s in np.atleast_1d(sites).tolist()]
    if len(set(indices)) != len(indices):
        raise ValueError(f"duplicate vacancy sites {indices}")
    if len(indices) == len(atoms):
        raise ValueError("cannot remove every atom")
    removed = [atoms[i].symbol for i in indices]
    defective = atoms.copy()
    del defective[indices]
    single = len(indices) == 1
    return _record(
        group_by_element(defective, _elements(atoms)),
        defect="vacancy",
        site=indices[0] if single else indices,
        element=removed[0] if single else removed,
    )


def substitution(atoms: Atoms, site: int, element: str) -> Atoms:
    """Replace the atom at ``site`` by ``element``."""
    site = _check_site(atoms, site)
    _check_element(element)
    original = atoms[site].symbol
    if original == element:
        raise ValueError(f"site {site} already holds {element}")
    defective = atoms.copy()
    defective[site].symbol = element
    return _record(
        group_by_element(defective, _elements(atoms)),
        defect="substitution",
        site=site,
        element=original,
        substitute=element,
    )


def largest_empty_site(atoms: Atoms, grid_spacing: float = 0.25) -> tuple[np.ndarray, float]:
    """Fractional position farthest from every atom, and that distance in Å.

    A grid search with ``grid_spacing`` (Å) finds the emptiest region, then a zooming 3×3×3 stencil climbs to
    its local maximum (a Voronoi vertex). Along non-periodic axes the search stays between the outermost atoms,
    so a slab's interstitial lies in the slab, not in the vacuum.
    """
    if grid_spacing <= 0:
        raise ValueError(f"grid_spacing must be > 0, got {grid_spacing}")
    low, high = _search_bounds(atoms)
    steps = grid_spacing / atoms.cell.lengths()
    axes = [np.linspace(lo, hi, max(1, int(np.ceil((hi - lo) / step)) + 1)) for lo, hi, step in zip(low, high, steps)]
    # Periodic axes span [0, 1]: drop the end point, the image of 0.
    axes = [axis[:-1] if periodic and len(axis) > 1 else axis for axis, periodic in zip(axes, atoms.pbc)]
    candidates = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    stencil = np.stack(np.meshgrid(*[(-1, 0, 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    for _ in range(_ZOOM_STEPS):
        nearest = _nearest_distances(atoms, candidates @ np.asarray(atoms.cell))
        best = candidates[int(np.argmax(nearest))]
        steps = steps / 2
        moved = best + stencil * steps
        candidates = np.where(atoms.pbc, moved, np.clip(moved, low, high))
    return np.where(atoms.pbc, best % 1.0, best), float(nearest.max())


def _search_bounds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Fractional search box: the whole cell along periodic axes, the atoms' span along the others."""
    frac = atoms.get_scaled_positions(wrap=False)
    periodic = np.asarray(atoms.pbc)
    low = np.where(periodic, 0.0, frac.min(axis=0))
    high = np.where(periodic, 1.0, frac.max(axis=0))
    return low, high


def _nearest_distances(atoms: Atoms, points: np.ndarray) -> np.ndarray:
    """Distance from each Cartesian point to its nearest atom, periodic images included."""
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    nearest = np.full(len(points), np.inf)
    cutoff = 3.0
    # Grow the cutoff until every point sees an atom; distances below the final cutoff are then exact.
    while np.isinf(nearest).any():
        centers, _, _, distances = find_points_in_spheres(
            np.ascontiguousarray(atoms.positions, dtype=float),
            np.ascontiguousarray(points, dtype=float),
            r=cutoff,
            pbc=np.array(atoms.pbc, dtype=np.int64),
            lattice=np.ascontiguousarray(atoms.cell, dtype=float),
        )
        np.minimum.at(nearest, centers, distances)
        cutoff *= 2
    return nearest


def interstitial(
    atoms: Atoms,
    element: str,
    position: Sequence[float] | None = None,
    *,
    grid_spacing: float = 0.25,
    min_distance: float = 0.7,
) -> Atoms:
    """Add ``element`` at the fractional ``position``, or at the largest empty site when None.

    Raises ValueError if the new atom would be closer than ``min_distance`` (Å) to an existing one.
    """
    _check_element(element)
    if position is None:
        frac, _ = largest_empty_site(atoms, grid_spacing)
    else:
        frac = np.asarray(position, dtype=float)
        if frac.shape != (3,) or not np.all(np.isfinite(frac)):
            raise ValueError(f"position must be 3 finite fractional coordinates, got {position!r}")
    point = frac @ np.asarray(atoms.cell)
    nearest = float(_nearest_distances(atoms, point[None, :])[0])
    if nearest < min_distance:
        raise ValueError(f"interstitial at {frac.tolist()} is {nearest:.3f} Å from an atom (< {min_distance} Å)")
    defective = atoms.copy()
    defective.append(Atom(element, point))
    return _record(
        group_by_element(defective, _elements(atoms)),
        defect="interstitial",
        element=element,
        position=frac.tolist(),
        nearest_distance=nearest,
    )


def random_alloy(atoms: Atoms, host: str, dopant: str, concentration: float, seed: int | None = None) -> Atoms:
    """Replace round(concentration × count) random ``host`` atoms by ``dopant``; reproducible with ``seed``."""
    _check_element(dopant)
    if not 0.0 <= concentration <= 1.0:
        raise ValueError(f"concentration must lie in [0, 1], got {concentration}")
    symbols = np.array(atoms.get_chemical_symbols())
    candidates = np.flatnonzero(symbols == host)
    if len(candidates) == 0:
        raise ValueError(f"no {host} atoms to substitute")
    if host == dopant:
        raise ValueError("host and dopant must differ")
    count = int(round(concentration * len(candidates)))
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False))
    symbols[chosen] = dopant
    alloy = atoms.copy()
    alloy.set_chemical_symbols(symbols.tolist())
    alloy = group_by_element(alloy, _elements(atoms))
    if seed is not None:  # extxyz has no None: it would read back as True
        alloy.info["seed"] = seed
    return _record(
        alloy, defect="alloy", host=host, dopant=dopant, concentration=count / len(candidates), sites=chosen.tolist()
    )

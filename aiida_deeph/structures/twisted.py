"""Commensurate twisted bilayers of hexagonal 2D lattices (graphene, hBN, MoS2-type trilayer units).

Convention (Lopes dos Santos et al., PRB 86, 155449): with primitive vectors a1 = a(1, 0), a2 = a(1/2, √3/2),
the coprime pair (m, n) makes L1 = m a1 + n a2 of the bottom layer coincide with n a1' + m a2' of the top
layer, whose lattice is rotated by θ, cos θ = (m² + 4mn + n²) / (2(m² + mn + n²)). The moiré cell holds
m² + mn + n² primitive cells per layer, or a third of that when 3 divides m − n.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from ase import Atoms
from ase.build import graphene, make_supercell, mx2

from .defects import group_by_element

# name -> (primitive layer, default gap in Å between the facing atomic planes of the two layers)
_MATERIALS = {
    "graphene": (lambda: graphene("C2", a=2.46), 3.35),
    "hbn": (lambda: graphene("BN", a=2.504), 3.33),
    # S–S gap of bulk 2H-MoS2 (Mo–Mo interlayer distance 6.15 Å minus the 3.17 Å layer thickness).
    "mos2": (lambda: mx2("MoS2", kind="2H", a=3.16, thickness=3.17), 2.98),
}
MATERIALS = tuple(_MATERIALS)
STACKINGS = ("AA", "AB")

_LENGTH_RTOL = 1e-4
_ANGLE_ATOL_DEG = 1e-3
_WRAP_EPS = 1e-6
_CELL_PLACEHOLDER = 10.0  # c of the primitive layer; replaced when the vacuum is set


def _check_indices(m: int, n: int) -> None:
    if not all(isinstance(v, (int, np.integer)) and v > 0 for v in (m, n)):
        raise ValueError(f"m and n must be positive integers, got ({m}, {n})")
    if m == n:
        raise ValueError(f"m == n ({m}) gives no twist")
    g = gcd(int(m), int(n))
    if g != 1:
        raise ValueError(f"m and n must be coprime: ({m}, {n}) is the twist of ({m // g}, {n // g}) in a larger cell")


def twist_angle(m: int, n: int) -> float:
    """Twist angle in degrees of the commensurate pair (m, n); symmetric in m and n."""
    _check_indices(m, n)
    return float(_angles(np.array([m]), np.array([n]))[0])


def _angles(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    cos = (m**2 + 4 * m * n + n**2) / (2 * (m**2 + m * n + n**2))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _cells(m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Primitive cells per layer in the moiré cell."""
    cells = m**2 + m * n + n**2
    return np.where((m - n) % 3 == 0, cells // 3, cells)


def commensurate_indices(angle_deg: float, tolerance_deg: float = 0.01, max_cells: int = 10_000) -> tuple[int, int]:
    """Coprime (m, n), m < n, whose twist angle is nearest ``angle_deg``.

    Angles closer to the target than ``tolerance_deg`` count as equally near, and among those the smallest
    moiré cell wins, since the angles of ever larger cells lie arbitrarily close to any target. Only cells
    with at most ``max_cells`` primitive cells per layer are considered.
    """
    if not 0 < angle_deg < 60:
        raise ValueError(f"twist angle must lie in (0°, 60°), got {angle_deg}")
    if tolerance_deg < 0 or max_cells < 1:
        raise ValueError("tolerance_deg must be >= 0 and max_cells >= 1")
    # m² + mn + n² <= 3 max_cells bounds n by sqrt(3 max_cells) even for the reduced (3 | m − n) cells.
    upper = int(np.sqrt(3 * max_cells)) + 1
    m, n = np.triu_indices(upper + 1, k=1)
    keep = (m > 0) & (np.gcd(m, n) == 1)
    m, n = m[keep], n[keep]
    cells = _cells(m, n)
    m, n, cells = m[cells <= max_cells], n[cells <= max_cells], cells[cells <= max_cells]
    if len(m) == 0:
        raise ValueError(f"no commensurate cell has at most {max_cells} primitive cells")
    error = np.maximum(np.abs(_angles(m, n) - angle_deg), tolerance_deg)
    best = np.lexsort((cells, error))[0]
    return int(m[best]), int(n[best])


def _cell_matrix(p: int, q: int) -> np.ndarray:
    """Supercell matrix of the moiré cell in the primitive basis of the layer whose L1 = p a1 + q a2."""
    if (p - q) % 3 == 0:
        # (L1 + L2) / 3 is a lattice vector of both layers: the cell is three times smaller.
        rows = [[(p - q) // 3, (p + 2 * q) // 3], [-(p + 2 * q) // 3, (2 * p + q) // 3]]
    else:
        rows = [[p, q], [-q, p + q]]
    matrix = np.eye(3, dtype=int)
    matrix[:2, :2] = rows
    return matrix


def primitive_layer(material: str) -> Atoms:
    """Standardised primitive layer of a known material (see ``MATERIALS``)."""
    try:
        factory, _ = _MATERIALS[material.lower()]
    except KeyError as exc:
        raise ValueError(f"unknown material {material!r}; choose from {', '.join(MATERIALS)}") from exc
    return standard_layer(factory())


def default_distance(material: str) -> float:
    """Default gap in Å between the facing atomic planes of a bilayer of ``material``."""
    primitive_layer(material)  # validates the name
    return _MATERIALS[material.lower()][1]


def standard_layer(layer: Atoms) -> Atoms:
    """Copy of a hexagonal layer with a1 = a(1, 0), a2 = a(1/2, √3/2), its first atom at the origin, z >= 0.

    Raises ValueError unless the in-plane vectors lie in the xy plane with |a1| = |a2| and an angle of 60° or 120°.
    """
    if len(layer) == 0:
        raise ValueError("the layer has no atoms")
    cell = np.asarray(layer.cell)
    a, gamma = _hexagonal_setting(cell)
    xy = layer.positions[:, :2] - layer.positions[0, :2]
    frac = np.linalg.solve(cell[:2, :2].T, xy.T).T
    # Same fractional coordinates on the ideal cell of the input's setting, then expressed in the 60° basis.
    source = a * np.array([[1.0, 0.0], [np.cos(np.radians(gamma)), np.sin(np.radians(gamma))]])
    positions = np.column_stack([frac @ source, layer.positions[:, 2] - layer.positions[:, 2].min()])
    standard = np.array([[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, _CELL_PLACEHOLDER]])
    result = Atoms(layer.get_chemical_symbols(), positions=positions, cell=standard, pbc=(True, True, False))
    result.wrap(eps=_WRAP_EPS)
    return result


def _hexagonal_setting(cell: np.ndarray) -> tuple[float, float]:
    """Lattice constant and ideal in-plane angle (60° or 120°) of a hexagonal cell; ValueError otherwise."""
    if np.any(np.abs(cell[:2, 2]) > 1e-8):
        raise ValueError("the layer's in-plane cell vectors must lie in the xy plane")
    a, b = np.linalg.norm(cell[:2], axis=1)
    if min(a, b) <= 0:
        raise ValueError("the layer's in-plane cell vectors must be non-zero")
    gamma = float(np.degrees(np.arccos(np.clip(np.dot(cell[0], cell[1]) / (a * b), -1, 1))))
    ideal = 60.0 if abs(gamma - 60) < abs(gamma - 120) else 120.0
    if abs(a - b) > _LENGTH_RTOL * a or abs(gamma - ideal) > _ANGLE_ATOL_DEG:
        raise ValueError(
            "twisting needs a hexagonal lattice (|a1| = |a2|, γ = 60° or 120°); "
            f"got |a1| = {a:.4f} Å, |a2| = {b:.4f} Å, γ = {gamma:.3f}°"
        )
    return float(a), ideal


def _resolve_indices(m: int | None, n: int | None, angle: float | None, max_cells: int) -> tuple[int, int]:
    if (m is None) != (n is None):
        raise ValueError("give both m and n")
    if (m is None) == (angle is None):
        raise ValueError("give either (m, n) or angle, not both or neither")
    if angle is not None:
        return commensurate_indices(angle, max_cells=max_cells)
    _check_indices(m, n)
    return int(m), int(n)


def _signed_rotation(prim: Atoms, m: int, n: int) -> float:
    """Angle (degrees, counter-clockwise) taking n a1 + m a2 onto m a1 + n a2."""
    a1, a2 = prim.cell[0, :2], prim.cell[1, :2]
    source, target = n * a1 + m * a2, m * a1 + n * a2
    cross = source[0] * target[1] - source[1] * target[0]
    return float(np.degrees(np.arctan2(cross, np.dot(source, target))))


def twisted_bilayer(
    layer: str | Atoms = "graphene",
    m: int | None = None,
    n: int | None = None,
    *,
    angle: float | None = None,
    distance: float | None = None,
    stacking: str = "AA",
    vacuum: float = 15.0,
    max_cells: int = 10_000,
) -> Atoms:
    """Commensurate twisted bilayer from (m, n) or the commensurate pair nearest ``angle`` (degrees).

    ``layer`` is a material name (``MATERIALS``) or a hexagonal layer. The bottom layer is the primitive layer on
    the moiré supercell; the top layer starts in ``stacking`` (AA: on top; AB: shifted by (a1 + a2)/3, Bernal for
    graphene), is rotated by θ about the first atom's site and put on the same cell. ``distance`` is the gap (Å)
    between the facing atomic planes (material default if None), ``vacuum`` the total vacuum (Å) along z.
    Atoms are grouped by element (bottom before top within an element); ``tags`` are 0 (bottom) and 1 (top).
    """
    prim = primitive_layer(layer) if isinstance(layer, str) else standard_layer(layer)
    if distance is None:
        if not isinstance(layer, str):
            raise ValueError("give the interlayer distance for a custom layer")
        distance = default_distance(layer)
    if distance <= 0 or vacuum < 0:
        raise ValueError(f"distance must be > 0 and vacuum >= 0, got {distance} and {vacuum}")
    if stacking not in STACKINGS:
        raise ValueError(f"stacking must be one of {STACKINGS}, got {stacking!r}")
    m, n = _resolve_indices(m, n, angle, max_cells)

    bottom = make_supercell(prim, _cell_matrix(m, n), order="atom-major")
    top = _twisted_top(prim, m, n, stacking)
    if not np.allclose(top.cell[:2], bottom.cell[:2], atol=1e-6):
        raise RuntimeError(f"top and bottom moiré cells differ for (m, n) = ({m}, {n})")
    top.set_cell(bottom.cell)
    top.wrap(eps=_WRAP_EPS)
    top.positions[:, 2] += np.ptp(prim.positions[:, 2]) + distance
    bottom.set_tags(0)
    top.set_tags(1)

    bilayer = group_by_element(bottom + top)
    bilayer.center(vacuum=vacuum / 2, axis=2)
    bilayer.info.update(twist_angle=twist_angle(m, n), m=m, n=n, stacking=stacking, interlayer_distance=float(distance))
    return bilayer


def _twisted_top(prim: Atoms, m: int, n: int, stacking: str) -> Atoms:
    top = prim.copy()
    if stacking == "AB":
        top.translate((top.cell[0] + top.cell[1]) / 3)
        top.wrap(eps=_WRAP_EPS)
    top.rotate(_signed_rotation(prim, m, n), "z", center=(0, 0, 0), rotate_cell=True)
    # Swapping (m, n): n a1' + m a2' of the rotated lattice is the bottom's m a1 + n a2.
    return make_supercell(top, _cell_matrix(n, m), order="atom-major")

"""The one table of orbital conventions: each code's order and signs inside a shell → standard real harmonics.

Target order (DeepH format, e3nn after the (x, y, z) → (y, z, x) change of basis): m = −l..l, i.e.
p = (y, z, x), d = (xy, yz, z², xz, x²−y²), f = (m = −3..3).

For a code, ``ORBITAL_CONVENTIONS[code][l] = (perm, signs)`` means: a block row/column vector ``v`` in the code's
order maps to ``v_std[m] = signs[m] * v[perm[m]]``. These are proven, not read: the rotation tests rerun the real
code (CP2K) or the analytic integrals (PySCF) on a rotated structure and check H' = D H Dᵀ with e3nn's D.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

Convention = dict[int, tuple[tuple[int, ...], tuple[int, ...]]]


def _identity(l: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(range(2 * l + 1)), (1,) * (2 * l + 1)


ORBITAL_CONVENTIONS: dict[str, Convention] = {
    # CP2K orders every shell m = −l..l (proven by the CP2K rotation test).
    "cp2k": {l: _identity(l) for l in range(5)},
    # PySCF (cart=False): p is (x, y, z); l >= 2 is m = −l..l.
    "pyscf": {0: _identity(0), 1: ((1, 2, 0), (1, 1, 1)), **{l: _identity(l) for l in range(2, 5)}},
    # OpenMX: p (x, y, z); d (z², x²−y², xy, xz, yz); f (z³, xz², yz², z(x²−y²), xyz, x(x²−3y²), y(3x²−y²)).
    "openmx": {
        0: _identity(0),
        1: ((1, 2, 0), (1, 1, 1)),
        2: ((2, 4, 0, 3, 1), (1, 1, 1, 1, 1)),
        3: ((6, 4, 2, 0, 1, 3, 5), (1, 1, 1, 1, 1, 1, 1)),
    },
    # ABACUS: m = 0, +1, −1, +2, −2, ... with Condon–Shortley signs on odd m.
    "abacus": {
        0: _identity(0),
        1: ((2, 0, 1), (-1, 1, -1)),
        2: ((4, 2, 0, 1, 3), (1, -1, 1, -1, 1)),
        3: ((6, 4, 2, 0, 1, 3, 5), (-1, 1, -1, 1, -1, 1, -1)),
    },
}

# The legacy DeepH format (DeepH-pack 0.2, DeepH-E3) stores blocks in OpenMX order.
LEGACY_CODE = "openmx"


@lru_cache(maxsize=None)
def shell_transform(code: str, l: int) -> np.ndarray:
    """Matrix T with v_std = T @ v_code for one shell."""
    try:
        perm, signs = ORBITAL_CONVENTIONS[code][l]
    except KeyError as exc:
        raise ValueError(f"no orbital convention for code {code!r} and l={l}") from exc
    matrix = np.zeros((2 * l + 1, 2 * l + 1))
    for m, (p, s) in enumerate(zip(perm, signs)):
        matrix[m, p] = s
    matrix.setflags(write=False)
    return matrix


def atom_transform(code: str, shells: list[int] | tuple[int, ...]) -> np.ndarray:
    """Block-diagonal matrix taking one atom's orbitals from the code's order to the standard order."""
    size = sum(2 * l + 1 for l in shells)
    matrix = np.zeros((size, size))
    start = 0
    for l in shells:
        width = 2 * l + 1
        matrix[start : start + width, start : start + width] = shell_transform(code, l)
        start += width
    return matrix


def to_standard(block: np.ndarray, code: str, shells_i: list[int], shells_j: list[int]) -> np.ndarray:
    """Reorder a (n_i, n_j) block, or a spinful (2n_i, 2n_j) spin-major block, from ``code`` to standard order."""
    t_i, t_j = atom_transform(code, shells_i), atom_transform(code, shells_j)
    if block.shape == (2 * len(t_i), 2 * len(t_j)):
        t_i, t_j = np.kron(np.eye(2), t_i), np.kron(np.eye(2), t_j)
    return t_i @ block @ t_j.T


def from_standard(block: np.ndarray, code: str, shells_i: list[int], shells_j: list[int]) -> np.ndarray:
    """Inverse of :func:`to_standard` (the transforms are signed permutations, so the inverse is the transpose)."""
    t_i, t_j = atom_transform(code, shells_i), atom_transform(code, shells_j)
    if block.shape == (2 * len(t_i), 2 * len(t_j)):
        t_i, t_j = np.kron(np.eye(2), t_i), np.kron(np.eye(2), t_j)
    return t_i.T @ block @ t_j

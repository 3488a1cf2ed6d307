"""Exact overlap S_ij(R) = ⟨φ_i,0|φ_j,R⟩ of a periodic structure in a Gaussian basis, from PySCF's molecular integrals.

The overlap needs no DFT run: for every periodic image R it is a molecular integral between the home cell and the
cell shifted by R (``pyscf.gto.intor_cross``). The basis is the same MOLOPT set CP2K uses, so the result is CP2K's
S(R) to ~1e-8 (see the shared engine notes) and can serve as the DeepH overlap or as a check of a parser.

Blocks are in the standard m = −l..l order (:mod:`aiida_deeph.io.conventions`). R labels refer to the positions as
given: no wrapping into the cell is done here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache

import numpy as np
from pyscf import gto
from scipy.spatial import cKDTree

from .conventions import to_standard
from .deeph_format import BlockMatrix
from .units import BOHR_TO_ANGSTROM

Basis = str | Mapping[str, str]

_SCAN_STEP = 0.05  # Bohr; grid of the pair-cutoff scan
_ENVELOPE_MARGIN = 30.0  # extra e-folds of the Gaussian envelope, for the l-dependent and normalisation prefactors
_CP2K_GTH_NAME = re.compile(r"^(?P<stem>.+)-GTH(-q\d+)?$", re.IGNORECASE)  # DZVP-MOLOPT-SR-GTH, ...-GTH-q4


# --- basis --------------------------------------------------------------------------------------------------------
def pyscf_basis_name(name: str) -> str:
    """Map a CP2K basis name (``DZVP-MOLOPT-SR-GTH``) to PySCF's (``gth-dzvp-molopt-sr``); other names pass through.

    CP2K's ``-qN`` aliases (valence charge) name the same basis.
    """
    match = _CP2K_GTH_NAME.match(name.strip())
    return "gth-" + match["stem"].lower() if match else name.strip()


def _element_basis(basis: Basis, element: str) -> str:
    if isinstance(basis, str):
        return pyscf_basis_name(basis)
    try:
        return pyscf_basis_name(basis[element])
    except KeyError as exc:
        raise ValueError(f"no basis given for element {element}") from exc


@lru_cache(maxsize=None)
def _atom_molecule(basis_name: str, element: str) -> gto.Mole:
    return gto.M(atom=[(element, (0.0, 0.0, 0.0))], basis={element: basis_name}, unit="Bohr", spin=None, verbose=0)


def basis_shells(basis_name: Basis, element: str) -> list[int]:
    """l of each shell of ``element`` in the basis order (C in DZVP-MOLOPT-SR-GTH: [0, 0, 1, 1, 2]).

    Parsed by PySCF itself, so the shells are exactly the AO layout of the integrals: a PySCF shell with several
    contractions is several shells of the same l, each m = −l..l in turn (CP2K's order s, s', p, p', d).
    """
    mol = _atom_molecule(_element_basis(basis_name, element), element)
    return [int(mol.bas_angular(b)) for b in range(mol.nbas) for _ in range(mol.bas_nctr(b))]


# --- cutoffs and neighbours -----------------------------------------------------------------------------------------
def _pair_cutoff(mol_a: gto.Mole, mol_b: gto.Mole, tol: float) -> float:
    """Distance (Bohr) beyond which every overlap element between an atom of ``mol_a`` and one of ``mol_b`` is < tol.

    The Frobenius norm of an atom-pair block is rotation invariant (D is orthogonal per shell), so a scan along one
    axis covers all directions, and it bounds the block's max |S|. The scan range comes from the most diffuse
    exponents a, b: the overlap decays like exp(−ab/(a+b) d²).
    """
    a, b = _most_diffuse_exponent(mol_a), _most_diffuse_exponent(mol_b)
    reduced = a * b / (a + b)
    d_max = np.sqrt((np.log(1.0 / tol) + _ENVELOPE_MARGIN) / reduced)
    distances = np.arange(0.0, d_max + _SCAN_STEP, _SCAN_STEP)
    partner = _atom_molecule_at(mol_b, np.outer(distances, [0.0, 0.0, 1.0]))
    matrix = gto.intor_cross("int1e_ovlp", mol_a, partner).reshape(mol_a.nao, len(distances), mol_b.nao)
    norms = np.linalg.norm(matrix, axis=(0, 2))
    if norms[-1] >= tol:  # the envelope margin was too small; never seen for MOLOPT bases
        raise RuntimeError(f"overlap still {norms[-1]:.2e} at {d_max:.1f} Bohr; the cutoff scan range is too short")
    return float(distances[np.nonzero(norms >= tol)[0].max()] + _SCAN_STEP)


def _most_diffuse_exponent(mol: gto.Mole) -> float:
    return min(float(mol.bas_exp(b).min()) for b in range(mol.nbas))


def _atom_molecule_at(mol: gto.Mole, coords: np.ndarray) -> gto.Mole:
    """Copies of a one-atom molecule at each of ``coords`` (Bohr), in one Mole."""
    symbol = mol.atom_symbol(0)
    return gto.M(atom=[(symbol, c) for c in coords], basis=mol.basis, unit="Bohr", spin=None, verbose=0)


def _candidate_images(lattice: np.ndarray, positions: np.ndarray, cutoff: float) -> np.ndarray:
    """Integer images R that can hold a pair within ``cutoff``, one of each ±R pair (R = 0 or first nonzero > 0)."""
    inverse = np.linalg.inv(lattice)  # fractional f = r @ inverse; |Δf_k| ≤ |Δr| · |inverse[:, k]|
    frac = positions @ inverse
    reach = np.ceil(cutoff * np.linalg.norm(inverse, axis=0) + np.ptp(frac, axis=0)).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in reach], indexing="ij"), axis=-1).reshape(-1, 3)
    first_nonzero = np.take_along_axis(grid, np.argmax(grid != 0, axis=1)[:, None], axis=1)[:, 0]
    return grid[first_nonzero >= 0]


def _neighbour_pairs(
    lattice: np.ndarray, positions: np.ndarray, kinds: np.ndarray, cutoffs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image R, i, j) for the pairs with |τ_j + R − τ_i| within the cutoff of their kinds, one of each mirror pair."""
    images = _candidate_images(lattice, positions, cutoffs.max())
    natoms = len(positions)
    shifted = (positions[None, :, :] + (images @ lattice)[:, None, :]).reshape(-1, 3)
    pairs = cKDTree(positions).sparse_distance_matrix(cKDTree(shifted), cutoffs.max(), output_type="ndarray")
    i, image, j = pairs["i"], pairs["j"] // natoms, pairs["j"] % natoms
    keep = pairs["v"] <= cutoffs[kinds[i], kinds[j]]
    keep &= np.any(images[image] != 0, axis=1) | (i <= j)  # at R = 0 the pair (j, i) mirrors (i, j)
    return images[image[keep]], i[keep], j[keep]


def _spatial_chunks(positions: np.ndarray, size: int) -> np.ndarray:
    """Chunk number of each atom: compact groups of ≤ ``size`` atoms, by recursive bisection of the widest axis.

    Compact chunks keep each integral call to a chunk and its neighbours instead of the whole cell.
    """
    chunk = np.zeros(len(positions), dtype=np.int64)
    pending, count = [np.arange(len(positions))], 0
    while pending:
        atoms = pending.pop()
        if len(atoms) <= size:
            chunk[atoms], count = count, count + 1
            continue
        axis = np.argmax(np.ptp(positions[atoms], axis=0))
        ordered = atoms[np.argsort(positions[atoms, axis], kind="stable")]
        pending += [ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]]
    return chunk


# --- integrals ------------------------------------------------------------------------------------------------------
class _Integrals:
    """The molecule of the home cell and cheap views of it: a subset of atoms, optionally shifted by a vector."""

    def __init__(self, species: list[str], positions: np.ndarray, basis: Basis):
        elements = list(dict.fromkeys(species))
        self.mol = gto.M(
            atom=[(el, tuple(p)) for el, p in zip(species, positions)],
            basis={el: _element_basis(basis, el) for el in elements},
            unit="Bohr",
            spin=None,
            verbose=0,
        )
        slices = self.mol.aoslice_by_atom()
        self.shell_start, self.shell_stop = slices[:, 0], slices[:, 1]
        self.nao = slices[:, 3] - slices[:, 2]
        self.coord_index = self.mol._atm[:, gto.PTR_COORD][:, None] + np.arange(3)

    def overlap(self, rows: np.ndarray, cols: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """⟨AOs of atoms ``rows``|AOs of atoms ``cols`` shifted by ``shift``⟩, one libcint call (Bohr)."""
        env = self.mol._env.copy()
        env[self.coord_index] += shift
        return gto.intor_cross("int1e_ovlp", self._view(rows, self.mol._env), self._view(cols, env))

    def ao_offsets(self, atoms: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.nao[atoms])[:-1]])

    def _view(self, atoms: np.ndarray, env: np.ndarray) -> gto.Mole:
        # intor_cross reads only _atm, _bas, _env and cart; copying the Mole itself would pickle it.
        view = gto.Mole()
        view.cart = self.mol.cart
        view._atm, view._env = self.mol._atm, env
        view._bas = self.mol._bas[_concatenated_ranges(self.shell_start[atoms], self.shell_stop[atoms])]
        return view


def _concatenated_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) without the Python loop."""
    lengths = stops - starts
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())


def _gather_blocks(
    matrix: np.ndarray, row_offsets: np.ndarray, col_offsets: np.ndarray, n_row: int, n_col: int
) -> np.ndarray:
    """Stack of (n_row, n_col) blocks starting at the given AO offsets of ``matrix``."""
    rows = row_offsets[:, None, None] + np.arange(n_row)[None, :, None]
    cols = col_offsets[:, None, None] + np.arange(n_col)[None, None, :]
    return matrix[rows, cols]


# --- assembly -------------------------------------------------------------------------------------------------------
def _with_mirrors(keys: np.ndarray, blocks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Add S_ji(−R) = S_ij(R)ᵀ for the computed half; on-site blocks are symmetrised, so S is exactly Hermitian."""
    onsite = np.all(keys[:, :3] == 0, axis=1) & (keys[:, 3] == keys[:, 4])
    if onsite.any():  # only groups of one kind hold on-site blocks
        blocks = blocks.copy()
        blocks[onsite] = (blocks[onsite] + blocks[onsite].swapaxes(1, 2)) / 2  # a + b == b + a: exactly symmetric
    mirrored = np.concatenate([-keys[~onsite, :3], keys[~onsite, 4:5], keys[~onsite, 3:4]], axis=1)
    return [(keys, blocks), (mirrored, blocks[~onsite].swapaxes(1, 2))]


def _assemble(groups: list[tuple[np.ndarray, np.ndarray]]) -> BlockMatrix:
    """One BlockMatrix, sorted by key, from (keys (P, 5), blocks (P, n_i, n_j)) groups of equal-shaped blocks."""
    keys = np.concatenate([k for k, _ in groups])
    shapes = np.concatenate([np.tile(b.shape[1:], (len(b), 1)) for _, b in groups]).astype(np.int64)
    order = np.lexsort(keys.T[::-1])
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    boundaries = np.concatenate([[0], np.cumsum(np.prod(shapes[order], axis=1))]).astype(np.int64)
    entries = np.empty(boundaries[-1])
    start = 0
    for _, blocks in groups:
        flat = blocks.reshape(len(blocks), -1)
        entries[boundaries[rank[start : start + len(blocks)]][:, None] + np.arange(flat.shape[1])] = flat
        start += len(blocks)
    return BlockMatrix(keys[order], shapes[order], boundaries, entries)


# --- driver ---------------------------------------------------------------------------------------------------------
def analytic_overlap(
    lattice: np.ndarray,
    species: list[str],
    positions: np.ndarray,
    basis: Basis,
    cutoff_tol: float = 1e-10,
    chunk_atoms: int = 128,
) -> BlockMatrix:
    """S_ij(R) = ⟨φ_i,0|φ_j,R⟩ for every (i, j, R) whose block has max |S| ≥ ``cutoff_tol``, in standard m order.

    ``lattice`` rows are the cell vectors and ``positions`` Cartesian, both Å; ``basis`` is a basis name (CP2K or
    PySCF spelling) or one per element. Both (i, j, R) and (j, i, −R) are stored, the second as the exact transpose
    of the first. One integral call per image R and chunk of ≤ ``chunk_atoms`` home atoms bounds the memory.
    """
    lattice = np.asarray(lattice, dtype=float).reshape(3, 3) / BOHR_TO_ANGSTROM
    positions = np.asarray(positions, dtype=float).reshape(-1, 3) / BOHR_TO_ANGSTROM
    species = [str(s) for s in species]
    elements = list(dict.fromkeys(species))
    kinds = np.array([elements.index(s) for s in species])
    shells = [basis_shells(basis, el) for el in elements]
    atoms = [_atom_molecule(_element_basis(basis, el), el) for el in elements]
    cutoffs = np.array([[_pair_cutoff(a, b, cutoff_tol) for b in atoms] for a in atoms])

    integrals = _Integrals(species, positions, basis)
    images, first, second = _neighbour_pairs(lattice, positions, kinds, cutoffs)
    chunk = _spatial_chunks(positions, chunk_atoms)
    found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for image, first_atoms, second_atoms in _groups(images, chunk[first], first, second):
        for (ka, kb), sel, blocks in _pair_blocks(integrals, kinds, image @ lattice, first_atoms, second_atoms):
            large = np.max(np.abs(blocks), axis=(1, 2)) >= cutoff_tol
            keys = np.column_stack(
                [np.tile(image, (int(large.sum()), 1)), first_atoms[sel][large], second_atoms[sel][large]]
            )
            # to_standard broadcasts over the leading block axis (T_i @ blocks @ T_jᵀ).
            found.setdefault((ka, kb), []).append((keys, to_standard(blocks[large], "pyscf", shells[ka], shells[kb])))
    groups = []
    for parts in found.values():
        groups += _with_mirrors(np.concatenate([k for k, _ in parts]), np.concatenate([b for _, b in parts]))
    return _assemble(groups)


def _groups(
    images: np.ndarray, chunk_of_first: np.ndarray, first: np.ndarray, second: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (R, i atoms, j atoms) of the pairs sharing one image and one chunk of home atoms."""
    order = np.lexsort((chunk_of_first, images[:, 2], images[:, 1], images[:, 0]))
    images, chunk_of_first, first, second = images[order], chunk_of_first[order], first[order], second[order]
    change = np.any(np.diff(images, axis=0) != 0, axis=1) | (np.diff(chunk_of_first) != 0)
    bounds = np.concatenate([[0], np.nonzero(change)[0] + 1, [len(order)]])
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield images[start], first[start:stop], second[start:stop]


def _pair_blocks(
    integrals: _Integrals, kinds: np.ndarray, shift: np.ndarray, first: np.ndarray, second: np.ndarray
) -> Iterator[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """Blocks ⟨i|j shifted by ``shift``⟩ of the pairs (first, second) from one integral call, split by kind pair.

    Yields ((kind_i, kind_j), selection of the pairs, blocks (P, n_i, n_j)) in PySCF's orbital order.
    """
    rows, cols = np.unique(first), np.unique(second)
    matrix = integrals.overlap(rows, cols, shift)
    row_offsets = integrals.ao_offsets(rows)[np.searchsorted(rows, first)]
    col_offsets = integrals.ao_offsets(cols)[np.searchsorted(cols, second)]
    nkinds = int(kinds.max()) + 1
    pair_kind = kinds[first] * nkinds + kinds[second]
    for code in np.unique(pair_kind):
        sel = pair_kind == code
        ka, kb = divmod(int(code), nkinds)
        n_i, n_j = integrals.nao[first[sel][0]], integrals.nao[second[sel][0]]
        yield (ka, kb), sel, _gather_blocks(matrix, row_offsets[sel], col_offsets[sel], n_i, n_j)

"""Bloch matrices H(k), S(k) as scipy CSR, assembled from a :class:`~aiida_deeph.io.BlockMatrix` without loops.

X(k) = Σ_R e^{2πi k·R} X(R) with k fractional. Every block lands on fixed rows and columns of X(k) whatever k is;
only its phase changes. :class:`BlockPattern` works the CSR layout out once per structure from per-block numbers
alone: all rows of one atom (and spin) hold the same runs of columns, one run of n_j columns per neighbour j, so
entry (a, b) of a block sits at ``indptr[first row + a] + run start + b``. :meth:`BlockPattern.at_k` writes each
block times its phase straight to those positions, chunk by chunk; blocks of several R on the same (i, j) share a
run and are added up, in the order of the block matrix. Besides the CSR column indices, shared by every X(k) and by
H and S when they have the same pairs, nothing is kept per entry: 4 bytes per nonzero, not the 16 of a permuted copy
of the entries with their pair numbers, and no argsort of 10⁸–10⁹ keys to build it.

Spinful operators use the spin-major global layout: orbital o of spin s is row s·N + o (N = spinless orbital
count), matching the (2n_i, 2n_j) spin-major blocks; each spin quarter of a block is a tile of its own. The overlap
is stored spinless and is doubled as I₂ ⊗ S(k).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..io.deeph_format import BlockMatrix, DeepHStructure

CHUNK = 1 << 22  # entries per vectorised chunk (or in-place update): bounds the temporaries at tens of MB


def _index_dtype(*sizes: int) -> type[np.signedinteger]:
    return np.int32 if max(sizes, default=0) < np.iinfo(np.int32).max else np.int64


@dataclass(frozen=True, eq=False)
class _Tiles:
    """Tiles of one shape (rows, cols) and one layer (the rank of their pair among pairs on the same (i, j))."""

    rows: int
    cols: int
    pair: np.ndarray  # (T,) atom pair of each tile
    source: np.ndarray  # (T,) flat index of the tile's first entry in the block matrix
    stride: int  # entries between two rows of a tile in the block matrix (the block's width)
    first_row: np.ndarray  # (T,) global row of the tile's first row
    run_start: np.ndarray  # (T,) position of the tile's columns inside each of its CSR rows

    @property
    def contiguous(self) -> bool:
        """Whether the tiles are whole blocks stored one after the other (spinless, one element pair, no shared
        slots): their entries are then a slice, not a gather."""
        return self.stride == self.cols and bool(np.all(np.diff(self.source) == self.rows * self.cols))


@dataclass(frozen=True, eq=False)
class BlockPattern:
    """The CSR layout of one block matrix, computed once; :meth:`at_k` fills in the phases."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    entries: np.ndarray  # the block matrix's own entries (not copied)
    layers: list[list[_Tiles]]  # layer 0 writes every slot once; later layers add the other R of shared slots
    cell_shifts: np.ndarray  # (P, 3) R of each atom pair

    @classmethod
    def build(cls, matrix: BlockMatrix, offsets: np.ndarray, norbitals: int, spinful: bool) -> "BlockPattern":
        """``offsets``: first spinless orbital of each atom; ``spinful``: blocks are spin-major (2n_i, 2n_j)."""
        spin = 2 if spinful else 1
        size = spin * norbitals
        offsets = np.asarray(offsets, dtype=np.int64)
        pairs = matrix.atom_pairs
        height, width = matrix.chunk_shapes[:, 0] // spin, matrix.chunk_shapes[:, 1] // spin
        # one tile per pair and spin quarter (s, t): rows s·N + off_i.., columns t·N + off_j..
        quarter_s, quarter_t = np.divmod(np.arange(spin * spin), spin)
        pair = np.repeat(np.arange(len(pairs)), spin * spin)
        s, t = np.tile(quarter_s, len(pairs)), np.tile(quarter_t, len(pairs))
        first_row = s * norbitals + offsets[pairs[pair, 3]]
        first_column = t * norbitals + offsets[pairs[pair, 4]]
        # runs: distinct (first row, first column), ordered by column inside each row group
        order = np.lexsort((first_column, first_row))
        rows_sorted, columns_sorted = first_row[order], first_column[order]
        new_run = np.ones(len(order), dtype=bool)
        new_run[1:] = (rows_sorted[1:] != rows_sorted[:-1]) | (columns_sorted[1:] != columns_sorted[:-1])
        run_index = np.cumsum(new_run) - 1
        firsts = np.flatnonzero(new_run)
        run_row, run_column, run_width = rows_sorted[firsts], columns_sorted[firsts], width[pair[order[firsts]]]
        new_group = np.ones(len(firsts), dtype=bool)
        new_group[1:] = run_row[1:] != run_row[:-1]
        group_first = np.flatnonzero(new_group)
        group_of_run = np.cumsum(new_group) - 1
        run_end = np.cumsum(run_width)
        run_start = run_end - run_width - (run_end - run_width)[group_first][group_of_run]
        group_length = np.add.reduceat(run_width, group_first) if len(firsts) else np.zeros(0, np.int64)
        group_row, group_height = run_row[group_first], height[pair[order[firsts[group_first]]]]
        indptr, indices = _csr_structure(size, group_row, group_height, group_length, run_column, run_width,
                                         group_first)
        # tiles: each one's run start, and its rank among the tiles of the same run (pair order: a stable sort)
        tile_run = np.empty(len(order), dtype=np.int64)
        tile_run[order] = run_index
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order)) - firsts[run_index]
        source = (matrix.chunk_boundaries[pair] + s * height[pair] * (spin * width[pair]) + t * width[pair])
        layers = []
        for layer in range(int(rank.max(initial=-1)) + 1):
            layers.append([])
            in_layer = rank == layer
            shapes = np.unique(np.column_stack([height[pair], width[pair]])[in_layer], axis=0)
            for rows, cols in shapes:
                chosen = np.flatnonzero(in_layer & (height[pair] == rows) & (width[pair] == cols))
                layers[-1].append(_Tiles(int(rows), int(cols), pair[chosen], source[chosen], spin * int(cols),
                                         first_row[chosen], run_start[tile_run[chosen]]))
        return cls((size, size), indptr, indices, matrix.entries, layers, pairs[:, :3].copy())

    def with_entries(self, matrix: BlockMatrix) -> "BlockPattern":
        """The same layout for another block matrix of the same pairs and shapes (e.g. S beside H)."""
        return dataclasses.replace(self, entries=matrix.entries)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def shared_slots(self) -> bool:
        """Whether blocks of several R land on the same (i, j) and are summed."""
        return len(self.layers) > 1

    def phases(self, kpoint: np.ndarray) -> np.ndarray:
        """e^{2πi k·R} per atom pair; real (±1) at k-points where every k·R is a multiple of ½."""
        phase = np.exp(2j * np.pi * (self.cell_shifts @ np.asarray(kpoint, dtype=float)))
        return phase.real.copy() if np.allclose(phase.imag, 0.0, atol=1e-12) else phase

    def at_k(self, kpoint: np.ndarray) -> sp.csr_matrix:
        """X(k) as CSR; float64 when both the entries and the phases are real (e.g. at Γ), else complex128."""
        phase = self.phases(kpoint)
        data = np.empty(self.nnz, dtype=np.result_type(self.entries.dtype, phase.dtype))
        if phase.dtype.kind == "f" and np.all(phase == 1.0):  # Γ, or a folded matrix: no product to take
            phase = None
        for layer, groups in enumerate(self.layers):
            for tiles in groups:
                self._write(data, tiles, phase, add=layer > 0)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)

    def _write(self, data: np.ndarray, tiles: _Tiles, phase: np.ndarray | None, add: bool) -> None:
        """data[positions of the tiles] (+)= their entries × their pair's phase (None: 1), a chunk of tiles at a
        time."""
        rows, cols = np.arange(tiles.rows), np.arange(tiles.cols)
        step = max(1, CHUNK // max(1, tiles.rows * tiles.cols))
        contiguous = tiles.contiguous
        for start in range(0, len(tiles.pair), step):
            part = slice(start, start + step)
            if contiguous:
                first = tiles.source[start]
                count = len(tiles.source[part]) * tiles.rows * tiles.cols
                entries = self.entries[first : first + count].reshape(-1, tiles.rows, tiles.cols)
            else:
                entries = self.entries[tiles.source[part, None, None] + (rows * tiles.stride)[:, None] + cols]
            target = (self.indptr[tiles.first_row[part, None] + rows] + tiles.run_start[part, None])[:, :, None] + cols
            values = entries if phase is None else entries * phase[tiles.pair[part], None, None]
            if add:
                data[target] += values
            else:
                data[target] = values


def _csr_structure(size: int, group_row: np.ndarray, group_height: np.ndarray, group_length: np.ndarray,
                   run_column: np.ndarray, run_width: np.ndarray, group_first: np.ndarray) -> tuple[np.ndarray, ...]:
    """indptr and column indices: every row of a group (an atom and spin) holds the group's runs of columns."""
    row_length = np.zeros(size, dtype=np.int64)
    rows = np.repeat(group_row, group_height) + _ranges(group_height)
    row_length[rows] = np.repeat(group_length, group_height)
    indptr = np.concatenate([[0], np.cumsum(row_length)])
    index_dtype = _index_dtype(size, indptr[-1])
    # the columns of each group, runs expanded, one group after the other
    columns = (np.repeat(run_column, run_width) + _ranges(run_width)).astype(index_dtype)
    group_start = np.concatenate([[0], np.cumsum(group_length)])[:-1]
    row_group = np.full(size, -1, dtype=np.int64)
    row_group[rows] = np.repeat(np.arange(len(group_row)), group_height)
    indices = np.empty(indptr[-1], dtype=index_dtype)
    # rows in chunks of about CHUNK entries: the int64 gather index stays small
    cuts = np.unique(np.append(np.searchsorted(indptr, np.arange(0, indptr[-1], CHUNK)), size))
    for first, last in zip(np.append(0, cuts[:-1]), cuts):
        lengths = row_length[first:last]
        start = np.repeat(group_start[row_group[first:last]], lengths)
        indices[indptr[first] : indptr[last]] = columns[start + _ranges(lengths)]
    return indptr.astype(index_dtype), indices


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(n) for n in lengths]) without the Python loop."""
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)


class BlochOperators:
    """H(k) and S(k) of one structure as CSR; build once, then call :meth:`at_k` for every k-point."""

    def __init__(self, structure: DeepHStructure) -> None:
        if structure.hamiltonian is None or structure.overlap is None:
            raise ValueError("Bloch matrices need both the Hamiltonian and the overlap")
        offsets, norbitals = structure.orbital_offsets(), structure.norbitals
        hamiltonian, overlap = structure.hamiltonian, structure.overlap
        first = hamiltonian.atom_pairs[0]
        self.spinful = bool(hamiltonian.chunk_shapes[0, 0] == 2 * structure.orbitals_per_atom()[first[3]])
        self.hamiltonian = BlockPattern.build(hamiltonian, offsets, norbitals, self.spinful)
        if not self.spinful and _same_blocks(hamiltonian, overlap):  # the usual case: H predicted on S's pairs
            self.overlap = self.hamiltonian.with_entries(overlap)
        else:
            self.overlap = BlockPattern.build(overlap, offsets, norbitals, spinful=False)

    @property
    def size(self) -> int:
        return self.hamiltonian.shape[0]

    def at_k(self, kpoint: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(H(k), S(k)) in eV; S(k) is doubled to I₂ ⊗ S(k) for a spinful Hamiltonian. When H and S have the same
        pairs, the two matrices share their index arrays (and H − σS can reuse them)."""
        hk, sk = self.hamiltonian.at_k(kpoint), self.overlap.at_k(kpoint)
        if self.spinful:
            sk = sp.block_diag((sk, sk), format="csr")
        return hk, sk


def _same_blocks(first: BlockMatrix, second: BlockMatrix) -> bool:
    return (np.array_equal(first.atom_pairs, second.atom_pairs)
            and np.array_equal(first.chunk_shapes, second.chunk_shapes))

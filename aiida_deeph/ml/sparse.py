"""Bloch matrices H(k), S(k) as scipy CSR, assembled from a :class:`~aiida_deeph.io.BlockMatrix` without loops.

X(k) = Σ_R e^{2πi k·R} X(R) with k fractional. Every stored entry of the block matrix lands at a fixed (row, col)
of X(k) whatever k is; only its phase changes. :class:`BlockPattern` therefore sorts the entries into CSR order
once per structure (entries of different R that land on the same (row, col) become one CSR slot) and
:meth:`BlockPattern.at_k` is then a gather, a multiply and (if slots are shared) a segmented sum.

Spinful operators use the spin-major global layout: orbital o of spin s is row s·N + o (N = spinless orbital
count), matching the (2n_i, 2n_j) spin-major blocks. The overlap is stored spinless and is doubled as I₂ ⊗ S(k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..io.deeph_format import BlockMatrix, DeepHStructure

_CHUNK = 1 << 22  # entries per vectorised chunk: bounds the temporaries at a few tens of MB


def _index_dtype(*sizes: int) -> type[np.signedinteger]:
    return np.int32 if max(sizes, default=0) < np.iinfo(np.int32).max else np.int64


@dataclass(frozen=True, eq=False)
class BlockPattern:
    """The CSR layout of one block matrix, computed once; :meth:`at_k` fills in the phases."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray  # the block entries, permuted into CSR order
    pair: np.ndarray  # the atom-pair index of each value, to look up its phase
    slot_starts: np.ndarray | None  # first value of each CSR slot; None when no two values share a slot
    cell_shifts: np.ndarray  # (P, 3) R of each atom pair

    @classmethod
    def build(cls, matrix: BlockMatrix, offsets: np.ndarray, norbitals: int, spinful: bool) -> "BlockPattern":
        """``offsets``: first spinless orbital of each atom; ``spinful``: blocks are spin-major (2n_i, 2n_j)."""
        size = (2 if spinful else 1) * norbitals
        keys = _global_keys(matrix, np.asarray(offsets, dtype=np.int64), norbitals, spinful)
        order = np.argsort(keys)
        keys = keys[order]
        values = matrix.entries[order]
        # the pair of an entry is found from its position in the flat entries, i.e. from chunk_boundaries
        pair = (np.searchsorted(matrix.chunk_boundaries, order, side="right") - 1).astype(_index_dtype(len(matrix)))
        del order
        new_slot = np.empty(len(keys), dtype=bool)
        new_slot[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=new_slot[1:])
        slot_starts = np.flatnonzero(new_slot)
        del new_slot
        unique = keys[slot_starts]
        index_dtype = _index_dtype(size, len(unique))
        indices = (unique % size).astype(index_dtype)
        indptr = np.searchsorted(unique // size, np.arange(size + 1)).astype(index_dtype)
        shared = len(slot_starts) < len(keys)
        return cls((size, size), indptr, indices, values, pair, slot_starts if shared else None,
                   matrix.atom_pairs[:, :3].copy())

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def phases(self, kpoint: np.ndarray) -> np.ndarray:
        """e^{2πi k·R} per atom pair; real (±1) at k-points where every k·R is a multiple of ½."""
        phase = np.exp(2j * np.pi * (self.cell_shifts @ np.asarray(kpoint, dtype=float)))
        return phase.real.copy() if np.allclose(phase.imag, 0.0, atol=1e-12) else phase

    def at_k(self, kpoint: np.ndarray) -> sp.csr_matrix:
        """X(k) as CSR; float64 when both the entries and the phases are real (e.g. at Γ), else complex128."""
        phase = self.phases(kpoint)
        dtype = np.result_type(self.values.dtype, phase.dtype)
        data = np.empty(self.nnz, dtype=dtype)
        if self.slot_starts is None:
            for start in range(0, len(self.values), _CHUNK):
                stop = start + _CHUNK
                np.multiply(self.values[start:stop], phase[self.pair[start:stop]], out=data[start:stop])
        else:
            # chunks are cut at slot boundaries so that a segmented sum never spans two chunks
            cuts = np.searchsorted(self.slot_starts, np.arange(0, len(self.values), _CHUNK))
            cuts = np.unique(np.append(cuts, self.nnz))
            for first, last in zip(cuts[:-1], cuts[1:]):
                start = self.slot_starts[first]
                stop = self.slot_starts[last] if last < self.nnz else len(self.values)
                product = self.values[start:stop] * phase[self.pair[start:stop]]
                data[first:last] = np.add.reduceat(product, self.slot_starts[first:last] - start)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


def _global_keys(matrix: BlockMatrix, offsets: np.ndarray, norbitals: int, spinful: bool) -> np.ndarray:
    """row · size + col of every stored entry, in the order of ``matrix.entries``."""
    spin = 2 if spinful else 1
    size = spin * norbitals
    sizes = np.diff(matrix.chunk_boundaries)
    keys = np.empty(len(matrix.entries), dtype=np.int64)
    # chunk over atom pairs so that the per-entry temporaries stay small
    pair_cuts = np.unique(np.append(np.searchsorted(matrix.chunk_boundaries, np.arange(0, keys.size, _CHUNK)),
                                    len(matrix)))
    for first, last in zip(pair_cuts[:-1], pair_cuts[1:]):
        start, stop = matrix.chunk_boundaries[first], matrix.chunk_boundaries[last]
        count = sizes[first:last]
        local = np.arange(stop - start) - np.repeat(matrix.chunk_boundaries[first:last] - start, count)
        ncols = np.repeat(matrix.chunk_shapes[first:last, 1], count)
        a, b = np.divmod(local, ncols)
        del local
        i = np.repeat(matrix.atom_pairs[first:last, 3], count)
        j = np.repeat(matrix.atom_pairs[first:last, 4], count)
        row, col = offsets[i] + a, offsets[j] + b
        if spinful:  # spin-major block → spin-major global index
            n_i = np.repeat(matrix.chunk_shapes[first:last, 0] // 2, count)
            n_j = ncols // 2
            row += (a // n_i) * (norbitals - n_i)
            col += (b // n_j) * (norbitals - n_j)
        keys[start:stop] = row * size + col
    return keys


class BlochOperators:
    """H(k) and S(k) of one structure as CSR; build once, then call :meth:`at_k` for every k-point."""

    def __init__(self, structure: DeepHStructure) -> None:
        if structure.hamiltonian is None or structure.overlap is None:
            raise ValueError("Bloch matrices need both the Hamiltonian and the overlap")
        offsets, norbitals = structure.orbital_offsets(), structure.norbitals
        first = structure.hamiltonian.atom_pairs[0]
        self.spinful = bool(structure.hamiltonian.chunk_shapes[0, 0] == 2 * structure.orbitals_per_atom()[first[3]])
        self.hamiltonian = BlockPattern.build(structure.hamiltonian, offsets, norbitals, self.spinful)
        self.overlap = BlockPattern.build(structure.overlap, offsets, norbitals, spinful=False)

    @property
    def size(self) -> int:
        return self.hamiltonian.shape[0]

    def at_k(self, kpoint: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(H(k), S(k)) in eV; S(k) is doubled to I₂ ⊗ S(k) for a spinful Hamiltonian."""
        hk, sk = self.hamiltonian.at_k(kpoint), self.overlap.at_k(kpoint)
        if self.spinful:
            sk = sp.block_diag((sk, sk), format="csr")
        return hk, sk

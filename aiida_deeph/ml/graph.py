"""Crystal graphs for the Hamiltonian models, and the packing of H_ij(R) blocks per edge.

Nodes are atoms (species = index into :attr:`OrbitalBasis.elements`). Edges are the (i, j, R) atom pairs of the
DeepH ``atom_pairs`` (R in lattice vectors, on-site pairs (i, i, 0) included), with the vector
r_ij = pos_j + R·lattice − pos_i in Å, so that edge e carries the block ⟨φ_i,0|H|φ_j,R⟩. Every edge must have its
reverse (j, i, −R) in the graph (:attr:`CrystalGraph.reverse`); the heads use it to make H Hermitian exactly.

Packed blocks — the format of :attr:`CrystalGraph.target` and of every model's output — are a dense
(E, B, B) tensor, B = ``basis.block_size`` (largest atom, doubled with spin): edge e's (n_i, n_j) block (spin-major
(2 n_i, 2 n_j), complex, with spin) sits in the top-left corner, the rest is zero. :attr:`CrystalGraph.mask` marks the
entries that hold a target; a masked MSE is ``((pred − target).abs()² · mask).sum() / mask.sum()``.
:func:`unpack_blocks` turns packed predictions back into a :class:`~aiida_deeph.io.BlockMatrix`.

Edges come from the DFT pairs (training, or the overlap's pairs at inference as in DeepH) or, without DFT data,
from :func:`find_pairs`, a periodic neighbour search (a k-d tree over the atoms and their periodic images) within a
cutoff.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..io.deeph_format import BlockMatrix, DeepHStructure
from .basis import OrbitalBasis
from .wigner import edge_wigner


@dataclass
class CrystalGraph:
    """One structure (or a batch, see :func:`collate`) as tensors; float tensors follow :meth:`to`.

    Treat it as immutable once built (except for setting ``target``/``mask``): edge splits and Wigner-D matrices are
    cached on it."""

    species: torch.Tensor  # (N,) long, index into basis.elements
    positions: torch.Tensor  # (N, 3) Å
    edge_index: torch.Tensor  # (2, E) long: (i, j)
    cell_shift: torch.Tensor  # (E, 3) long: R
    edge_vec: torch.Tensor  # (E, 3) Å: pos_j + R·lattice − pos_i
    reverse: torch.Tensor  # (E,) long: index of the edge (j, i, −R)
    pair_type: torch.Tensor  # (E,) long: species_i · n_elements + species_j
    block_shape: torch.Tensor  # (E, 2) long: rows and columns of each edge's block
    target: torch.Tensor | None = None  # (E, B, B) packed blocks
    mask: torch.Tensor | None = None  # (E, B, B) bool: entries with a target
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        return len(self.species)

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def atom_pairs(self) -> np.ndarray:
        """(E, 5) int64 rows [Rx, Ry, Rz, i, j], the DeepH key of each edge."""
        return torch.cat([self.cell_shift, self.edge_index.T], 1).cpu().numpy()

    def _edge_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "split" not in self._cache:
            is_onsite = (self.edge_index[0] == self.edge_index[1]) & (self.cell_shift == 0).all(1)
            self._cache["split"] = torch.nonzero(is_onsite).squeeze(1), torch.nonzero(~is_onsite).squeeze(1)
        return self._cache["split"]

    @property
    def onsite(self) -> torch.Tensor:
        """Indices of the on-site edges (i, i, 0), which have no direction."""
        return self._edge_split()[0]

    @property
    def offsite(self) -> torch.Tensor:
        """Indices of the edges with a direction (everything but (i, i, 0))."""
        return self._edge_split()[1]

    def wigner(self, lmax: int) -> list[torch.Tensor]:
        """Edge-frame Wigner-D matrices of the off-site edges (:func:`~aiida_deeph.ml.wigner.edge_wigner`), l = 0..lmax.

        Built once per graph and kept: a training loop that revisits the same graph pays for them once."""
        key = ("wigner", lmax)
        if key not in self._cache:
            self._cache[key] = edge_wigner(self.edge_vec[self.offsite], lmax)
        return self._cache[key]

    def block_mask(self, size: int) -> torch.Tensor:
        """(E, size, size) bool: the top-left (rows, columns) of each edge, whether or not it has a target."""
        rows = torch.arange(size, device=self.block_shape.device)
        shape = self.block_shape[:, :, None, None]
        return (rows[None, :, None] < shape[:, 0]) & (rows[None, None, :] < shape[:, 1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CrystalGraph":
        """A copy on ``device`` with real floats in ``dtype`` (complex targets in the matching complex dtype)."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None:
                return None
            if dtype is not None and tensor.is_floating_point():
                return tensor.to(device=device, dtype=dtype)
            if dtype is not None and tensor.is_complex():
                return tensor.to(device=device, dtype=torch.promote_types(dtype, torch.complex64))
            return tensor.to(device=device)

        return replace(self, **{name: move(getattr(self, name)) for name in _TENSOR_FIELDS})


_TENSOR_FIELDS = ("species", "positions", "edge_index", "cell_shift", "edge_vec", "reverse", "pair_type",
                  "block_shape", "target", "mask")


def _match_rows(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of each row of ``rows`` in ``table`` (unique rows), −1 where absent; vectorised through sorted keys."""
    if len(table) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    keys = _row_keys(np.concatenate([rows, table]))
    if keys is None:  # the rows span too wide a range for one int64 key: compare them whole
        _, keys = np.unique(np.concatenate([rows, table]), axis=0, return_inverse=True)
        keys = keys.reshape(-1)
    row_keys, table_keys = keys[: len(rows)], keys[len(rows) :]
    order = np.argsort(table_keys)
    position = np.minimum(np.searchsorted(table_keys, row_keys, sorter=order), len(table) - 1)
    found = order[position]
    return np.where(table_keys[found] == row_keys, found, -1)


def _row_keys(rows: np.ndarray) -> np.ndarray | None:
    """One int64 per integer row, equal exactly for equal rows (mixed radix over the columns' ranges), or None when
    the ranges do not fit in 63 bits. Sorting int64 keys is ~10× faster than ``np.unique(axis=0)`` on 10⁶–10⁷ rows."""
    low = rows.min(axis=0)
    spans = rows.max(axis=0) - low + 1
    if np.prod(spans.astype(float)) >= 2.0**62:
        return None
    keys = np.zeros(len(rows), dtype=np.int64)
    for column, span in enumerate(spans):
        keys = keys * span + (rows[:, column] - low[column])
    return keys


def build_graph(
    basis: OrbitalBasis,
    species: Sequence[str],
    positions: np.ndarray,
    lattice: np.ndarray,
    atom_pairs: np.ndarray,
    hamiltonian: BlockMatrix | None = None,
) -> CrystalGraph:
    """Graph with one edge per row of ``atom_pairs`` (P, 5) = [Rx, Ry, Rz, i, j], in that order.

    ``hamiltonian`` gives the targets of the edges it holds (the others are masked out); its blocks must have the
    basis' shapes. Tensors are in torch's default float dtype.
    """
    atom_pairs = np.asarray(atom_pairs, dtype=np.int64).reshape(-1, 5)
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    lattice = np.asarray(lattice, dtype=float).reshape(3, 3)
    shifts, i, j = atom_pairs[:, :3], atom_pairs[:, 3], atom_pairs[:, 4]
    if len(atom_pairs) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= len(positions)):
        raise ValueError("atom_pairs refer to atoms that do not exist")
    reverse = _match_rows(np.column_stack([-shifts, j, i]), atom_pairs)
    if np.any(reverse < 0):
        missing = atom_pairs[np.flatnonzero(reverse < 0)[0]]
        raise ValueError(f"edge {missing.tolist()} has no reverse (j, i, -R): H_ij(R) = H_ji(-R)^T needs both")
    element = np.array([basis.element_index(s) for s in species], dtype=np.int64)
    spin = 2 if basis.spinful else 1
    orbitals = np.array([basis.num_orbitals(el) for el in basis.elements], dtype=np.int64)[element] * spin
    block_shape = np.column_stack([orbitals[i], orbitals[j]])
    dtype = torch.get_default_dtype()
    graph = CrystalGraph(
        species=torch.as_tensor(element),
        positions=torch.as_tensor(positions, dtype=dtype),
        edge_index=torch.as_tensor(np.stack([i, j])),
        cell_shift=torch.as_tensor(shifts),
        edge_vec=torch.as_tensor(positions[j] + shifts @ lattice - positions[i], dtype=dtype),
        reverse=torch.as_tensor(reverse),
        pair_type=torch.as_tensor(element[i] * basis.num_elements + element[j]),
        block_shape=torch.as_tensor(block_shape),
    )
    if hamiltonian is not None:
        graph.target, graph.mask = _pack_targets(graph, hamiltonian, basis.block_size)
    return graph


def _pack_targets(graph: CrystalGraph, matrix: BlockMatrix, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    found = _match_rows(graph.atom_pairs, matrix.atom_pairs)
    has = found >= 0
    expected = graph.block_shape.numpy()[has]
    if np.any(matrix.chunk_shapes[found[has]] != expected):
        bad = graph.atom_pairs[has][np.flatnonzero(np.any(matrix.chunk_shapes[found[has]] != expected, axis=1))[0]]
        raise ValueError(f"block {bad.tolist()} does not have the basis' shape {expected[0].tolist()}")
    # Boolean indexing walks (edge, row, column) in C order: the same order as the flattened entries.
    counts = np.prod(matrix.chunk_shapes[found[has]], axis=1)
    starts = np.repeat(matrix.chunk_boundaries[found[has]] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    entries = matrix.entries[starts + np.arange(counts.sum())]
    dtype = torch.get_default_dtype()
    if matrix.is_complex:
        dtype = torch.promote_types(dtype, torch.complex64)
    mask = graph.block_mask(size) & torch.as_tensor(has)[:, None, None]
    target = torch.zeros(mask.shape, dtype=dtype)
    target[mask] = torch.as_tensor(entries, dtype=dtype)
    return target, mask


def graph_from_structure(
    structure: DeepHStructure, basis: OrbitalBasis | None = None, cutoff: float | Mapping[str, float] | None = None
) -> CrystalGraph:
    """Graph of a :class:`~aiida_deeph.io.DeepHStructure`, targets from its Hamiltonian when it has one.

    Edges: a neighbour search (:func:`find_pairs`) when ``cutoff`` is given, else the Hamiltonian's pairs, else the
    overlap's (DeepH inference). ``basis`` defaults to the structure's own.
    """
    basis = basis or OrbitalBasis.from_structure(structure)
    if basis.spinful != structure.spinful:
        raise ValueError(f"the basis is {'spinful' if basis.spinful else 'spinless'} but the structure is not")
    if cutoff is not None:
        pairs = find_pairs(structure.lattice, structure.positions, cutoff, structure.species)
    elif structure.hamiltonian is not None:
        pairs = structure.hamiltonian.atom_pairs
    elif structure.overlap is not None:
        pairs = structure.overlap.atom_pairs
    else:
        raise ValueError("the structure has neither a Hamiltonian nor an overlap: give a cutoff to find its pairs")
    return build_graph(basis, structure.species, structure.positions, structure.lattice, pairs, structure.hamiltonian)


def find_pairs(
    lattice: np.ndarray,
    positions: np.ndarray,
    cutoff: float | Mapping[str, float],
    species: Sequence[str] | None = None,
    pbc: bool | Sequence[bool] = True,
) -> np.ndarray:
    """All (i, j, R) with |pos_j + R·lattice − pos_i| < cutoff, on-site pairs included, as (P, 5) [Rx, Ry, Rz, i, j]
    sorted like :meth:`BlockMatrix.from_blocks`. A mapping gives a radius per element and pairs within r_i + r_j
    (orbitals that overlap). A k-d tree of the atoms, wrapped into the cell, and of their images within reach:
    O(N log N), ~10× faster than ASE's cell list on 10⁴-atom twisted bilayers."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    lattice = np.asarray(lattice, dtype=float).reshape(3, 3)
    if isinstance(cutoff, Mapping):
        if species is None:
            raise ValueError("a per-element cutoff needs the species")
        radius = np.array([float(cutoff[s]) for s in species])
        reach = 2 * float(radius.max(initial=0.0))
    else:
        radius, reach = None, float(cutoff)
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    # wrap periodic coordinates into [0, 1): images then need |R_k| ≤ floor(reach · |column k of L⁻¹|) + 1 only
    inverse = np.linalg.inv(lattice)
    offset = np.where(periodic, np.floor(positions @ inverse), 0.0).astype(np.int64)
    wrapped = positions - offset @ lattice
    extent = np.where(periodic, np.floor(reach * np.linalg.norm(inverse, axis=0)) + 1, 0).astype(np.int64)
    images = np.stack(np.meshgrid(*[np.arange(-n, n + 1) for n in extent], indexing="ij"), -1).reshape(-1, 3)
    natoms = len(positions)
    copies = (wrapped[None, :, :] + (images @ lattice)[:, None, :]).reshape(-1, 3)
    # the tree's own distances only preselect (1e-9 slack); the cutoff is applied to the vectors computed below
    found = cKDTree(wrapped).sparse_distance_matrix(cKDTree(copies), reach * (1 + 1e-9) + 1e-9,
                                                    output_type="ndarray")
    i, j = found["i"], found["j"] % natoms
    shifts = images[found["j"] // natoms] + offset[i] - offset[j]
    del found
    distance = np.linalg.norm(positions[j] + shifts @ lattice - positions[i], axis=1)
    limit = reach if radius is None else radius[i] + radius[j]
    keep = (distance < limit) & ~((i == j) & ~shifts.any(axis=1))  # on-site pairs are added below, once each
    onsite = np.arange(natoms)
    pairs = np.column_stack([
        np.concatenate([shifts[keep], np.zeros((natoms, 3), dtype=np.int64)]),
        np.concatenate([i[keep], onsite]),
        np.concatenate([j[keep], onsite]),
    ]).astype(np.int64)
    return pairs[np.lexsort(pairs.T[::-1])]


def unpack_blocks(blocks: torch.Tensor, graph: CrystalGraph) -> BlockMatrix:
    """Packed (E, B, B) blocks (a model's output) → :class:`~aiida_deeph.io.BlockMatrix` with the graph's atom pairs."""
    shapes = graph.block_shape.cpu().numpy()
    entries = blocks.detach()[graph.block_mask(blocks.shape[1]).to(blocks.device)].cpu().numpy()
    boundaries = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])
    return BlockMatrix(graph.atom_pairs, shapes, boundaries, entries)


def collate(graphs: Sequence[CrystalGraph]) -> CrystalGraph:
    """One disconnected graph from several (a batch): atoms and edges concatenated, indices shifted."""
    node_offsets = np.cumsum([0] + [g.num_nodes for g in graphs[:-1]])
    edge_offsets = np.cumsum([0] + [g.num_edges for g in graphs[:-1]])
    with_targets = all(g.target is not None for g in graphs)

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(g, name) for g in graphs])

    return CrystalGraph(
        species=cat("species"),
        positions=cat("positions"),
        edge_index=torch.cat([g.edge_index + int(n) for g, n in zip(graphs, node_offsets)], 1),
        cell_shift=cat("cell_shift"),
        edge_vec=cat("edge_vec"),
        reverse=torch.cat([g.reverse + int(n) for g, n in zip(graphs, edge_offsets)]),
        pair_type=cat("pair_type"),
        block_shape=cat("block_shape"),
        target=cat("target") if with_targets else None,
        mask=cat("mask") if with_targets else None,
    )

"""Predict the Hamiltonian of a structure with a trained model, in bounded memory.

Edges are the overlap's ``atom_pairs`` when an overlap is given (DeepH's convention), else every pair within the
training data's longest pair of the same elements (``pair_cutoffs`` of the model's ``basis.json``).

No forward pass holds more than ``max_edges_per_chunk`` edges. DeepH-2 is evaluated block by block
(:func:`predict_layerwise`): each interaction block runs over groups of centre atoms with all their edges, so every
edge is computed once per block, whatever the model's reach; the edge features of the whole graph are kept between
blocks (E × (L+1)² × C floats). On the CPU the passes are smaller still (:data:`CPU_PASS_FEATURES`), which is
faster per edge as well as lighter. Other models (:func:`predict_receptive`) cut the graph into chunks of atoms by
recursive coordinate bisection; a pass predicts the edges its chunk owns from a subgraph that also holds their
receptive field — the atoms within ``num_blocks`` hops and every edge between them. That is exact too, but the
receptive field of a 10 Å, 3-block model spans ~40 Å, so on a 10⁴-atom bilayer every chunk is most of the cell.

Either way the predictions are those of a single pass over the whole graph, up to the order of floating-point
sums. An edge and its reverse always fall in the same head pass, so H_ij(R) = H_ji(−R)^T holds exactly. Only the
predicted entries of the whole structure are kept (never the padded blocks).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..io.deeph_format import BlockMatrix, DeepHStructure, parse_poscar
from .checkpoint import load_model, read_model_info
from .config import default_dtype
from .graph import CrystalGraph, build_graph, find_pairs
from .models import DeepH2

# Floats in one (edges, (L+1)², C) feature tensor of a CPU pass (10⁴ edges of the default SZV model). Passes of
# 4·10⁴–2·10⁵ edges ran 1.4–1.7× slower per edge on 2 cores, with 3–6× the page faults (each large temporary is a
# fresh mmap) and 3.6× the peak memory (benchmarks/bench_inference_scaling.py).
CPU_PASS_FEATURES = 3_000_000


class InferenceError(ValueError):
    """The structure, its overlap or the chunk size do not fit the model."""


@dataclass
class Chunk:
    """One forward pass: the edges it predicts and the subgraph (edges, atoms) it needs."""

    targets: np.ndarray  # edge indices owned by the chunk (each with its reverse)
    edges: np.ndarray  # edges of the subgraph: every edge between its atoms, ascending
    atoms: np.ndarray  # atoms of the subgraph, ascending


def plan_chunks(graph: CrystalGraph, hops: int, max_edges: int) -> list[Chunk]:
    """Split the graph into chunks of at most ``max_edges`` subgraph edges (see the module docstring)."""
    i, j = graph.edge_index.numpy()
    reverse = graph.reverse.numpy()
    num_atoms, num_edges = graph.num_nodes, graph.num_edges
    # the pair {e, reverse(e)} belongs to the centre atom of its lower-indexed edge
    owner = i[np.minimum(np.arange(num_edges), reverse)]
    adjacency = sp.csr_matrix((np.ones(num_edges, dtype=np.float32), (i, j)), shape=(num_atoms, num_atoms))
    positions = graph.positions.numpy()

    def chunk(atoms: np.ndarray) -> Chunk:
        in_chunk = np.zeros(num_atoms, dtype=bool)
        in_chunk[atoms] = True
        targets = np.flatnonzero(in_chunk[owner])
        inside = np.zeros(num_atoms, dtype=bool)
        inside[i[targets]] = inside[j[targets]] = True
        for _ in range(hops):
            inside |= adjacency @ inside.astype(np.float32) > 0
        return Chunk(targets, np.flatnonzero(inside[i] & inside[j]), np.flatnonzero(inside))

    def split(atoms: np.ndarray) -> list[Chunk]:
        candidate = chunk(atoms)
        if len(candidate.edges) <= max_edges:
            return [candidate]
        if len(atoms) == 1:
            raise InferenceError(f"the receptive field of one atom has {len(candidate.edges)} edges: "
                             f"max_edges_per_chunk = {max_edges} is too small")
        coordinates = positions[atoms]
        axis = int(np.argmax(np.ptp(coordinates, axis=0)))
        order = atoms[np.argsort(coordinates[:, axis], kind="stable")]
        half = len(order) // 2
        return split(np.sort(order[:half])) + split(np.sort(order[half:]))

    return [c for c in split(np.arange(num_atoms)) if len(c.targets)]


def subgraph(graph: CrystalGraph, chunk: Chunk) -> CrystalGraph:
    """The chunk's edges and atoms as a graph of their own (indices renumbered, reverse edges kept)."""
    atom_index = np.full(graph.num_nodes, -1)
    atom_index[chunk.atoms] = np.arange(len(chunk.atoms))
    edge_index = np.full(graph.num_edges, -1)
    edge_index[chunk.edges] = np.arange(len(chunk.edges))
    edges = torch.as_tensor(chunk.edges)
    return CrystalGraph(
        species=graph.species[chunk.atoms],
        positions=graph.positions[chunk.atoms],
        edge_index=torch.as_tensor(atom_index[graph.edge_index[:, edges].numpy()]),
        cell_shift=graph.cell_shift[edges],
        edge_vec=graph.edge_vec[edges],
        reverse=torch.as_tensor(edge_index[graph.reverse[edges].numpy()]),
        pair_type=graph.pair_type[edges],
        block_shape=graph.block_shape[edges],
    )


class _Entries:
    """The flat entries of every edge's block (row-major, edge after edge), filled pass by pass."""

    def __init__(self, graph: CrystalGraph, spinful: bool) -> None:
        self.graph = graph
        self.shapes = graph.block_shape.numpy()
        self.sizes = np.prod(self.shapes, axis=1)
        self.boundaries = np.concatenate([[0], np.cumsum(self.sizes)])
        self.values = np.zeros(self.boundaries[-1], dtype=np.complex128 if spinful else np.float64)

    def store(self, edges: np.ndarray, blocks: torch.Tensor, part: CrystalGraph, rows: torch.Tensor) -> None:
        """The padded ``blocks[rows]`` of ``part`` are the blocks of the global ``edges``."""
        values = blocks[rows][part.block_mask(blocks.shape[1]).to(blocks.device)[rows]].cpu().numpy()
        counts = self.sizes[edges]
        starts = np.repeat(self.boundaries[edges] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        self.values[starts + np.arange(counts.sum())] = values

    def matrix(self) -> BlockMatrix:
        return BlockMatrix(self.graph.atom_pairs, self.shapes, self.boundaries, self.values)


@torch.no_grad()
def predict(model: nn.Module, graph: CrystalGraph, max_edges_per_chunk: int) -> BlockMatrix:
    """H blocks of every edge of ``graph`` (on the CPU), computed chunk by chunk on the model's device."""
    if isinstance(model, DeepH2):
        return predict_layerwise(model, graph, max_edges_per_chunk)
    return predict_receptive(model, graph, max_edges_per_chunk)


@torch.no_grad()
def predict_receptive(model: nn.Module, graph: CrystalGraph, max_edges_per_chunk: int) -> BlockMatrix:
    """Any model: whole forward passes over chunks with their receptive field (see the module docstring)."""
    parameter = next(model.parameters())
    entries = _Entries(graph, model.basis.spinful)
    for chunk in plan_chunks(graph, model.config["num_blocks"], max_edges_per_chunk):
        part = subgraph(graph, chunk)
        blocks = model(part.to(parameter.device, parameter.dtype))
        local = np.full(graph.num_edges, -1)
        local[chunk.edges] = np.arange(len(chunk.edges))
        entries.store(chunk.targets, blocks, part, torch.as_tensor(local[chunk.targets], device=blocks.device))
    return entries.matrix()


def _consecutive_groups(weights: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Ranges [start, stop) of consecutive items whose weights sum to at most ``limit`` each, greedily."""
    total = np.cumsum(weights)
    groups, start = [], 0
    while start < len(weights):
        before = total[start - 1] if start else 0
        stop = int(np.searchsorted(total, before + limit, side="right"))
        if stop == start:
            raise InferenceError(f"atom {start} alone has {weights[start]} edges: max_edges_per_chunk = {limit} is "
                                 "too small")
        groups.append((start, stop))
        start = stop
    return groups


def _edges_by_atom(atom_of_edge: np.ndarray, num_atoms: int, limit: int, preferred: int) -> list[np.ndarray]:
    """The edges (ascending) of consecutive groups of atoms: about ``preferred`` edges per group (never fewer than one
    atom's), at most ``limit``."""
    order = np.argsort(atom_of_edge, kind="stable")
    counts = np.bincount(atom_of_edge, minlength=num_atoms)
    pointer = np.concatenate([[0], np.cumsum(counts)])
    size = min(limit, max(preferred, int(counts.max(initial=0))))  # the limit alone raises when one atom exceeds it
    return [np.sort(order[pointer[a] : pointer[b]]) for a, b in _consecutive_groups(counts, size)]


def _preferred_pass(model: DeepH2, device: torch.device, max_edges: int) -> int:
    """Edges per pass: the whole budget on a GPU; on the CPU about :data:`CPU_PASS_FEATURES` floats per edge tensor."""
    if device.type != "cpu":
        return max_edges
    return min(max_edges, max(1, CPU_PASS_FEATURES // ((model.lmax + 1) ** 2 * model.channels)))


@dataclass
class _CentrePass:
    """One pass of a DeepH-2 block: centre atoms with every edge they receive messages from."""

    edges: torch.Tensor  # global edges whose centre atom i is in the group
    atoms: torch.Tensor  # global atoms of the subgraph: the centres and their neighbours
    centres: torch.Tensor  # global centre atoms
    centre_rows: torch.Tensor  # their rows in the subgraph
    graph: CrystalGraph  # on the model's device and dtype; keeps its Wigner-D matrices across blocks


def _centre_pass(graph: CrystalGraph, edges: np.ndarray, device: torch.device, dtype: torch.dtype) -> _CentrePass:
    i, j = graph.edge_index[:, torch.as_tensor(edges)].numpy()
    atoms = np.union1d(i, j)
    centres = np.unique(i)
    part = subgraph(graph, Chunk(edges, edges, atoms)).to(device, dtype)
    return _CentrePass(torch.as_tensor(edges), torch.as_tensor(atoms), torch.as_tensor(centres),
                       torch.as_tensor(np.searchsorted(atoms, centres), device=device), part)


@torch.no_grad()
def predict_layerwise(model: DeepH2, graph: CrystalGraph, max_edges_per_chunk: int) -> BlockMatrix:
    """DeepH-2, one block at a time over groups of centre atoms (see the module docstring).

    A block updates atom i from the edges (i, j, R) and those edges from x_i, x_j: a pass over the edges of some
    centre atoms (and their neighbours' features) gives exactly their new features. Edge features of the whole graph
    stay on the CPU between blocks; the head then runs over groups of edges closed under reversal.
    """
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    centre = graph.edge_index[0].numpy()
    preferred = _preferred_pass(model, device, max_edges_per_chunk)
    passes = [_centre_pass(graph, edges, device, dtype)
              for edges in _edges_by_atom(centre, graph.num_nodes, max_edges_per_chunk, preferred)]
    x_all = e_all = None
    for p in passes:
        x, e = model.embed(p.graph)
        if e_all is None:
            x_all = torch.empty((graph.num_nodes, *x.shape[1:]), dtype=x.dtype)
            e_all = torch.empty((graph.num_edges, *e.shape[1:]), dtype=e.dtype)
        x_all[p.atoms], e_all[p.edges] = x.cpu(), e.cpu()
    for block in model.blocks:
        x_next = x_all.clone()  # the block's input stays intact until every group has read it
        for p in passes:
            x, e = block(x_all[p.atoms].to(device), e_all[p.edges].to(device), model.geometry(p.graph))
            x_next[p.centres], e_all[p.edges] = x[p.centre_rows].cpu(), e.cpu()
        x_all = x_next
    del passes
    entries = _Entries(graph, model.basis.spinful)
    reverse = graph.reverse.numpy()
    owner = centre[np.minimum(np.arange(graph.num_edges), reverse)]  # the pair {e, reverse(e)} goes together
    for edges in _edges_by_atom(owner, graph.num_nodes, max_edges_per_chunk, preferred):
        i, j = graph.edge_index[:, torch.as_tensor(edges)].numpy()
        part = subgraph(graph, Chunk(edges, edges, np.union1d(i, j))).to(device, dtype)
        features = e_all[torch.as_tensor(edges)].to(device)
        blocks = model.edge_blocks(features, part)
        entries.store(edges, blocks, part, torch.arange(len(edges), device=blocks.device))
    return entries.matrix()


def neighbour_pairs(lattice: np.ndarray, positions: np.ndarray, species: list[str],
                    pair_cutoffs: dict[str, float]) -> np.ndarray:
    """Pairs within the longest training pair of the same two elements (``pair_cutoffs["A-B"]``, plus 1e-6 Å)."""
    pairs = find_pairs(lattice, positions, max(pair_cutoffs.values()) + 1e-6)
    i, j = pairs[:, 3], pairs[:, 4]
    elements, codes = np.unique(species, return_inverse=True)
    table = np.array([[pair_cutoffs.get(f"{a}-{b}", np.nan) for b in elements] for a in elements])
    cutoff = table[codes[i], codes[j]]
    unknown = np.isnan(cutoff)
    if unknown.any():
        names = sorted({f"{species[a]}-{species[b]}" for a, b in zip(i[unknown], j[unknown])})
        raise InferenceError(f"the model was not trained on {', '.join(names)} pairs")
    lengths = np.linalg.norm(positions[j] + pairs[:, :3] @ lattice - positions[i], axis=1)
    return pairs[lengths <= cutoff + 1e-6]


def infer(model_dir: str | os.PathLike, structure: str | os.PathLike, output_dir: str | os.PathLike,
          overlap_dir: str | os.PathLike | None = None, max_edges_per_chunk: int = 200_000,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    """Predict H for the POSCAR ``structure`` and write a DeepH folder to ``output_dir`` (see the module docstring).

    The folder holds ``hamiltonian.h5``, ``POSCAR``, ``info.json`` (the model's basis for these elements; Fermi
    level and electron count from the overlap folder's ``info.json`` when it has them) and ``overlap.h5`` when given.
    """
    _, basis, pair_cutoffs = read_model_info(model_dir)
    model = load_model(model_dir, device, dtype)
    lattice, species, positions = parse_poscar(Path(structure).read_text())
    info: dict = {}
    overlap = None
    if overlap_dir is not None:
        overlap = BlockMatrix.read(Path(overlap_dir) / "overlap.h5")
        if (Path(overlap_dir) / "info.json").is_file():
            info = json.loads((Path(overlap_dir) / "info.json").read_text())
        pairs = overlap.atom_pairs
    else:
        pairs = neighbour_pairs(lattice, positions, species, pair_cutoffs)
    with default_dtype(torch.float64):  # exact geometry; each chunk is cast to the model's dtype
        graph = build_graph(basis, species, positions, lattice, pairs)
    if overlap is not None and np.any(overlap.chunk_shapes != graph.block_shape.numpy() // (2 if basis.spinful else 1)):
        raise InferenceError(f"{overlap_dir}: the overlap's blocks do not have the shapes of the model's basis {basis}")
    result = DeepHStructure(
        lattice=lattice,
        species=species,
        positions=positions,
        elements_orbital_map={el: list(basis.shells[el]) for el in dict.fromkeys(species)},
        fermi_energy_eV=float(info.get("fermi_energy_eV", 0.0)),
        spinful=basis.spinful,
        hamiltonian=predict(model, graph, max_edges_per_chunk),
        overlap=overlap,
        occupation=info.get("occupation"),
        extra_info={"hamiltonian_source": "aiida-deeph prediction", "model": model.config["model"]},
    )
    return result.write(output_dir)

"""Predict the Hamiltonian of a structure with a trained model, in bounded memory.

Edges are the overlap's ``atom_pairs`` when an overlap is given (DeepH's convention), else every pair within the
training data's longest pair of the same elements (``pair_cutoffs`` of the model's ``basis.json``).

The graph is cut into chunks of atoms by recursive coordinate bisection until each forward pass has at most
``max_edges_per_chunk`` edges. A pass predicts the edges its chunk owns from a subgraph that also holds their
receptive field — the atoms within ``num_blocks`` hops and every edge between them — so its predictions are those of
a single pass over the whole graph, up to the order of floating-point sums. An edge and its reverse always fall
in the same pass, so H_ij(R) = H_ji(−R)^T holds exactly. Only the predicted entries of the whole structure are
kept (never the padded blocks), which is what lets the same code serve large structures.
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


@torch.no_grad()
def predict(model: nn.Module, graph: CrystalGraph, max_edges_per_chunk: int) -> BlockMatrix:
    """H blocks of every edge of ``graph`` (on the CPU), computed chunk by chunk on the model's device."""
    parameter = next(model.parameters())
    shapes = graph.block_shape.numpy()
    sizes = np.prod(shapes, axis=1)
    boundaries = np.concatenate([[0], np.cumsum(sizes)])
    entries = np.zeros(boundaries[-1], dtype=np.complex128 if model.basis.spinful else np.float64)
    for chunk in plan_chunks(graph, model.config["num_blocks"], max_edges_per_chunk):
        part = subgraph(graph, chunk)
        blocks = model(part.to(parameter.device, parameter.dtype))
        local = np.full(graph.num_edges, -1)
        local[chunk.edges] = np.arange(len(chunk.edges))
        owned = torch.as_tensor(local[chunk.targets], device=blocks.device)
        values = blocks[owned][part.block_mask(blocks.shape[1]).to(blocks.device)[owned]].cpu().numpy()
        # each owned block, row-major, goes to its own slice of the entries
        counts = sizes[chunk.targets]
        starts = np.repeat(boundaries[chunk.targets] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        entries[starts + np.arange(counts.sum())] = values
    return BlockMatrix(graph.atom_pairs, shapes, boundaries, entries)


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

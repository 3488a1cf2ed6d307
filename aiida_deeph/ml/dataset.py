"""Datasets: many DFT structures preprocessed into one folder of cached graphs, and batches by an edge budget.

A dataset folder (written by :func:`preprocess`)::

    dataset.json     format, the union basis (elements_orbital_map, spinful), pair_cutoffs (Å, the longest
                     pair of each element pair), one record per structure (name, source, atoms, edges, targets,
                     file, sha256), total edges, split sizes and a sha256 checksum of all of it
    split.json       seed, fractions and the train / val / test structure indices (seeded shuffle)
    graphs/NNNNNN.pt one structure as a dict of plain tensors (loadable with weights_only=True): atomic numbers,
                     positions, lattice, edges, R, reverse edges, block shapes and the H entries of the masked
                     blocks in float64 / complex128, so that the blocks round-trip exactly

Graph files are independent of the union basis (atoms carry atomic numbers, not basis indices), so structures
are converted in parallel before the union is known. :class:`GraphDataset` checks every digest when it loads.

Batches (:func:`edge_batches`) pack the shuffled structures of a split greedily up to ``edges_per_batch`` edges
(a larger structure goes alone); they do not depend on the number of processes. With torchrun every rank takes
its share of each batch (:func:`shard`), so one optimiser step sees the same structures whatever the world size.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from ..io.atomic_write import atomic_path, write_text
from ..io.deeph_format import DeepHStructure
from .basis import OrbitalBasis
from .checkpoint import CorruptedFileError, basis_from_dict, basis_to_dict, content_digest
from .config import default_dtype
from .graph import CrystalGraph, collate, graph_from_structure

FORMAT = 1


class DatasetError(ValueError):
    """A dataset folder is missing, inconsistent or corrupted, or its sources cannot be combined."""


# --- sources ---------------------------------------------------------------------------------------------------------
def _kind(path: Path) -> str | None:
    if path.is_file() and path.suffix == ".scfout":
        return "openmx"
    if not path.is_dir():
        return None
    if (path / "POSCAR").is_file() and (path / "info.json").is_file():
        return "deeph"
    if any(path.glob("*.scfout")):
        return "openmx"
    if (path / "INPUT").is_file() and (path / "STRU").is_file():
        return "abacus"
    return None


def find_sources(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Each path is a structure (DeepH folder, OpenMX folder or ``.scfout``, ABACUS folder) or a folder of them."""
    found: list[Path] = []
    for path in map(Path, paths):
        if _kind(path):
            found.append(path)
        elif path.is_dir():
            children = [child for child in sorted(path.iterdir()) if _kind(child)]
            if not children:
                raise DatasetError(f"{path}: neither a DeepH/OpenMX/ABACUS structure nor a folder of them")
            found.extend(children)
        else:
            raise DatasetError(f"{path}: no such structure")
    return found


def read_structure(path: str | os.PathLike) -> DeepHStructure:
    """A structure in the DeepH format, converted from OpenMX or ABACUS outputs when needed."""
    path = Path(path)
    kind = _kind(path)
    if kind == "deeph":
        return DeepHStructure.read(path)
    if kind == "openmx":
        from ..io.openmx import openmx_to_deeph

        return openmx_to_deeph(path)
    if kind == "abacus":
        from ..io.abacus import abacus_to_deeph

        return abacus_to_deeph(path)
    raise DatasetError(f"{path}: not a DeepH, OpenMX or ABACUS structure")


# --- graph records -----------------------------------------------------------------------------------------------------
def graph_record(structure: DeepHStructure) -> dict[str, torch.Tensor]:
    """The cached form of a structure's graph (edges = its Hamiltonian's pairs), exact float64 targets."""
    if structure.hamiltonian is None:
        raise DatasetError("a training structure needs its Hamiltonian")
    with default_dtype(torch.float64):
        graph = graph_from_structure(structure, OrbitalBasis.from_structure(structure))
    return {
        "numbers": torch.tensor([atomic_numbers[s] for s in structure.species]),
        "positions": graph.positions,
        "lattice": torch.as_tensor(structure.lattice),
        "edge_index": graph.edge_index,
        "cell_shift": graph.cell_shift,
        "edge_vec": graph.edge_vec,
        "reverse": graph.reverse,
        "block_shape": graph.block_shape,
        "has_target": graph.mask.flatten(1).any(1),
        "entries": graph.target[graph.mask],  # C order: edge, row, column, as the DeepH entries
    }


def graph_from_record(record: Mapping[str, torch.Tensor], basis: OrbitalBasis, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> CrystalGraph:
    """Inverse of :func:`graph_record` in the union ``basis``: species and pair types are basis indices."""
    index = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
    index[[atomic_numbers[element] for element in basis.elements]] = torch.arange(basis.num_elements)
    species = index[record["numbers"]]
    if (species < 0).any():
        missing = sorted({chemical_symbols[z] for z in record["numbers"][species < 0].tolist()})
        raise DatasetError(f"element(s) {', '.join(missing)} not in the basis {basis}")
    i, j = record["edge_index"]
    graph = CrystalGraph(
        species=species,
        positions=record["positions"],
        edge_index=record["edge_index"],
        cell_shift=record["cell_shift"],
        edge_vec=record["edge_vec"],
        reverse=record["reverse"],
        pair_type=species[i] * basis.num_elements + species[j],
        block_shape=record["block_shape"],
    )
    graph.mask = graph.block_mask(basis.block_size) & record["has_target"][:, None, None]
    graph.target = torch.zeros(graph.mask.shape, dtype=record["entries"].dtype)
    graph.target[graph.mask] = record["entries"]
    return graph.to(device, dtype)


def _pair_lengths(record: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Longest edge of each element pair, keyed ``"A-B"``."""
    numbers, codes = np.unique(record["numbers"].numpy(), return_inverse=True)
    i, j = record["edge_index"].numpy()
    longest = np.full((len(numbers), len(numbers)), -1.0)  # on-site pairs give 0.0: the pair type is known
    np.maximum.at(longest, (codes[i], codes[j]), record["edge_vec"].norm(dim=1).numpy())
    return {f"{chemical_symbols[a]}-{chemical_symbols[b]}": float(longest[m, n])
            for m, a in enumerate(numbers) for n, b in enumerate(numbers) if longest[m, n] >= 0}


def _convert(job: tuple[int, str, str]) -> dict[str, Any]:
    """One structure → its graph file; returns its dataset.json record (runs in a worker process)."""
    index, source, out_dir = job
    structure = read_structure(source)
    record = graph_record(structure)
    file = f"graphs/{index:06d}.pt"
    with atomic_path(Path(out_dir) / file) as tmp:
        torch.save(record, tmp)
    return {
        "source": source,
        "file": file,
        "atoms": structure.natoms,
        "edges": int(record["edge_index"].shape[1]),
        "targets": int(record["entries"].numel()),
        "sha256": content_digest(record),
        "elements_orbital_map": {el: list(structure.elements_orbital_map[el]) for el in structure.elements},
        "spinful": structure.spinful,
        "pair_lengths": _pair_lengths(record),
    }


def union_basis(records: Sequence[Mapping[str, Any]]) -> OrbitalBasis:
    """One basis for all structures, elements by atomic number; an element's shells must agree everywhere."""
    shells: dict[str, list[int]] = {}
    for record in records:
        for element, ls in record["elements_orbital_map"].items():
            if shells.setdefault(element, ls) != ls:
                raise DatasetError(f"{record['source']}: element {element} has shells {ls}, elsewhere {shells[element]}")
    if len({record["spinful"] for record in records}) > 1:
        raise DatasetError("spinful and spinless structures cannot share a dataset")
    ordered = dict(sorted(shells.items(), key=lambda item: atomic_numbers[item[0]]))
    return OrbitalBasis(ordered, spinful=records[0]["spinful"])


# --- split -------------------------------------------------------------------------------------------------------------
def make_split(count: int, fractions: Sequence[float], seed: int) -> dict[str, Any]:
    """Seeded shuffle of ``range(count)`` cut into train / val / test by ``fractions`` (summing to 1)."""
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must be three non-negative numbers summing to 1, not {fractions}")
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val, n_test = round(fractions[1] * count), round(fractions[2] * count)
    n_train = count - n_val - n_test
    return {"seed": seed, "fractions": fractions, "train": sorted(order[:n_train]),
            "val": sorted(order[n_train:n_train + n_val]), "test": sorted(order[n_train + n_val:])}


def _checksum(meta: Mapping[str, Any], split: Mapping[str, Any]) -> str:
    text = json.dumps({"meta": {k: v for k, v in meta.items() if k != "checksum"}, "split": split}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def preprocess(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
               fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, workers: int = 1) -> Path:
    """Convert ``sources`` (see :func:`find_sources`) into one dataset folder; returns it."""
    out_dir = Path(out_dir)
    paths = find_sources(sources)
    if not paths:
        raise DatasetError("no structures given")
    jobs = [(n, str(path), str(out_dir)) for n, path in enumerate(paths)]  # as given: reruns hash alike
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            records = list(pool.map(_convert, jobs))
    else:
        records = [_convert(job) for job in jobs]
    basis = union_basis(records)
    names = [path.name for path in paths]
    if len(set(names)) < len(names):  # fall back to full paths when folder names repeat
        names = [record["source"] for record in records]
    cutoffs: dict[str, float] = {}
    for record in records:
        for key, length in record.pop("pair_lengths").items():
            cutoffs[key] = max(cutoffs.get(key, 0.0), length)
        del record["elements_orbital_map"], record["spinful"]
    split = make_split(len(records), fractions, seed)
    meta = {
        "format": FORMAT,
        "basis": basis_to_dict(basis),
        "pair_cutoffs": dict(sorted(cutoffs.items())),
        "structures": [{"name": name, **record} for name, record in zip(names, records)],
        "num_edges": sum(record["edges"] for record in records),
        "split": {name: len(split[name]) for name in ("train", "val", "test")},
    }
    meta["checksum"] = _checksum(meta, split)
    write_text(out_dir / "split.json", json.dumps(split, indent=1))
    write_text(out_dir / "dataset.json", json.dumps(meta, indent=1))  # last: its presence marks a finished dataset
    return out_dir


# --- loading and batching ----------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """One optimiser step: this rank's part of it, and the size of the whole."""

    indices: list[int]  # this rank's structures
    graph: CrystalGraph | None  # their graphs collated; None when this rank got nothing
    num_targets: int  # masked H entries of the whole batch (all ranks): the loss normaliser
    num_structures: int  # of the whole batch


class GraphDataset:
    """A preprocessed dataset folder; graphs are loaded on first use (digest checked) and kept in memory."""

    def __init__(self, directory: str | os.PathLike, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        self.directory = Path(directory)
        try:
            self.meta = json.loads((self.directory / "dataset.json").read_text(encoding="utf-8"))
            self.splits = json.loads((self.directory / "split.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: invalid JSON or UTF-8
            raise DatasetError(f"{self.directory}: not a dataset folder (run preprocess first): {exc}") from exc
        if not isinstance(self.meta, dict) or not isinstance(self.splits, dict):
            raise DatasetError(f"{self.directory}: dataset.json and split.json must each hold a JSON object")
        if self.meta.get("format") != FORMAT:
            raise DatasetError(f"{self.directory}: dataset format {self.meta.get('format')}, expected {FORMAT}")
        if _checksum(self.meta, self.splits) != self.meta.get("checksum"):
            raise CorruptedFileError(f"{self.directory}: dataset.json or split.json was modified (checksum mismatch)")
        self.basis = basis_from_dict(self.meta["basis"])
        self.pair_cutoffs: dict[str, float] = self.meta["pair_cutoffs"]
        self.structures: list[dict[str, Any]] = self.meta["structures"]
        self.dtype, self.device = dtype, torch.device(device)
        self._graphs: dict[int, CrystalGraph] = {}

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> CrystalGraph:
        if index not in self._graphs:
            info = self.structures[index]
            path = self.directory / info["file"]
            try:
                record = torch.load(path, weights_only=True)
            except Exception as exc:
                raise CorruptedFileError(f"{path}: unreadable graph ({type(exc).__name__}: {exc})") from exc
            if content_digest(record) != info["sha256"]:
                raise CorruptedFileError(f"{path}: content does not match its sha256 in dataset.json (corrupted)")
            self._graphs[index] = graph_from_record(record, self.basis, self.dtype, self.device)
        return self._graphs[index]

    def split(self, name: str) -> list[int]:
        return list(self.splits[name])

    def num_edges(self, index: int) -> int:
        return self.structures[index]["edges"]

    def batches(self, indices: Sequence[int], edges_per_batch: int, epoch: int | None = None, seed: int = 0,
                rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """This rank's part of each batch; shuffled by (seed, epoch) unless ``epoch`` is None."""
        sizes = {i: self.num_edges(i) for i in indices}
        for batch in edge_batches(indices, sizes, edges_per_batch, None if epoch is None else (seed, epoch)):
            mine = shard(batch, sizes, rank, world_size)
            # a lone graph is used as is, so the Wigner matrices it caches survive from one epoch to the next
            graphs = [self[i] for i in mine]
            graph = None if not graphs else graphs[0] if len(graphs) == 1 else collate(graphs)
            yield Batch(mine, graph, sum(self.structures[i]["targets"] for i in batch), len(batch))


def edge_batches(indices: Sequence[int], sizes: Mapping[int, int], budget: int,
                 shuffle: tuple[int, int] | None = None) -> list[list[int]]:
    """Greedy packing of ``indices`` (shuffled with the seed sequence ``shuffle``) into batches of ≤ ``budget``
    edges; a structure larger than the budget forms a batch of its own."""
    order = list(indices)
    if shuffle is not None:
        order = [order[n] for n in np.random.default_rng(list(shuffle)).permutation(len(order))]
    batches: list[list[int]] = []
    total = 0
    for index in order:
        if batches and total + sizes[index] <= budget:
            batches[-1].append(index)
            total += sizes[index]
        else:
            batches.append([index])
            total = sizes[index]
    return batches


def shard(batch: Sequence[int], sizes: Mapping[int, int], rank: int, world_size: int) -> list[int]:
    """This rank's structures of ``batch``: largest first to the least loaded rank, then in batch order."""
    loads = [0] * world_size
    owner = {}
    for index in sorted(batch, key=lambda i: -sizes[i]):  # stable: ties keep batch order
        target = loads.index(min(loads))
        owner[index] = target
        loads[target] += sizes[index]
    return [index for index in batch if owner[index] == rank]

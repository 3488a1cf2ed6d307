"""Preprocessing DFT structures into one dataset folder, exact round trips, integrity checks, batching."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aiida_deeph.io import BlockMatrix, DeepHStructure
from aiida_deeph.ml.checkpoint import CorruptedFileError
from aiida_deeph.ml.dataset import DatasetError, GraphDataset, edge_batches, make_split, preprocess, shard
from aiida_deeph.ml.graph import unpack_blocks

MOS2 = Path("abacus/MoS2_v3.10_deeph_dock")


def perturbed(structure: DeepHStructure, seed: int) -> DeepHStructure:
    """Positions moved by ~0.02 Å and every block changed by ~1 meV, keeping H_ij(R) = H_ji(−R)^T."""
    rng = np.random.default_rng(seed)
    noise = {key: rng.normal(size=block.shape) for key, block in structure.hamiltonian.items()}
    blocks = {}
    for (rx, ry, rz, i, j), block in structure.hamiltonian.items():
        partner = noise[(-rx, -ry, -rz, j, i)].T
        blocks[(rx, ry, rz, i, j)] = block + 1e-3 * (noise[(rx, ry, rz, i, j)] + partner) / 2
    return DeepHStructure(
        lattice=structure.lattice,
        species=structure.species,
        positions=structure.positions + rng.normal(scale=0.02, size=structure.positions.shape),
        elements_orbital_map=structure.elements_orbital_map,
        fermi_energy_eV=structure.fermi_energy_eV,
        hamiltonian=BlockMatrix.from_blocks(blocks),
        overlap=structure.overlap,
    )


@pytest.fixture(scope="module")
def sources(dft_fixtures, tmp_path_factory) -> list[Path]:
    """The real MoS2 reference and three perturbed copies, each a DeepH folder."""
    root = tmp_path_factory.mktemp("mos2_sources")
    reference = dft_fixtures / MOS2 / "deeph_ref"
    structure = DeepHStructure.read(reference)
    return [reference] + [perturbed(structure, seed).write(root / f"copy_{seed}") for seed in range(3)]


@pytest.fixture(scope="module")
def dataset_dir(sources, tmp_path_factory) -> Path:
    return preprocess(sources, tmp_path_factory.mktemp("mos2") / "dataset", fractions=(0.5, 0.25, 0.25), seed=3)


def test_graphs_round_trip_to_the_exact_blocks(sources, dataset_dir):
    dataset = GraphDataset(dataset_dir, dtype=torch.float64)
    assert len(dataset) == len(sources)
    for index, source in enumerate(sources):
        structure = DeepHStructure.read(source)
        graph = dataset[index]
        blocks = unpack_blocks(graph.target, graph)
        assert np.array_equal(blocks.atom_pairs, structure.hamiltonian.atom_pairs)
        assert np.array_equal(blocks.chunk_shapes, structure.hamiltonian.chunk_shapes)
        assert np.array_equal(blocks.entries, structure.hamiltonian.entries)  # bit for bit
        assert graph.mask.sum() == structure.hamiltonian.entries.size
        i, j = graph.edge_index
        expected = structure.positions[j] + structure.hamiltonian.atom_pairs[:, :3] @ structure.lattice - structure.positions[i]
        assert np.allclose(graph.edge_vec.numpy(), expected, atol=1e-12)


def test_dataset_json_and_split(sources, dataset_dir):
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    split = json.loads((dataset_dir / "split.json").read_text())
    reference = DeepHStructure.read(sources[0])
    assert meta["basis"] == {"elements_orbital_map": {"S": [0, 0, 1, 1, 2], "Mo": [0, 0, 0, 0, 1, 1, 2, 2, 3]},
                             "spinful": False}  # ordered by atomic number
    assert [s["name"] for s in meta["structures"]] == ["deeph_ref", "copy_0", "copy_1", "copy_2"]
    assert all(s["edges"] == len(reference.hamiltonian) for s in meta["structures"])
    assert meta["num_edges"] == 4 * len(reference.hamiltonian)
    assert meta["split"] == {"train": 2, "val": 1, "test": 1}
    assert len(meta["checksum"]) == 64 and all(len(s["sha256"]) == 64 for s in meta["structures"])
    assert sorted(split["train"] + split["val"] + split["test"]) == [0, 1, 2, 3]
    assert split == make_split(4, (0.5, 0.25, 0.25), seed=3)  # the seeded shuffle, reproducible
    assert set(meta["pair_cutoffs"]) == {"S-S", "S-Mo", "Mo-S", "Mo-Mo"}


def test_graph_files_load_with_weights_only(dataset_dir):
    record = torch.load(dataset_dir / "graphs" / "000000.pt", weights_only=True)
    assert record["entries"].dtype == torch.float64 and record["numbers"].tolist()[:1] == [42]


def test_dft_folders_are_converted(dft_fixtures, tmp_path):
    """An ABACUS calculation folder goes through abacus_to_deeph and gives the reference's graph."""
    out = preprocess([dft_fixtures / MOS2, dft_fixtures / MOS2 / "deeph_ref"], tmp_path / "dataset", (1.0, 0.0, 0.0))
    dataset = GraphDataset(out, dtype=torch.float64)
    assert torch.equal(dataset[0].target, dataset[1].target)
    assert torch.allclose(dataset[0].edge_vec, dataset[1].edge_vec, atol=1e-5)


def test_a_folder_of_structures_and_the_union_basis(sources, tmp_path):
    """A parent folder expands to its structures; elements from different structures share one basis."""
    mos2 = DeepHStructure.read(sources[0])
    carbon = DeepHStructure(
        lattice=np.diag([2.5, 2.5, 10.0]), species=["C"], positions=np.zeros((1, 3)),
        elements_orbital_map={"C": [0, 1]},
        hamiltonian=BlockMatrix.from_blocks({(0, 0, 0, 0, 0): np.diag([-5.0, 1.0, 1.0, 1.0])}),
    )
    mos2.write(tmp_path / "all" / "a_mos2")
    carbon.write(tmp_path / "all" / "b_carbon")
    dataset = GraphDataset(preprocess([tmp_path / "all"], tmp_path / "dataset", (1.0, 0.0, 0.0)))
    assert dataset.basis.elements == ("C", "S", "Mo")
    assert dataset[1].species.tolist() == [0] and set(dataset[0].species.tolist()) == {1, 2}
    assert dataset[0].target.shape[1] == 27  # padded to the largest atom of the union

    carbon.write(tmp_path / "mismatch" / "c1")
    carbon.elements_orbital_map = {"C": [0, 0, 1]}
    carbon.hamiltonian = BlockMatrix.from_blocks({(0, 0, 0, 0, 0): np.eye(5)})
    carbon.write(tmp_path / "mismatch" / "c2")
    with pytest.raises(DatasetError, match="element C has shells"):
        preprocess([tmp_path / "mismatch"], tmp_path / "bad")


def test_tampering_is_detected(dataset_dir, tmp_path):
    copy = Path(shutil.copytree(dataset_dir, tmp_path / "copy"))
    path = copy / "graphs" / "000001.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the H entries: torch.load alone would not notice
    path.write_bytes(bytes(data))
    dataset = GraphDataset(copy)
    dataset[0]  # untouched graphs still load
    with pytest.raises(CorruptedFileError, match="sha256"):
        dataset[1]
    split = json.loads((copy / "split.json").read_text())
    split["train"], split["test"] = split["test"], split["train"]
    (copy / "split.json").write_text(json.dumps(split))
    with pytest.raises(CorruptedFileError, match="checksum"):
        GraphDataset(copy)


def test_invalid_sources_and_split(tmp_path):
    with pytest.raises(DatasetError, match="no such structure"):
        preprocess([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither"):
        preprocess([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(DatasetError, match="summing to 1"):
        make_split(10, (0.5, 0.2, 0.2), 0)


# --- batching ----------------------------------------------------------------------------------------------------------
SIZES = {n: size for n, size in enumerate([300, 120, 80, 500, 60, 700, 90, 40, 1500, 250])}


def test_edge_batches_respect_the_budget_and_cover_everything():
    batches = edge_batches(list(SIZES), SIZES, 800, shuffle=(0, 1))
    assert sorted(i for batch in batches for i in batch) == list(SIZES)
    for batch in batches:
        assert sum(SIZES[i] for i in batch) <= 800 or len(batch) == 1  # a structure over the budget goes alone
    assert [8] in batches
    assert batches == edge_batches(list(SIZES), SIZES, 800, shuffle=(0, 1))  # reproducible per (seed, epoch)
    assert batches != edge_batches(list(SIZES), SIZES, 800, shuffle=(0, 2))  # reshuffled every epoch
    assert edge_batches(list(SIZES), SIZES, 10**6) == [list(SIZES)]  # no shuffle: in order


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_partition_each_batch(world_size):
    batch = [0, 3, 5, 6, 9]
    parts = [shard(batch, SIZES, rank, world_size) for rank in range(world_size)]
    assert sorted(i for part in parts for i in part) == batch
    for part in parts:
        assert part == [i for i in batch if i in part]  # batch order kept
    if world_size == 2:
        loads = [sum(SIZES[i] for i in part) for part in parts]
        assert max(loads) - min(loads) <= max(SIZES[i] for i in batch)


def test_dataset_batches_count_the_whole_batch(dataset_dir):
    dataset = GraphDataset(dataset_dir)
    indices = list(range(len(dataset)))
    whole = list(dataset.batches(indices, 10**6, epoch=1))
    assert len(whole) == 1 and whole[0].graph.num_edges == dataset.meta["num_edges"]
    halves = [list(dataset.batches(indices, 10**6, epoch=1, rank=rank, world_size=2))[0] for rank in (0, 1)]
    assert all(h.num_targets == whole[0].num_targets == int(whole[0].graph.mask.sum()) for h in halves)
    assert sorted(halves[0].indices + halves[1].indices) == sorted(whole[0].indices)


def test_command_line(sources, tmp_path):
    """``preprocess`` through the CLI, two worker processes; a missing source is a usage error (exit status 2)."""
    command = [sys.executable, "-m", "aiida_deeph.ml", "preprocess", "--out", str(tmp_path / "dataset"), "--split",
               "0.5", "0.5", "0", "--seed", "2", "--workers", "2", *map(str, sources[:2])]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert json.loads((tmp_path / "dataset" / "dataset.json").read_text())["split"] == {"train": 1, "val": 1, "test": 0}
    bad = subprocess.run(command[:4] + ["--out", str(tmp_path / "x"), str(tmp_path / "missing")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "no such structure" in bad.stderr

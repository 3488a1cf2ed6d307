"""Inference into DeepH folders: the overlap's pairs or a neighbour search, exact Hermiticity, chunk invariance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import graphene

from aiida_deeph.io import DeepHStructure
from aiida_deeph.io.deeph_format import format_poscar
from aiida_deeph.ml import build_model, graph_from_structure, unpack_blocks
from aiida_deeph.ml.checkpoint import export_model, load_model
from aiida_deeph.ml.dataset import GraphDataset, preprocess
from aiida_deeph.ml.infer import infer, neighbour_pairs

torch.set_num_threads(1)

MODEL = {"model": "deeph2", "channels": 8, "num_blocks": 2, "num_heads": 2, "cutoff": 10.5, "num_radial": 8,
         "radial_hidden": 16}


@pytest.fixture(scope="module")
def real(cp2k_graphene) -> Path:
    return cp2k_graphene(1)[0]


@pytest.fixture(scope="module")
def model_dir(real, tmp_path_factory) -> Path:
    """An (untrained, seeded) DeepH-2 for the real structure's basis, with its dataset's pair cutoffs."""
    root = tmp_path_factory.mktemp("infer_model")
    dataset = GraphDataset(preprocess([real], root / "dataset", (1.0, 0.0, 0.0)))
    torch.manual_seed(0)
    return export_model(build_model(MODEL, dataset.basis), root / "model", dataset.pair_cutoffs, {})


def test_prediction_on_the_overlaps_pairs(real, model_dir, tmp_path):
    out = infer(model_dir, real / "POSCAR", tmp_path / "pred", overlap_dir=real)
    predicted, reference = DeepHStructure.read(out), DeepHStructure.read(real)
    assert sorted(p.name for p in out.iterdir()) == ["POSCAR", "hamiltonian.h5", "info.json", "overlap.h5"]
    assert np.array_equal(predicted.hamiltonian.atom_pairs, reference.overlap.atom_pairs)
    assert np.array_equal(predicted.overlap.entries, reference.overlap.entries)
    assert predicted.hamiltonian.hermiticity_error() == 0.0  # H_ij(R) = H_ji(−R)^T bit for bit
    assert predicted.elements_orbital_map == {"C": [0, 1]}
    assert predicted.fermi_energy_eV == reference.fermi_energy_eV
    assert np.allclose(predicted.positions, reference.positions) and predicted.species == reference.species
    assert json.loads((out / "info.json").read_text())["hamiltonian_source"] == "aiida-deeph prediction"
    # the same numbers as one forward pass of the model over the whole graph
    model = load_model(model_dir)
    graph = graph_from_structure(reference, model.basis)
    with torch.no_grad():
        direct = unpack_blocks(model(graph), graph)
    assert np.allclose(direct.entries, predicted.hamiltonian.entries, atol=1e-6)


def test_neighbour_search_finds_the_dft_pairs(real, model_dir):
    """Without an overlap, pairs within the training data's longest C–C pair are exactly CP2K's pairs."""
    structure = DeepHStructure.read(real)
    cutoffs = json.loads((model_dir / "basis.json").read_text())["pair_cutoffs"]
    pairs = neighbour_pairs(structure.lattice, structure.positions, structure.species, cutoffs)
    assert {tuple(p) for p in pairs.tolist()} == {tuple(p) for p in structure.overlap.atom_pairs.tolist()}
    with pytest.raises(ValueError, match="not trained on C-C"):
        neighbour_pairs(structure.lattice, structure.positions, structure.species, {"B-B": 3.0})


def test_chunks_give_the_same_result(real, model_dir, tmp_path):
    """An 8×8 graphene sheet (128 atoms, 512 edges) in one pass and in chunks of at most 300 and 100 edges
    (float64). A short-ranged model (1.6 Å pairs, 1 block) keeps the receptive field of an atom small."""
    torch.manual_seed(1)
    short = export_model(build_model({**MODEL, "num_blocks": 1}, load_model(model_dir).basis), tmp_path / "short",
                         {"C-C": 1.6}, {})
    atoms = graphene(a=2.46, vacuum=6.0).repeat((8, 8, 1))
    atoms.rattle(0.03, seed=2)
    poscar = tmp_path / "POSCAR"
    poscar.write_text(format_poscar(atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions))
    results = {}
    for budget in (10**6, 300, 100):
        out = infer(short, poscar, tmp_path / f"chunks_{budget}", max_edges_per_chunk=budget, dtype=torch.float64)
        results[budget] = DeepHStructure.read(out).hamiltonian
        assert results[budget].hermiticity_error() == 0.0
    assert len(results[10**6]) == 128 * 4  # on-site + 3 nearest neighbours
    for budget in (300, 100):
        assert np.array_equal(results[budget].atom_pairs, results[10**6].atom_pairs)
        assert np.allclose(results[budget].entries, results[10**6].entries, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="too small"):  # one atom alone has 4 edges
        infer(short, poscar, tmp_path / "tiny", max_edges_per_chunk=3)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aiida_deeph.ml", *args], capture_output=True, text=True, timeout=300)


def test_command_line(real, model_dir, tmp_path):
    """infer, then bands and dos on the predicted folder; exit status 2 for a usage error, 5 for corrupted weights."""
    ok = cli("infer", "--model", str(model_dir), "--structure", str(real / "POSCAR"), "--overlap", str(real), "--out",
             str(tmp_path / "pred"), "--max-edges-per-chunk", "5000", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    assert DeepHStructure.read(tmp_path / "pred").hamiltonian.hermiticity_error() == 0.0
    bands = cli("bands", str(tmp_path / "pred"), "--npoints", "10")
    dos = cli("dos", str(tmp_path / "pred"), "--kmesh", "2", "2", "1")
    assert bands.returncode == dos.returncode == 0, bands.stderr + dos.stderr
    assert (tmp_path / "pred" / "band.h5").is_file() and (tmp_path / "pred" / "dos.h5").is_file()
    pruned = cli("bands", str(tmp_path / "pred"), "--npoints", "10", "--overlap-tolerance", "1e-4", "--out",
                 str(tmp_path / "pruned"))
    assert pruned.returncode == 0 and (tmp_path / "pruned" / "band.h5").is_file(), pruned.stderr
    zero = cli("dos", str(tmp_path / "pred"), "--overlap-tolerance", "0")
    assert zero.returncode == 2 and "must be > 0" in zero.stderr

    missing = cli("infer", "--structure", str(real / "POSCAR"), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "--model" in missing.stderr

    tampered = Path(shutil.copytree(model_dir, tmp_path / "tampered"))
    weights = torch.load(tampered / "weights.pt", weights_only=True)
    first = next(name for name, value in weights.items() if value.is_floating_point() and value.numel())
    weights[first].view(-1)[0] += 1.0  # an edited weight (a flipped byte may land in the zip's padding)
    torch.save(weights, tampered / "weights.pt")
    corrupted = cli("infer", "--model", str(tampered), "--structure", str(real / "POSCAR"), "--out", str(tmp_path / "y"))
    assert corrupted.returncode == 5 and "sha256" in corrupted.stderr

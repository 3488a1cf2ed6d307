"""DeepH standard format: exact round trip of deepx-dock's reference, validation, legacy export."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from aiida_deeph.io import BlockMatrix, DeepHFormatError, DeepHStructure, write_legacy
from aiida_deeph.io.conventions import LEGACY_CODE, ORBITAL_CONVENTIONS, from_standard, to_standard
from aiida_deeph.io.deeph_format import H5_DATASETS


@pytest.fixture()
def mos2_ref(dft_fixtures):
    return dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "deeph_ref"


def test_reference_round_trip_is_exact(mos2_ref, tmp_path):
    structure = DeepHStructure.read(mos2_ref)
    structure.write(tmp_path)
    for name in ("hamiltonian.h5", "overlap.h5"):
        with h5py.File(mos2_ref / name) as ref, h5py.File(tmp_path / name) as new:
            for dataset in H5_DATASETS:
                assert ref[dataset].dtype == new[dataset].dtype
                assert np.array_equal(ref[dataset][()], new[dataset][()]), (name, dataset)
    assert json.loads((tmp_path / "info.json").read_text()) == json.loads((mos2_ref / "info.json").read_text())
    again = DeepHStructure.read(tmp_path)
    assert np.array_equal(again.positions, structure.positions) and np.array_equal(again.lattice, structure.lattice)
    for key, block in structure.hamiltonian.items():
        assert np.array_equal(again.hamiltonian[key], block)


def test_reference_physics(mos2_ref):
    structure = DeepHStructure.read(mos2_ref)
    assert structure.natoms == 3 and structure.norbitals == 53 and len(structure.hamiltonian) == 239
    assert structure.hamiltonian.hermiticity_error() < 1e-12
    assert structure.overlap.hermiticity_error() < 1e-12
    levels = structure.eigenvalues([[0, 0, 0]])[0]
    # istate.info of the same ABACUS run (eV, k = Γ)
    assert np.allclose(levels[:3], [-63.9169, -38.0666, -37.9607], atol=2e-4)


def test_block_matrix_rejects_inconsistent_data():
    with pytest.raises(DeepHFormatError, match="cumulative"):
        BlockMatrix(np.zeros((1, 5)), [[2, 2]], [0, 3], np.zeros(3))
    with pytest.raises(DeepHFormatError, match="entries"):
        BlockMatrix(np.zeros((1, 5)), [[2, 2]], [0, 4], np.zeros(3))


def test_truncated_h5_is_a_format_error(mos2_ref, tmp_path):
    data = (mos2_ref / "hamiltonian.h5").read_bytes()
    for cut in (10, len(data) // 3, len(data) - 100):
        (tmp_path / "cut.h5").write_bytes(data[:cut])
        with pytest.raises(DeepHFormatError):
            BlockMatrix.read(tmp_path / "cut.h5")


def test_a_pair_listed_twice_is_a_format_error(mos2_ref, tmp_path):
    """Both readers (whole, and chunked with pruning) refuse a file that lists one atom pair twice."""
    overlap = BlockMatrix.read(mos2_ref / "overlap.h5")
    twice = overlap.subset(np.ones(len(overlap), dtype=bool))
    twice.atom_pairs[7] = twice.atom_pairs[3]
    twice.write(tmp_path / "overlap.h5")
    with pytest.raises(DeepHFormatError, match="listed twice"):
        BlockMatrix.read(tmp_path / "overlap.h5")
    with pytest.raises(DeepHFormatError, match="listed twice"):
        BlockMatrix.read_selected(tmp_path / "overlap.h5", lambda chunk, first: np.ones(len(chunk), dtype=bool))
    BlockMatrix.read(mos2_ref / "overlap.h5")  # the original has every pair once


def test_structure_requires_grouped_elements():
    with pytest.raises(DeepHFormatError, match="grouped"):
        DeepHStructure(np.eye(3) * 5, ["C", "N", "C"], np.zeros((3, 3)), {"C": [0], "N": [0]})


def test_spinful_complex_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    blocks = {(0, 0, 0, 0, 0): rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))}
    structure = DeepHStructure(np.eye(3) * 4, ["H"], np.zeros((1, 3)), {"H": [0]}, spinful=True,
                               hamiltonian=BlockMatrix.from_blocks(blocks))
    structure.write(tmp_path)
    again = DeepHStructure.read(tmp_path)
    assert again.spinful and again.hamiltonian.is_complex
    assert np.array_equal(again.hamiltonian[(0, 0, 0, 0, 0)], blocks[(0, 0, 0, 0, 0)])


def test_legacy_export(mos2_ref, tmp_path):
    structure = DeepHStructure.read(mos2_ref)
    write_legacy(structure, tmp_path)
    assert np.allclose(np.loadtxt(tmp_path / "lat.dat"), structure.lattice.T)
    assert np.allclose(np.loadtxt(tmp_path / "site_positions.dat"), structure.positions.T)
    assert np.loadtxt(tmp_path / "element.dat").tolist() == [42, 16, 16]
    info = json.loads((tmp_path / "info.json").read_text())
    assert info == {"nsites": 3, "isorthogonal": False, "isspinful": False, "fermi_level": structure.fermi_energy_eV}
    mo = structure.elements_orbital_map["Mo"]
    with h5py.File(tmp_path / "hamiltonians.h5") as legacy:
        assert len(legacy) == len(structure.hamiltonian)
        block = legacy["[0, 0, 0, 1, 1]"][()]  # 1-based keys, OpenMX order
    assert np.array_equal(to_standard(block, LEGACY_CODE, mo, mo), structure.hamiltonian[(0, 0, 0, 0, 0)])
    # OpenMX order really differs from the standard one for p and d
    assert not np.array_equal(block, structure.hamiltonian[(0, 0, 0, 0, 0)])


@pytest.mark.parametrize("code", sorted(ORBITAL_CONVENTIONS))
def test_conventions_are_signed_permutations(code):
    rng = np.random.default_rng(1)
    shells = sorted(ORBITAL_CONVENTIONS[code])[:4]
    size = sum(2 * l + 1 for l in shells)
    block = rng.normal(size=(size, size))
    assert np.allclose(from_standard(to_standard(block, code, shells, shells), code, shells, shells), block)


def test_pruned_drops_the_pairs_of_small_overlap_and_their_hamiltonian(mos2_ref, monkeypatch, tmp_path):
    """Kept blocks are copied exactly, mirrors stay together (H stays Hermitian), and the chunked per-block max and
    gather agree with a plain loop across chunk boundaries; reading a folder pruned, a chunk at a time, gives the
    same structure."""
    import aiida_deeph.io.deeph_format as deeph_format

    chunks = deeph_format._pair_chunks
    monkeypatch.setattr(deeph_format, "_pair_chunks", lambda npairs, nentries: chunks(npairs, nentries, 997))
    structure = DeepHStructure.read(mos2_ref)
    overlap = structure.overlap
    largest = np.array([np.abs(overlap.block(n)).max() for n in range(len(overlap))])
    np.testing.assert_array_equal(overlap.block_max(), largest)
    tolerance = float(np.quantile(largest, 0.4))
    pruned = structure.pruned(tolerance)
    kept = largest >= tolerance
    assert 0 < len(pruned.overlap) == kept.sum() < len(overlap)
    np.testing.assert_array_equal(pruned.overlap.atom_pairs, overlap.atom_pairs[kept])
    np.testing.assert_array_equal(pruned.hamiltonian.atom_pairs, overlap.atom_pairs[kept])
    for key, block in pruned.hamiltonian.items():
        np.testing.assert_array_equal(block, structure.hamiltonian[key])
        np.testing.assert_array_equal(pruned.overlap[key], overlap[key])
    assert pruned.hamiltonian.hermiticity_error() == structure.hamiltonian.hermiticity_error() < 1e-12
    assert structure.pruned(largest.min()).overlap.entries.size == overlap.entries.size
    with pytest.raises(ValueError, match="> 0"):
        structure.pruned(0.0)
    read = DeepHStructure.read(structure.write(tmp_path / "copy"), overlap_tolerance=tolerance)
    for matrix, expected in ((read.overlap, pruned.overlap), (read.hamiltonian, pruned.hamiltonian)):
        for name in ("atom_pairs", "chunk_shapes", "chunk_boundaries", "entries"):
            np.testing.assert_array_equal(getattr(matrix, name), getattr(expected, name))
    with pytest.raises(ValueError, match="> 0"):
        DeepHStructure.read(tmp_path / "copy", overlap_tolerance=-1.0)

"""``aiida-deeph convert``: the real OpenMX and ABACUS folders to the DeepH format, and DeepH to legacy."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from aiida_deeph.cli.convert import convert
from aiida_deeph.io.abacus import abacus_to_deeph
from aiida_deeph.io.deeph_format import DeepHStructure
from aiida_deeph.io.openmx import openmx_to_deeph


def invoke(*args: str | Path):
    return CliRunner().invoke(convert, [str(arg) for arg in args])


def assert_same(ours: DeepHStructure, reference: DeepHStructure) -> None:
    np.testing.assert_array_equal(ours.lattice, reference.lattice)
    np.testing.assert_array_equal(ours.positions, reference.positions)
    assert ours.species == reference.species and ours.elements_orbital_map == reference.elements_orbital_map
    assert ours.fermi_energy_eV == reference.fermi_energy_eV and ours.spinful == reference.spinful
    for name in ("hamiltonian", "overlap"):
        np.testing.assert_array_equal(getattr(ours, name).atom_pairs, getattr(reference, name).atom_pairs)
        np.testing.assert_array_equal(getattr(ours, name).entries, getattr(reference, name).entries)


@pytest.mark.parametrize("code, folder, reader", [
    ("openmx", "openmx/fe_bcc_spin_sli43", openmx_to_deeph),
    ("abacus", "abacus/MoS2_v3.10_deeph_dock", abacus_to_deeph),
])
def test_convert_calculation_folder(dft_fixtures, tmp_path, code, folder, reader):
    result = invoke(code, dft_fixtures / folder, tmp_path / "dft" / "0")
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'dft' / '0'}" in result.output and "(H and S)" in result.output
    assert_same(DeepHStructure.read(tmp_path / "dft" / "0"), reader(dft_fixtures / folder))


def test_convert_openmx_scfout_file(dft_fixtures, tmp_path):
    result = invoke("openmx", dft_fixtures / "openmx" / "fe_bcc_spin_sli43" / "fe.scfout", tmp_path / "fe")
    assert result.exit_code == 0, result.output
    assert "2 atoms, 26 orbitals, 226 atom pairs" in result.output


def test_convert_abacus_mos2_matches_deeph_dock(dft_fixtures, tmp_path):
    """DeepH-dock's own conversion of the same run, as a check of the whole chain."""
    source = dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock"
    assert invoke("abacus", source, tmp_path / "mos2", "--suffix", "ABACUS").exit_code == 0
    ours, dock = DeepHStructure.read(tmp_path / "mos2"), DeepHStructure.read(source / "deeph_ref")
    np.testing.assert_array_equal(ours.overlap.atom_pairs, dock.overlap.atom_pairs)
    np.testing.assert_allclose(ours.hamiltonian.entries, dock.hamiltonian.entries, atol=1e-4)


def test_convert_legacy(dft_fixtures, tmp_path):
    assert invoke("openmx", dft_fixtures / "openmx" / "fe_bcc_spin_sli43", tmp_path / "deeph").exit_code == 0
    result = invoke("legacy", tmp_path / "deeph", tmp_path / "legacy")
    assert result.exit_code == 0, result.output
    structure = DeepHStructure.read(tmp_path / "deeph")
    with h5py.File(tmp_path / "legacy" / "hamiltonians.h5", "r") as handle:
        assert len(handle) == len(structure.hamiltonian) == 226 and "[0, 0, 0, 1, 1]" in handle
        assert handle["[0, 0, 0, 1, 1]"].shape == (26, 26)  # spinful: 2 × 13 orbitals
    assert (tmp_path / "legacy" / "overlaps.h5").is_file()
    assert np.loadtxt(tmp_path / "legacy" / "element.dat").tolist() == [26, 26]


def test_errors_are_clean(dft_fixtures, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("openmx", empty, tmp_path / "out")
    assert result.exit_code == 1 and "expected exactly one *.scfout, found 0" in result.output
    assert not (tmp_path / "out").exists()

    result = invoke("abacus", dft_fixtures / "openmx" / "fe_bcc_spin_sli43", tmp_path / "out")
    assert result.exit_code == 1 and "Error:" in result.output and "INPUT" in result.output

    result = invoke("abacus", dft_fixtures / "openmx" / "fe_bcc_spin_sli43" / "fe.out", tmp_path / "out")
    assert result.exit_code == 1 and "is not a folder" in result.output

    result = invoke("legacy", empty, tmp_path / "out")
    assert result.exit_code == 1 and "POSCAR is missing" in result.output

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    result = invoke("openmx", dft_fixtures / "openmx" / "fe_bcc_spin_sli43", busy)
    assert result.exit_code == 1 and "is not empty" in result.output

    result = invoke("openmx", tmp_path / "missing", tmp_path / "out")
    assert result.exit_code == 2 and "does not exist" in result.output

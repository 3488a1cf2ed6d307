"""deeph.orbital and deeph.orbital.family: headers of real ABACUS .orb files and of PAO files, families per element."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from aiida import orm

from aiida_deeph.data.orbital import OrbitalData, OrbitalFamily, load_orbital_family

from ..replay import write_pao


@pytest.fixture
def orbital_dir(dft_fixtures) -> Path:
    return dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "orbitals"


def test_abacus_orb_header(aiida_profile, orbital_dir):
    orbital = OrbitalData(orbital_dir / "Mo_DZP" / "Mo_gga_8au_100Ry_4s2p2d1f.orb")
    assert (orbital.element, orbital.code, orbital.cutoff_radius) == ("Mo", "abacus", 8.0)
    assert orbital.shells == [0, 0, 0, 0, 1, 1, 2, 2, 3]
    orbital.store()
    loaded = orm.load_node(orbital.pk)
    assert isinstance(loaded, OrbitalData) and loaded.shells == orbital.shells
    with pytest.raises(ValueError, match="no OpenMX basis string"):
        loaded.basis_name
    with pytest.raises(ValueError, match="fixes its own basis"):
        OrbitalData(orbital_dir / "S_DZP" / "S_gga_8au_100Ry_2s2p1d.orb", basis="s2p2d1")


def test_openmx_pao_header(aiida_profile, tmp_path):
    path = write_pao(tmp_path / "C6.0.pao", 6, lmax=3, mul=5)
    orbital = OrbitalData(path, basis="s2p2d1")
    assert (orbital.element, orbital.code, orbital.cutoff_radius) == ("C", "openmx", 6.0)
    assert orbital.shells == [0, 0, 1, 1, 2] and orbital.basis_name == "C6.0-s2p2d1"
    assert OrbitalData(path, basis="C6.0-s3p2d2f1").shells == [0, 0, 0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize(
    "basis, match",
    [
        (None, r"needs `basis`"),
        ("s6p2", r"asks for 6 s functions, the file has 5"),
        ("s1p1d1f1g1", r"asks for 1 g functions, the file has 0"),
        ("H5.0-s1", r"names PAO file H5.0.pao"),
        ("x2", r"cannot read the shells"),
    ],
)
def test_pao_basis_refused(aiida_profile, tmp_path, basis, match):
    with pytest.raises(ValueError, match=match):
        OrbitalData(write_pao(tmp_path / "C6.0.pao", 6, lmax=3, mul=5), basis=basis)


def test_bad_files_refused(aiida_profile, tmp_path, orbital_dir):
    text = tmp_path / "C6.0.txt"
    text.write_text("AtomSpecies 6\n")
    with pytest.raises(ValueError, match=r"ends in .pao \(OpenMX\) or .orb \(ABACUS\)"):
        OrbitalData(text)
    (tmp_path / "C6.0.pao").write_text("AtomSpecies 6\nPAO.Lmax 2\n")
    with pytest.raises(ValueError, match="no numeric 'PAO.Mul' line"):
        OrbitalData(tmp_path / "C6.0.pao", basis="s1")
    cut = write_pao(tmp_path / "Si7.0.pao", 14, lmax=2, mul=2)
    cut.write_text(cut.read_text().split("<pseudo.atomic.orbitals.L=1")[0])
    with pytest.raises(ValueError, match=r"no <pseudo.atomic.orbitals.L=1 block"):
        OrbitalData(cut, basis="s1p1")
    (tmp_path / "broken.orb").write_text("Element Mo\n")
    with pytest.raises(ValueError, match="Lmax"):
        OrbitalData(tmp_path / "broken.orb")


def test_orb_family_from_folder(aiida_profile, orbital_dir):
    label = f"sg15-dzp-{uuid.uuid4().hex[:8]}"
    family = OrbitalFamily.create_from_folder(orbital_dir, label, description="SG15 DZP")
    assert family.is_stored and family.elements == ["Mo", "S"]
    loaded = load_orbital_family(label)
    assert isinstance(loaded, OrbitalFamily)
    orbitals = loaded.get_orbitals(elements=["S", "Mo"])
    assert list(orbitals) == ["S", "Mo"] and orbitals["S"].shells == [0, 0, 1, 1, 2]
    structure = orm.StructureData(cell=[[3, 0, 0], [0, 3, 0], [0, 0, 3]])
    structure.append_atom(position=(0, 0, 0), symbols="S")
    assert list(loaded.get_orbitals(structure=structure)) == ["S"]
    with pytest.raises(ValueError, match="has no orbital file for Fe"):
        loaded.get_orbitals(elements=["Fe"])
    with pytest.raises(ValueError, match="already exists"):
        OrbitalFamily.create_from_folder(orbital_dir, label)
    with pytest.raises(ValueError, match="two orbital files for S"):
        loaded.add_nodes(OrbitalData(orbital_dir / "S_DZP" / "S_gga_8au_100Ry_2s2p1d.orb").store())
    with pytest.raises(TypeError, match="OrbitalData nodes only"):
        loaded.add_nodes(orm.Int(1).store())


def test_pao_family_needs_the_basis_per_element(aiida_profile, tmp_path):
    write_pao(tmp_path / "Fe6.0S.pao", 26, lmax=3, mul=4)
    write_pao(tmp_path / "Fe5.5H.pao", 26, lmax=3, mul=4)
    write_pao(tmp_path / "C6.0.pao", 6, lmax=3, mul=3)
    label = f"pbe19-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="needs `basis`"):
        OrbitalFamily.create_from_folder(tmp_path, label)
    with pytest.raises(ValueError, match="is a Fe basis, given for C"):
        OrbitalFamily.create_from_folder(tmp_path, label, basis={"C": "Fe6.0S-s2"})
    with pytest.raises(ValueError, match="no Ni6.0H.pao"):
        OrbitalFamily.create_from_folder(tmp_path, label, basis={"Ni": "Ni6.0H-s2"})
    family = OrbitalFamily.create_from_folder(tmp_path, label, basis={"Fe": "Fe6.0S-s2p2d1", "C": "C6.0-s2p2d1"})
    assert {el: node.basis_name for el, node in family.orbitals.items()} == {"Fe": "Fe6.0S-s2p2d1", "C": "C6.0-s2p2d1"}


def test_missing_family_says_how_to_create_it(aiida_profile, tmp_path, orbital_dir):
    with pytest.raises(ValueError, match=r"not installed.*OrbitalFamily.create_from_folder\(folder, 'nope'"):
        load_orbital_family("nope")
    other = f"plain-{uuid.uuid4().hex[:8]}"
    orm.Group(label=other).store()
    with pytest.raises(ValueError, match="not an orbital family"):
        load_orbital_family(other)
    copy = shutil.copytree(orbital_dir, tmp_path / "orbitals")
    shutil.copy(copy / "S_DZP" / "S_gga_8au_100Ry_2s2p1d.orb", copy / "S_again.orb")
    with pytest.raises(ValueError, match="two orbital files for S"):
        OrbitalFamily.create_from_folder(copy, f"dup-{uuid.uuid4().hex[:8]}")

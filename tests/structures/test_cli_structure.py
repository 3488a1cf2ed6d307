"""``structure`` CLI group, driven through click's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import mx2
from ase.io import read, write
from click.testing import CliRunner

from aiida_deeph.cli.structure import structure
from aiida_deeph.structures import twisted_bilayer


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke ``structure`` in tmp_path; returns the click Result."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(structure, [str(a) for a in args])

    return invoke


@pytest.fixture
def sheet(tmp_path):
    path = tmp_path / "mos2.extxyz"
    write(path, mx2("MoS2", vacuum=7.5))
    return path


def test_twisted_bilayer_by_angle(run):
    args = ("twisted-bilayer", "--material", "graphene", "--angle", 21.79, "--distance", 3.35, "--vacuum", 15)
    result = run(*args, "-o", "tbg.vasp")
    assert result.exit_code == 0, result.output
    assert "(m, n) = (1, 2)" in result.output
    atoms = read("tbg.vasp")
    assert len(atoms) == 28 and atoms.cell[2, 2] == pytest.approx(3.35 + 15)


def test_twisted_bilayer_by_indices_with_format(run):
    result = run(
        "twisted-bilayer", "--material", "hBN", "--mn", 2, 3, "--stacking", "AB", "-o", "tbn.out", "--format", "extxyz"
    )
    assert result.exit_code == 0, result.output
    atoms = read("tbn.out", format="extxyz")
    assert atoms.get_chemical_formula() == "B38N38"
    assert np.array_equal(atoms.get_tags(), twisted_bilayer("hbn", 2, 3, stacking="AB").get_tags())


def test_twisted_bilayer_from_layer_file(run, tmp_path):
    write(tmp_path / "layer.extxyz", mx2("WSe2", a=3.28, thickness=3.34))
    result = run("twisted-bilayer", "--layer", "layer.extxyz", "--mn", 1, 2, "--distance", 3.1, "-o", "w.extxyz")
    assert result.exit_code == 0, result.output
    assert read("w.extxyz").get_chemical_formula() == "Se28W14"
    result = run("twisted-bilayer", "--material", "hbn", "--layer", "layer.extxyz", "--mn", 1, 2, "-o", "x.vasp")
    assert result.exit_code == 1 and "not both" in result.output


def test_twisted_bilayer_errors_are_clean(run):
    result = run("twisted-bilayer", "--angle", 21.79, "--mn", 1, 2, "-o", "x.vasp")
    assert result.exit_code == 1 and "Error: give either (m, n) or angle" in result.output
    result = run("twisted-bilayer", "--mn", 1, 1, "-o", "x.vasp")
    assert result.exit_code == 1 and "no twist" in result.output
    result = run("twisted-bilayer", "--mn", 1, 2, "-o", "x.unknownformat")
    assert result.exit_code == 1 and "cannot write format" in result.output



def test_defect_vacancy_and_alloy(run, sheet):
    result = run("defect", sheet, "--supercell", 3, 3, 1, "--vacancy", 0, "--vacancy", 1, "-o", "vac.extxyz")
    assert result.exit_code == 0, result.output
    assert read("vac.extxyz").get_chemical_formula() == "Mo7S18"  # sites index the grouped supercell: Mo first

    args = ("defect", sheet, "--supercell", 3, 3, 1, "--alloy", "Mo", "W", 0.5, "--seed", 3)
    assert run(*args, "-o", "a.vasp").exit_code == 0 and run(*args, "-o", "b.vasp").exit_code == 0
    first, second = read("a.vasp"), read("b.vasp")
    assert first.get_chemical_symbols() == ["Mo"] * 5 + ["S"] * 18 + ["W"] * 4  # round(4.5) == 4
    assert np.array_equal(first.positions, second.positions)


def test_defect_substitution_and_interstitial(run, sheet):
    assert run("defect", sheet, "--substitute", 1, "Se", "-o", "sub.extxyz").exit_code == 0
    assert read("sub.extxyz").get_chemical_symbols() == ["Mo", "S", "Se"]
    result = run("defect", sheet, "--supercell", 2, 2, 1, "--interstitial", "Li", "-o", "int.extxyz")
    assert result.exit_code == 0, result.output
    assert read("int.extxyz").get_chemical_symbols()[-1] == "Li"


def test_defect_needs_exactly_one_kind(run, sheet):
    result = run("defect", sheet, "--vacancy", 0, "--substitute", 1, "Se", "-o", "x.xyz")
    assert result.exit_code == 1 and "exactly one of" in result.output
    result = run("defect", sheet, "--alloy", "Mo", "W", 2.0, "-o", "x.xyz")
    assert result.exit_code == 1 and "[0, 1]" in result.output


def test_perturb_multi_and_single_image_formats(run, sheet):
    args = ("perturb", sheet, "--supercell", 2, 2, 1, "-n", 3, "--strain", -0.01, 0.01, "--seed", 0)
    assert run(*args, "-o", "train.extxyz").exit_code == 0
    frames = read("train.extxyz", index=":")
    assert len(frames) == 3 and all(len(f) == 12 for f in frames)

    result = run(*args, "--distribution", "gaussian", "-o", "POSCAR.vasp")
    assert result.exit_code == 0, result.output
    assert [len(read(f"POSCAR_{i:03d}.vasp")) for i in range(3)] == [12, 12, 12]

    result = run("perturb", sheet, "--displacement", 2.0, "--seed", 0, "-o", "x.extxyz")
    assert result.exit_code == 1 and "lower the displacement" in result.output


def test_interlayer_shift(run, tmp_path):
    write(tmp_path / "bilayer.extxyz", twisted_bilayer("graphene", 1, 2))
    args = ("interlayer-shift", "bilayer.extxyz", "--grid", 2, 3, "--displacement", 0.02, "--seed", 1)
    result = run(*args, "-o", "shifts.extxyz")
    assert result.exit_code == 0, result.output
    frames = read("shifts.extxyz", index=":")
    assert len(frames) == 6 and tuple(frames[-1].info["shift"]) == pytest.approx((0.5, 2 / 3))

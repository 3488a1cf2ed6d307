"""Twisted bilayers against known commensurate cells: angles, atom counts, bonds, layer gap and twist."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc100, graphene, mx2
from ase.neighborlist import neighbor_list

from aiida_deeph.structures import (
    commensurate_indices,
    minimum_distance,
    primitive_layer,
    standard_layer,
    twist_angle,
    twisted_bilayer,
)

KNOWN = [((1, 2), 21.7868, 28), ((2, 3), 13.1736, 76), ((3, 4), 9.4300, 148), ((31, 32), 1.0501, 11_908)]


def _layer(atoms: Atoms, tag: int) -> Atoms:
    return atoms[atoms.get_tags() == tag]


def _is_grouped(symbols: list[str]) -> bool:
    blocks = [s for i, s in enumerate(symbols) if i == 0 or symbols[i - 1] != s]
    return len(blocks) == len(set(blocks))


def _bond_angles(layer: Atoms, bond: float) -> np.ndarray:
    """In-plane directions of nearest-neighbour bonds, in degrees modulo 60."""
    vectors = neighbor_list("D", layer, bond + 0.05)
    return np.degrees(np.arctan2(vectors[:, 1], vectors[:, 0])) % 60


@pytest.mark.parametrize(("mn", "angle", "_"), KNOWN)
def test_twist_angle_and_commensurate_indices(mn, angle, _):
    assert twist_angle(*mn) == pytest.approx(angle, abs=1e-4)
    assert twist_angle(*reversed(mn)) == pytest.approx(angle, abs=1e-4)
    assert commensurate_indices(round(angle, 2)) == mn


def test_commensurate_indices_includes_reduced_cells():
    # 3 | (m − n): the (1, 4) cell is three times smaller and twists by 60° − 21.79°.
    assert commensurate_indices(38.21) == (1, 4)
    assert len(twisted_bilayer("graphene", 1, 4)) == 28


@pytest.mark.parametrize(("mn", "angle", "count"), KNOWN[:3])
def test_graphene_known_cells(mn, angle, count):
    atoms = twisted_bilayer("graphene", angle=angle)
    assert len(atoms) == count
    assert (atoms.info["m"], atoms.info["n"]) == mn
    assert atoms.info["twist_angle"] == pytest.approx(angle, abs=1e-4)


def test_magic_angle_builds_fast_with_exact_bonds():
    start = time.perf_counter()
    atoms = twisted_bilayer("graphene", angle=1.05)
    assert time.perf_counter() - start < 5
    assert len(atoms) == 11_908
    for tag in (0, 1):
        # Three bonds per atom everywhere, cell boundary included: no duplicates, no missing atoms.
        first, _ = neighbor_list("ij", _layer(atoms, tag), 1.5)
        assert np.all(np.bincount(first, minlength=len(atoms) // 2) == 3)


@pytest.mark.parametrize(("material", "bond", "neighbours"), [("graphene", 1.5, 3), ("hbn", 1.5, 3)])
def test_layers_keep_primitive_bonds(material, bond, neighbours):
    atoms = twisted_bilayer(material, 2, 3)
    primitive = minimum_distance(primitive_layer(material))
    for tag in (0, 1):
        layer = _layer(atoms, tag)
        assert minimum_distance(layer) == pytest.approx(primitive, abs=1e-8)
        first, _ = neighbor_list("ij", layer, bond)
        assert np.all(np.bincount(first, minlength=len(layer)) == neighbours)


def test_hbn_and_mos2_counts_and_element_grouping():
    hbn = twisted_bilayer("hbn", angle=21.79)
    assert len(hbn) == 28 and hbn.get_chemical_formula() == "B14N14"
    assert hbn.get_chemical_symbols()[:14] == ["B"] * 14

    mos2 = twisted_bilayer("mos2", angle=21.79)
    assert len(mos2) == 42 and mos2.get_chemical_formula() == "Mo14S28"
    assert mos2.get_chemical_symbols()[:14] == ["Mo"] * 14
    assert _is_grouped(mos2.get_chemical_symbols())
    for tag in (0, 1):
        layer = _layer(mos2, tag)
        first, _ = neighbor_list("ij", layer, 2.5)
        expected = np.where(np.array(layer.get_chemical_symbols()) == "Mo", 6, 3)  # trigonal prismatic MoS6
        assert np.array_equal(np.bincount(first, minlength=len(layer)), expected)
        assert minimum_distance(layer) == pytest.approx(minimum_distance(primitive_layer("mos2")))


@pytest.mark.parametrize(("material", "distance"), [("graphene", 3.35), ("hbn", 3.1), ("mos2", 3.0)])
def test_layer_gap_and_vacuum(material, distance):
    atoms = twisted_bilayer(material, 1, 2, distance=distance, vacuum=12.0)
    bottom, top = _layer(atoms, 0).positions[:, 2], _layer(atoms, 1).positions[:, 2]
    assert top.min() - bottom.max() == pytest.approx(distance)
    assert atoms.cell[2, 2] == pytest.approx(top.max() - bottom.min() + 12.0)
    assert bottom.min() == pytest.approx(6.0)
    assert list(atoms.pbc) == [True, True, False]


def test_top_layer_is_rotated_by_the_twist_angle():
    atoms = twisted_bilayer("graphene", 2, 3)
    bottom = _bond_angles(_layer(atoms, 0), 1.42)
    top = _bond_angles(_layer(atoms, 1), 1.42)
    assert np.allclose(bottom, 30.0, atol=1e-6)
    assert np.allclose(top, (30.0 + twist_angle(2, 3)) % 60, atol=1e-6)


def test_stacking_sets_the_site_above_the_rotation_centre():
    for stacking, expected in (("AA", 0.0), ("AB", 2.46 / np.sqrt(3))):
        atoms = twisted_bilayer("graphene", 1, 2, stacking=stacking)
        origin_atom = _layer(atoms, 0).positions[:, :2]
        origin_atom = origin_atom[np.argmin(np.linalg.norm(origin_atom, axis=1))]
        assert np.linalg.norm(origin_atom) < 1e-8
        in_plane = _layer(atoms, 1).positions[:, :2]
        assert np.linalg.norm(in_plane, axis=1).min() == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("layer", [graphene("C2", a=2.46), standard_layer(graphene("C2", a=2.46))])
def test_custom_layer_in_either_hexagonal_setting(layer):
    atoms = twisted_bilayer(layer, 1, 2, distance=3.35)
    reference = twisted_bilayer("graphene", 1, 2)
    assert np.allclose(atoms.cell, reference.cell)
    assert np.allclose(np.sort(atoms.positions[:, 2]), np.sort(reference.positions[:, 2]))


def test_reversed_indices_give_the_mirror_twist():
    assert len(twisted_bilayer("graphene", 2, 1)) == 28
    assert twisted_bilayer("graphene", 2, 1).info["twist_angle"] == pytest.approx(twist_angle(1, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"m": 2, "n": 2}, "no twist"),
        ({"m": 2, "n": 4}, "coprime"),
        ({"m": 0, "n": 1}, "positive integers"),
        ({"m": 1}, "both m and n"),
        ({"m": 1, "n": 2, "angle": 21.79}, "not both"),
        ({}, "not both or neither"),
        ({"angle": 75.0}, "0°, 60°"),
        ({"m": 1, "n": 2, "distance": -3.0}, "distance must be > 0"),
        ({"m": 1, "n": 2, "vacuum": -1.0}, "vacuum >= 0"),
        ({"m": 1, "n": 2, "stacking": "ABC"}, "stacking"),
        ({"layer": "silicene", "m": 1, "n": 2}, "unknown material"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        twisted_bilayer(**kwargs)


def test_non_hexagonal_layers_are_rejected():
    with pytest.raises(ValueError, match="hexagonal"):
        twisted_bilayer(fcc100("Cu", (1, 1, 1)), 1, 2, distance=2.0)
    rectangular = Atoms("C", cell=[[2.0, 0, 0], [0, 3.0, 0], [0, 0, 10]], pbc=True)
    with pytest.raises(ValueError, match="hexagonal"):
        standard_layer(rectangular)
    with pytest.raises(ValueError, match="interlayer distance"):
        twisted_bilayer(mx2("MoS2"), 1, 2)

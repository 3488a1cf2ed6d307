"""Perturbed supercells and interlayer-shift grids: reproducible, bounded, never overlapping."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, make_supercell, mx2

from aiida_deeph.structures import (
    interlayer_shift_grid,
    minimum_distance,
    perturbed_supercells,
    find_top_layer,
    twisted_bilayer,
)


@pytest.fixture
def silicon():
    return bulk("Si", "diamond", a=5.43)


@pytest.fixture
def bilayer():
    return twisted_bilayer("hbn", 1, 2)


def _reference(atoms, matrix):
    return make_supercell(atoms, np.asarray(matrix), order="atom-major")


def test_supercell_size_and_uniform_bound(silicon):
    samples = perturbed_supercells(silicon, (2, 2, 2), 4, displacement=0.1, seed=1)
    reference = _reference(silicon, np.diag([2, 2, 2]))
    assert len(samples) == 4 and all(len(s) == 16 for s in samples)
    for index, sample in enumerate(samples):
        delta = sample.positions - reference.positions
        assert np.abs(delta).max() <= 0.1 and np.abs(delta).max() > 0.05
        assert np.allclose(sample.cell, reference.cell)
        assert sample.info["sample"] == index and sample.info["distribution"] == "uniform"


def test_gaussian_displacements_have_sigma(silicon):
    (sample,) = perturbed_supercells(silicon, 4, 1, displacement=0.05, distribution="gaussian", seed=3)
    delta = sample.positions - _reference(silicon, np.diag([4, 4, 4])).positions
    assert np.std(delta) == pytest.approx(0.05, rel=0.1)


def test_same_seed_same_samples_other_seed_differs(silicon):
    kwargs = {"displacement": 0.1, "strain": (-0.02, 0.02)}
    first = perturbed_supercells(silicon, (2, 1, 1), 3, seed=42, **kwargs)
    again = perturbed_supercells(silicon, (2, 1, 1), 3, seed=42, **kwargs)
    other = perturbed_supercells(silicon, (2, 1, 1), 3, seed=43, **kwargs)
    for a, b, c in zip(first, again, other):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell, b.cell)
        assert not np.allclose(a.positions, c.positions)


def test_random_strain_is_symmetric_and_bounded(silicon):
    for sample in perturbed_supercells(silicon, 1, 5, displacement=0.0, strain=(-0.03, 0.01), seed=0):
        strain = sample.info["strain"]
        assert np.allclose(strain, strain.T)
        assert strain.min() >= -0.03 and strain.max() <= 0.01
        assert np.allclose(sample.cell, silicon.cell @ (np.eye(3) + strain))


def test_slab_strain_leaves_the_vacuum_axis_alone():
    sheet = mx2("MoS2", vacuum=7.5)
    for sample in perturbed_supercells(sheet, (2, 2, 1), 3, displacement=0.0, strain=(-0.05, 0.05), seed=0):
        assert np.allclose(sample.info["strain"][2], 0) and np.allclose(sample.info["strain"][:, 2], 0)
        assert np.allclose(sample.cell[2], sheet.cell[2])
        assert np.allclose(np.sort(sample.positions[:, 2]), np.sort(np.tile(sheet.positions[:, 2], 4)))


def test_output_is_grouped_by_element():
    sheet = mx2("MoS2", vacuum=7.5)  # sheet * (2, 1, 1) interleaves Mo, S, S, Mo, S, S
    (sample,) = perturbed_supercells(sheet * (2, 1, 1), (2, 2, 1), 1, seed=0)
    assert sample.get_chemical_symbols() == ["Mo"] * 8 + ["S"] * 16


def test_too_large_amplitude_raises_instead_of_overlapping(silicon):
    with pytest.raises(ValueError, match="lower the displacement"):
        perturbed_supercells(silicon, 2, 5, displacement=1.5, seed=0)
    with pytest.raises(ValueError, match="lower the displacement"):
        perturbed_supercells(silicon, 2, 1, displacement=0.1, seed=0, min_distance=2.3)
    for sample in perturbed_supercells(silicon, 2, 5, displacement=0.3, seed=0):
        assert minimum_distance(sample) > 0.5 * minimum_distance(silicon)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"displacement": -0.1}, "displacement must be >= 0"),
        ({"distribution": "cauchy"}, "distribution"),
        ({"strain": (0.02, -0.02)}, "strain"),
        ({"supercell": (2, 2)}, "supercell"),
        ({"supercell": (2.0, 2.0, 1.0)}, "supercell"),
        ({"supercell": (2, -1, 1)}, "positive determinant"),
        ({"min_distance": 0.0}, "min_distance"),
    ],
)
def test_bad_input_raises(silicon, kwargs, message):
    with pytest.raises(ValueError, match=message):
        perturbed_supercells(silicon, **{"n_samples": 2, **kwargs})


def test_shift_grid_moves_only_the_top_layer(bilayer):
    shifted = interlayer_shift_grid(bilayer, 3, 2)
    assert len(shifted) == 6
    top = bilayer.get_tags() == 1
    cell = np.asarray(bilayer.cell)
    for atoms, (s1, s2) in zip(shifted, [(i / 3, j / 2) for i in range(3) for j in range(2)]):
        assert atoms.info["shift"] == pytest.approx((s1, s2))
        assert np.allclose(atoms.positions[~top], bilayer.positions[~top])
        frac = np.linalg.solve(cell.T, (atoms.positions[top] - bilayer.positions[top]).T).T
        # Shift modulo the lattice (wrapping), none along z.
        offset = frac - [s1, s2, 0]
        assert np.allclose(offset, np.round(offset), atol=1e-8) and np.allclose(frac[:, 2], 0)


def test_top_layer_detection(bilayer):
    assert np.array_equal(find_top_layer(bilayer), bilayer.get_tags() == 1)
    threshold = bilayer.positions[:, 2].mean()
    assert np.array_equal(find_top_layer(bilayer, threshold), bilayer.get_tags() == 1)
    by_mask = interlayer_shift_grid(bilayer, 2, 1, top_layer_mask=bilayer.get_tags() == 1)
    by_gap = interlayer_shift_grid(bilayer, 2, 1)
    assert all(np.allclose(a.positions, b.positions) for a, b in zip(by_mask, by_gap))


def test_perturbed_shift_grid_is_reproducible(bilayer):
    first = interlayer_shift_grid(bilayer, 2, 2, displacement=0.05, seed=5)
    again = interlayer_shift_grid(bilayer, 2, 2, displacement=0.05, seed=5)
    plain = interlayer_shift_grid(bilayer, 2, 2)
    for a, b, c in zip(first, again, plain):
        assert np.array_equal(a.positions, b.positions)
        assert 0 < np.abs(a.positions - c.positions).max() <= 0.05 + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n1": 0}, "n1 and n2"),
        ({"z_threshold": 100.0}, "does not split"),
        ({"top_layer_mask": [True, False]}, "boolean mask"),
        ({"displacement": -1.0}, "displacement"),
    ],
)
def test_shift_grid_bad_input(bilayer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        interlayer_shift_grid(bilayer, **{"n1": 2, "n2": 2, **kwargs})


def test_single_plane_has_no_top_layer():
    sheet = twisted_bilayer("graphene", 1, 2)
    with pytest.raises(ValueError, match="one plane"):
        find_top_layer(sheet[sheet.get_tags() == 0])

"""Point defects: vacancies, substitutions, interstitials and random alloys, always grouped by element."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, graphene, mx2

from aiida_deeph.structures import (
    group_by_element,
    interstitial,
    largest_empty_site,
    random_alloy,
    substitution,
    vacancy,
)


@pytest.fixture
def mos2():
    """3×3 MoS2 supercell in ase's interleaved order (Mo, S, S, Mo, ...)."""
    return mx2("MoS2", vacuum=7.5) * (3, 3, 1)


def _is_grouped(symbols: list[str]) -> bool:
    blocks = [s for i, s in enumerate(symbols) if i == 0 or symbols[i - 1] != s]
    return len(blocks) == len(set(blocks))


def test_group_by_element_is_stable_in_first_appearance_order(mos2):
    grouped = group_by_element(mos2)
    assert grouped.get_chemical_symbols() == ["Mo"] * 9 + ["S"] * 18
    assert np.allclose(grouped.positions[:9], mos2.positions[::3])
    assert group_by_element(mos2, ["S"]).get_chemical_symbols() == ["S"] * 18 + ["Mo"] * 9


def test_vacancy(mos2):
    defective = vacancy(mos2, 5)
    assert len(defective) == 26 and defective.get_chemical_formula() == "Mo9S17"
    assert _is_grouped(defective.get_chemical_symbols())
    assert defective.info == {"defect": "vacancy", "site": 5, "element": "S"}
    assert not np.isclose(np.linalg.norm(defective.positions - mos2.positions[5], axis=1), 0).any()
    assert len(mos2) == 27  # input untouched


def test_several_vacancies(mos2):
    defective = vacancy(mos2, [0, 1])
    assert defective.get_chemical_formula() == "Mo8S17"
    assert defective.info["site"] == [0, 1] and defective.info["element"] == ["Mo", "S"]


def test_substitution(mos2):
    defective = substitution(mos2, 1, "Se")
    assert defective.get_chemical_symbols() == ["Mo"] * 9 + ["S"] * 17 + ["Se"]  # new elements last
    assert np.allclose(defective.positions[-1], mos2.positions[1])
    assert defective.info == {"defect": "substitution", "site": 1, "element": "S", "substitute": "Se"}


def test_interstitial_at_given_position(mos2):
    defective = interstitial(mos2, "Li", (0.5, 0.5, 0.5))
    assert defective.get_chemical_symbols()[-1] == "Li" and len(defective) == 28
    assert np.allclose(defective.positions[-1], np.array([0.5, 0.5, 0.5]) @ mos2.cell)
    assert defective.info["defect"] == "interstitial" and defective.info["position"] == [0.5, 0.5, 0.5]


def test_largest_empty_site_in_fcc_is_octahedral():
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    frac, distance = largest_empty_site(copper)
    assert distance == pytest.approx(1.8, abs=1e-3)  # a / 2
    assert np.abs(2 * frac - np.round(2 * frac)).max() < 1e-3  # octahedral sites sit on multiples of a / 2


def test_interstitial_in_a_slab_stays_in_the_layer():
    sheet = graphene("C2", a=2.46, vacuum=6.0) * (3, 3, 1)
    defective = interstitial(sheet, "H")
    # Hexagon centre, in the plane of the sheet: the vacuum is not searched.
    assert defective.info["nearest_distance"] == pytest.approx(2.46 / np.sqrt(3), abs=1e-3)
    assert defective.positions[-1, 2] == pytest.approx(sheet.positions[0, 2])
    assert _is_grouped(defective.get_chemical_symbols())


def test_random_alloy_is_reproducible(mos2):
    alloy = random_alloy(mos2, "Mo", "W", 0.34, seed=7)
    assert alloy.get_chemical_symbols() == ["Mo"] * 6 + ["S"] * 18 + ["W"] * 3
    assert alloy.info["concentration"] == pytest.approx(1 / 3) and len(alloy.info["sites"]) == 3
    assert alloy.info["sites"] == random_alloy(mos2, "Mo", "W", 0.34, seed=7).info["sites"]
    others = {tuple(random_alloy(mos2, "Mo", "W", 0.34, seed=s).info["sites"]) for s in range(10)}
    assert len(others) > 1


@pytest.mark.parametrize(("concentration", "count"), [(0.0, 0), (1.0, 9)])
def test_random_alloy_limits(mos2, concentration, count):
    assert random_alloy(mos2, "Mo", "W", concentration, seed=0).get_chemical_symbols().count("W") == count


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: vacancy(a, 27), r"site must be an index"),
        (lambda a: vacancy(a, -1), r"site must be an index"),
        (lambda a: vacancy(a, [3, 3]), "duplicate"),
        (lambda a: vacancy(a, list(range(27))), "every atom"),
        (lambda a: substitution(a, 0, "Mo"), "already holds"),
        (lambda a: substitution(a, 0, "Xx"), "unknown element"),
        (lambda a: interstitial(a, "Li", a.get_scaled_positions()[4] + 0.01), "from an atom"),
        (lambda a: interstitial(a, "Li", (0.5, 0.5)), "3 finite fractional"),
        (lambda a: largest_empty_site(a, grid_spacing=0), "grid_spacing"),
        (lambda a: random_alloy(a, "Mo", "W", 1.5), r"\[0, 1\]"),
        (lambda a: random_alloy(a, "Mo", "W", -0.1), r"\[0, 1\]"),
        (lambda a: random_alloy(a, "Fe", "W", 0.5), "no Fe atoms"),
        (lambda a: random_alloy(a, "Mo", "Mo", 0.5), "must differ"),
    ],
)
def test_bad_input_raises(mos2, call, message):
    with pytest.raises(ValueError, match=message):
        call(mos2)

"""Orbital bases as irreps and the per-pair output irreps."""

from __future__ import annotations

import pytest
from e3nn import o3

from aiida_deeph.ml.basis import OrbitalBasis, coupled_irreps, shell_irreps, spin_coupled_irreps


def test_shell_irreps_keep_basis_order_and_parity():
    assert shell_irreps([0, 0, 1, 1, 2]) == o3.Irreps("1x0e+1x0e+1x1o+1x1o+1x2e")
    assert shell_irreps([3]).dim == 7


@pytest.mark.parametrize(
    "l1, l2, parity, expected",
    [
        (1, 2, True, "1o+2o+3o"),  # 1⊗2 = 1⊕2⊕3, parity (−1)^3
        (1, 1, True, "0e+1e+2e"),
        (2, 2, True, "0e+1e+2e+3e+4e"),
        (1, 1, False, "0e+1o+2e"),  # SO(3)-only labelling (−1)^l3
        (0, 3, True, "3o"),
    ],
)
def test_coupled_irreps(l1, l2, parity, expected):
    assert coupled_irreps(l1, l2, parity) == o3.Irreps(expected)
    assert coupled_irreps(l1, l2, parity).dim == (2 * l1 + 1) * (2 * l2 + 1)


def test_spin_coupling_keeps_parity():
    assert spin_coupled_irreps(0, -1) == o3.Irreps("1o")
    assert spin_coupled_irreps(2, 1) == o3.Irreps("1e+2e+3e")


@pytest.mark.parametrize("spinful", [False, True])
def test_output_slots_cover_every_block_entry_once(spinful):
    basis = OrbitalBasis({"Mo": [0, 0, 0, 0, 1, 1, 2, 2, 3], "S": [0, 0, 1, 1, 2]}, spinful=spinful)
    for parity in (True, False):
        irreps = basis.output_irreps(parity)
        assert irreps == irreps.sort().irreps.simplify()
        for _, el_i, el_j in basis.pair_types():
            slots = basis.output_slots(el_i, el_j, parity)
            columns = [c for slot in slots for c in range(slot.column, slot.column + 2 * slot.l + 1)]
            assert len(columns) == len(set(columns)), "two irreps share a feature"
            assert max(columns) < irreps.dim
            assert len(columns) == (4 if spinful else 1) * basis.num_orbitals(el_i) * basis.num_orbitals(el_j)
    assert basis.required_lmax == (7 if spinful else 6)


def test_sizes_and_indices():
    basis = OrbitalBasis({"C": [0, 0, 1, 1, 2], "N": [0, 1]})
    assert basis.num_orbitals("C") == 13 and basis.num_orbitals("N") == 4
    assert basis.block_size == 13
    assert OrbitalBasis(basis.shells, spinful=True).block_size == 26
    assert [t for t, *_ in basis.pair_types()] == [0, 1, 2, 3]
    assert list(basis.pair_types())[1] == (1, "C", "N")
    assert basis.irreps("N") == o3.Irreps("0e+1o")
    assert basis.required_lmax == 4
    # the largest multiplicity of 0e comes from C–C: 2 s + 2 p + 1 d shells pair up into 4+4+1 = 9 scalars
    assert basis.output_irreps().count(o3.Irrep("0e")) == 9
    with pytest.raises(ValueError, match="not in the basis"):
        basis.element_index("Fe")
    with pytest.raises(ValueError, match="empty"):
        OrbitalBasis({})

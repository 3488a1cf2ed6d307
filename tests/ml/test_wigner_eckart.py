"""Wigner–Eckart head: exact inverse of the irreps projection, equivariance, Hermiticity, spin–orbit blocks."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from aiida_deeph.ml.basis import OrbitalBasis
from aiida_deeph.ml.wigner import orbital_rotation
from aiida_deeph.ml.wigner_eckart import WignerEckartHead, assembly_matrix, hermitian_symmetrize

torch.set_num_threads(1)

BASES = {
    "s..f, several zetas": {"Mo": [0, 0, 0, 0, 1, 1, 2, 2, 3], "S": [0, 0, 1, 1, 2]},
    "C/N": {"C": [0, 0, 1, 1, 2], "N": [0, 1]},
    "f only": {"Bi": [3, 1]},
}


pytestmark = pytest.mark.usefixtures("float64")


def random_blocks(head: WignerEckartHead, pair_type: torch.Tensor) -> torch.Tensor:
    size = head.basis.block_size
    dtype = torch.complex128 if head.basis.spinful else torch.float64
    blocks = torch.zeros(len(pair_type), size, size, dtype=dtype)
    for e, t in enumerate(pair_type.tolist()):
        rows, cols = head.shapes[t]
        blocks[e, :rows, :cols] = torch.randn(rows, cols, dtype=dtype)
    return blocks


@pytest.mark.parametrize("spinful", [False, True])
@pytest.mark.parametrize("parity", [True, False])
@pytest.mark.parametrize("name", BASES)
def test_projection_then_assembly_reproduces_any_block(name, parity, spinful):
    head = WignerEckartHead(OrbitalBasis(BASES[name], spinful=spinful), parity=parity)
    pair_type = torch.arange(head.basis.num_pair_types).repeat(2)
    blocks = random_blocks(head, pair_type)
    features = head.project(blocks, pair_type)
    assert features.shape == (len(pair_type), head.num_features)
    assert torch.allclose(head.assemble(features, pair_type), blocks, atol=1e-12)


@pytest.mark.parametrize("spinful", [False, True])
def test_assembly_matrix_is_orthogonal(spinful):
    basis = OrbitalBasis(BASES["C/N"], spinful=spinful)
    rows, columns, values = assembly_matrix(basis, "C", "N")
    matrix = torch.zeros(rows.max() + 1, basis.output_irreps().dim, dtype=torch.as_tensor(values).dtype)
    matrix[rows, columns] = torch.as_tensor(values)
    assert matrix.shape[0] == (4 if spinful else 1) * 13 * 4
    used = matrix.abs().sum(0) > 0
    assert int(used.sum()) == matrix.shape[0]  # square on the features the pair uses
    gram = matrix[:, used].conj().T @ matrix[:, used]
    assert torch.allclose(gram, torch.eye(len(gram), dtype=gram.dtype), atol=1e-12)


def test_s_s_block_is_the_scalar():
    head = WignerEckartHead(OrbitalBasis({"H": [0]}))
    features = torch.tensor([[2.5]])
    assert head.assemble(features, torch.tensor([0])).item() == pytest.approx(2.5)


def block_rotations(basis: OrbitalBasis, rotation: torch.Tensor, pair_type: int) -> tuple[torch.Tensor, torch.Tensor]:
    el_i, el_j = divmod(pair_type, basis.num_elements)
    d_i = orbital_rotation(basis.shells[basis.elements[el_i]], rotation, basis.spinful)
    d_j = orbital_rotation(basis.shells[basis.elements[el_j]], rotation, basis.spinful)
    return d_i, d_j


@pytest.mark.parametrize("spinful", [False, True])
@pytest.mark.parametrize("parity", [True, False])
def test_rotating_the_irreps_rotates_the_blocks(parity, spinful):
    """Features rotated by D(R) give blocks D_i H D_j† (with SU(2) on spin); improper R only when parity is tracked."""
    basis = OrbitalBasis(BASES["s..f, several zetas"], spinful=spinful)
    head = WignerEckartHead(basis, parity=parity)
    pair_type = torch.arange(basis.num_pair_types)
    features = torch.randn(len(pair_type), head.num_features)
    rotation = o3.rand_matrix() * (-1 if parity else 1)
    irreps = head.irreps_out + head.irreps_out if spinful else head.irreps_out
    d_features = irreps.D_from_matrix(rotation[[1, 2, 0]][:, [1, 2, 0]])
    before, after = head.assemble(features, pair_type), head.assemble(features @ d_features.T, pair_type)
    for e, t in enumerate(pair_type.tolist()):
        d_i, d_j = block_rotations(basis, rotation, t)
        rows, cols = head.shapes[t]
        expected = d_i @ before[e, :rows, :cols] @ d_j.conj().T
        assert torch.allclose(after[e, :rows, :cols], expected, atol=1e-11)


@pytest.mark.parametrize("spinful", [False, True])
def test_head_output_is_hermitian_by_construction(spinful):
    head = WignerEckartHead(OrbitalBasis(BASES["C/N"], spinful=spinful))
    # edges: (C0→N1), (N1→C0), on-site C0, on-site N1
    pair_type = torch.tensor([1, 2, 0, 3])
    reverse = torch.tensor([1, 0, 2, 3])
    blocks = head(torch.randn(4, head.num_features), pair_type, reverse)
    assert torch.equal(blocks[0], blocks[1].conj().T)
    assert torch.equal(blocks[2], blocks[2].conj().T)
    rows, cols = head.shapes[1]
    assert blocks[0, rows:].abs().sum() == 0 and blocks[0, :, cols:].abs().sum() == 0  # padding stays zero
    symmetric = hermitian_symmetrize(blocks, reverse)
    assert torch.allclose(symmetric, blocks)

"""Wigner-D in the DeepH (y, z, x) convention, edge frames, spin rotations."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from aiida_deeph.ml.wigner import (
    edge_wigner,
    orbital_rotation,
    rotate_from_edge_frame,
    rotate_to_edge_frame,
    spin_rotation,
    to_e3nn,
    wigner_D,
)

torch.set_num_threads(1)
PERM = [1, 2, 0]


pytestmark = pytest.mark.usefixtures("float64")


def rotations() -> torch.Tensor:
    """Random proper and improper rotations plus ones at the Euler poles (about z, i.e. e3nn's y)."""
    angle = torch.tensor(0.7)
    about_z = torch.tensor([[angle.cos(), -angle.sin(), 0], [angle.sin(), angle.cos(), 0], [0, 0, 1]])
    special = torch.stack([torch.eye(3), about_z, torch.diag(torch.tensor([1.0, -1.0, -1.0])), -about_z])
    random = o3.rand_matrix(20)
    return torch.cat([special, random, -random[:5]])


@pytest.mark.parametrize("l", range(7))
def test_wigner_D_matches_e3nn_with_permutation(l):
    rotation = rotations()
    reference = o3.Irrep(l, (-1) ** l).D_from_matrix(rotation[:, PERM][:, :, PERM])
    assert torch.allclose(wigner_D(l, rotation), reference, atol=1e-12)


@pytest.mark.parametrize("l", range(5))
def test_wigner_D_rotates_real_harmonics_in_deeph_order(l):
    """Y_l(R v) = D^l(R) Y_l(v) with Y in the m = −l..l (p = y, z, x) order: the DeepH block convention.
    Improper R included: Y_l has the parity (−1)^l of a shell."""
    vectors = torch.randn(10, 3)
    for rotation in rotations():
        rotated = o3.spherical_harmonics(l, to_e3nn(vectors @ rotation.T), normalize=True)
        original = o3.spherical_harmonics(l, to_e3nn(vectors), normalize=True)
        assert torch.allclose(rotated, original @ wigner_D(l, rotation).T, atol=1e-13)


def test_p_shell_order_is_y_z_x():
    rotation = o3.rand_matrix()
    assert torch.allclose(wigner_D(1, rotation), rotation[PERM][:, PERM], atol=1e-13)


def test_edge_wigner_aligns_the_polar_axis_with_each_edge():
    vectors = torch.cat([
        torch.randn(30, 3),
        torch.tensor([[0.0, 0.0, 1.5], [0.0, 0.0, -2.0], [1e-9, 0.0, 1.0], [0.0, -1e-12, -1.0], [2.0, 0.0, 0.0]]),
    ])
    lmax = 6
    pole = o3.spherical_harmonics(list(range(lmax + 1)), torch.tensor([0.0, 1.0, 0.0]), normalize=True)
    target = o3.spherical_harmonics(list(range(lmax + 1)), to_e3nn(vectors), normalize=True)
    wigner = edge_wigner(vectors, lmax)
    aligned = rotate_from_edge_frame(pole.expand(len(vectors), -1)[:, :, None], wigner)[:, :, 0]
    assert torch.allclose(aligned, target, atol=1e-12)
    for d in wigner:
        assert torch.allclose(d @ d.transpose(1, 2), torch.eye(d.shape[1]).expand_as(d), atol=1e-12)


def test_edge_frame_round_trip():
    features = torch.randn(7, 16, 5)
    wigner = edge_wigner(torch.randn(7, 3), 3)
    assert torch.allclose(rotate_from_edge_frame(rotate_to_edge_frame(features, wigner), wigner), features, atol=1e-13)


def test_spin_rotation_is_the_su2_cover():
    pauli = torch.tensor([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=torch.complex128)
    vector = torch.randn(3)
    for rotation in rotations():
        u = spin_rotation(rotation)
        proper = rotation * torch.det(rotation)
        lhs = u @ torch.einsum("c,cij->ij", vector.to(torch.complex128), pauli) @ u.conj().T
        rhs = torch.einsum("c,cij->ij", (proper @ vector).to(torch.complex128), pauli)
        assert torch.allclose(lhs, rhs, atol=1e-13)
        assert torch.allclose(u @ u.conj().T, torch.eye(2, dtype=u.dtype), atol=1e-13)


def test_orbital_rotation_is_block_diagonal_and_spin_major():
    rotation = o3.rand_matrix()
    shells = [0, 1, 2]
    matrix = orbital_rotation(shells, rotation)
    assert matrix.shape == (9, 9)
    assert torch.allclose(matrix[1:4, 1:4], wigner_D(1, rotation))
    spinful = orbital_rotation(shells, rotation, spinful=True)
    u = spin_rotation(rotation)
    assert torch.allclose(spinful[:9, 9:], u[0, 1] * matrix.to(u.dtype))

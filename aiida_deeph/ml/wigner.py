"""Wigner-D matrices in the e3nn basis of the DeepH blocks, global and per edge.

Convention (checked in ``tests/ml/test_wigner.py``): DeepH blocks are in the real-harmonic order m = −l..l,
which is e3nn's order once Cartesian vectors are fed to e3nn permuted (x, y, z) → (y, z, x) (:func:`to_e3nn`).
A physical rotation R (Cartesian, possibly improper) then acts on a shell l as
``D^l = o3.Irrep(l, (-1)**l).D_from_matrix(P R Pᵀ)`` and on a block as H'_ij = D_i H_ij D_jᵀ (:func:`orbital_rotation`).

Edge frames (eSCN): in e3nn coordinates the polar axis is y, where Y_lm is nonzero only for m = 0. For an edge
vector u, D(α, β, 0) with u = R(α, β, 0) ŷ maps the edge frame to the global one; features are rotated into the
frame with Dᵀ and back with D (:func:`rotate_to_edge_frame`, :func:`rotate_from_edge_frame`). The roll γ about the
edge is left at 0: the SO(2) layers commute with it. D is built as Y(α) J Y(β) Jᵀ, with Y(θ) the closed-form
rotation about y (cosines on the diagonal, sines on the anti-diagonal) and J a constant matrix turning rotations
about y into rotations about x, so a whole graph costs one small batched matmul per l, no matrix exponentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

_E3NN_ORDER = [1, 2, 0]  # (x, y, z) → (y, z, x)


def to_e3nn(vectors: torch.Tensor) -> torch.Tensor:
    """Cartesian (x, y, z) → e3nn coordinates (y, z, x), the basis in which e3nn's l = 1 is p = (y, z, x)."""
    return vectors[..., _E3NN_ORDER]


def _e3nn_matrix(rotation: torch.Tensor) -> torch.Tensor:
    return rotation[..., _E3NN_ORDER, :][..., :, _E3NN_ORDER]  # P R Pᵀ


def _euler_angles(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α, β, γ, det) with det·R = R_y(α) R_x(β) R_y(γ) in e3nn coordinates, i.e. R_z(α) R_y(β) R_z(γ) in Cartesian
    ones. Same angles as ``o3.matrix_to_angles`` but from atan2 only, so they stay exact near the poles."""
    sign = torch.det(rotation).sign()
    matrix = _e3nn_matrix(rotation * sign[..., None, None])
    column = matrix[..., :, 1]  # R ŷ = (sin α sin β, cos β, cos α sin β)
    alpha = torch.atan2(column[..., 0], column[..., 2])
    beta = torch.atan2(torch.hypot(column[..., 0], column[..., 2]), column[..., 1])
    rest = o3.matrix_x(beta).transpose(-1, -2) @ o3.matrix_y(alpha).transpose(-1, -2) @ matrix  # = R_y(γ)
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma, sign


def wigner_D(l: int, rotation: torch.Tensor | np.ndarray) -> torch.Tensor:
    """D^l of a Cartesian rotation (det ±1, shell parity (−1)^l) in the DeepH/e3nn orbital order, (..., 2l+1, 2l+1);
    equal to ``o3.Irrep(l, (-1)**l).D_from_matrix(P R Pᵀ)`` to machine precision for every rotation."""
    rotation = torch.as_tensor(rotation, dtype=torch.get_default_dtype())
    alpha, beta, gamma, sign = _euler_angles(rotation)
    d = _wigner_from_angles(l, alpha.reshape(-1), beta.reshape(-1), gamma.reshape(-1))
    d = d.reshape(*alpha.shape, 2 * l + 1, 2 * l + 1)
    return d * sign[..., None, None] if l % 2 else d


def spin_rotation(rotation: torch.Tensor | np.ndarray) -> torch.Tensor:
    """SU(2) matrix U, U (σ·a) U† = σ·(R a), on (up, down); improper R act as det·R (spin is axial)."""
    rotation = torch.as_tensor(rotation, dtype=torch.get_default_dtype())
    alpha, beta, gamma, _ = _euler_angles(rotation)

    def about(axis: str, angle: torch.Tensor) -> torch.Tensor:  # exp(−i θ σ_axis / 2)
        c, s = torch.cos(angle / 2), torch.sin(angle / 2)
        zero = torch.zeros_like(c)
        if axis == "z":
            rows = [[torch.complex(c, -s), torch.complex(zero, zero)], [torch.complex(zero, zero), torch.complex(c, s)]]
        else:
            rows = [[torch.complex(c, zero), torch.complex(-s, zero)], [torch.complex(s, zero), torch.complex(c, zero)]]
        return torch.stack([torch.stack(row, -1) for row in rows], -2)

    return about("z", alpha) @ about("y", beta) @ about("z", gamma)


def orbital_rotation(shells: Sequence[int], rotation: torch.Tensor | np.ndarray, spinful: bool = False) -> torch.Tensor:
    """Matrix acting on one atom's orbitals: block-diagonal D^l over shells; ⊗ SU(2) (spin-major) when spinful."""
    matrix = torch.block_diag(*[wigner_D(l, rotation) for l in shells])
    if not spinful:
        return matrix
    spin = spin_rotation(rotation)
    return torch.kron(spin, matrix.to(spin.dtype))


@lru_cache(maxsize=None)
def _swap_y_to_x(l: int) -> torch.Tensor:
    """J = D^l(Q) for the rotation Q (−90° about e3nn z) taking ŷ to x̂: exp(β X_x) = J Y(β) Jᵀ. float64, cached."""
    quarter = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
    try:
        return o3.Irrep(l, 1).D_from_matrix(quarter)
    finally:
        torch.set_default_dtype(previous)


def _rotate_about_y(angle: torch.Tensor, l: int, matrix: torch.Tensor) -> torch.Tensor:
    """Y(angle) @ matrix for a batch of angles (E,) and matrices (E or 1, 2l+1, k): the e3nn real-basis rotation
    about y has cos(mθ) on the diagonal and −sin(mθ) at (m, −m)."""
    m = torch.arange(-l, l + 1, dtype=angle.dtype, device=angle.device)
    phase = angle[:, None] * m
    return torch.cos(phase)[:, :, None] * matrix - torch.sin(phase)[:, :, None] * matrix.flip(-2)


def _wigner_from_angles(
    l: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor | None = None
) -> torch.Tensor:
    """Batched D^l(α, β, γ) = Y(α) J Y(β) Jᵀ Y(γ), (E, 2l+1, 2l+1); γ = None means 0."""
    swap = _swap_y_to_x(l).to(dtype=alpha.dtype, device=alpha.device)
    right = swap.T.unsqueeze(0)
    if gamma is not None:
        eye = torch.eye(2 * l + 1, dtype=alpha.dtype, device=alpha.device).unsqueeze(0)
        right = swap.T @ _rotate_about_y(gamma, l, eye)
    return _rotate_about_y(alpha, l, swap @ _rotate_about_y(beta, l, right))


def edge_wigner(vectors: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Per-edge D^l(α, β, 0), l = 0..lmax, each (E, 2l+1, 2l+1): the edge frame → global rotation of every edge."""
    u = to_e3nn(vectors)
    alpha = torch.atan2(u[:, 0], u[:, 2])
    beta = torch.atan2(torch.hypot(u[:, 0], u[:, 2]), u[:, 1])
    return [_wigner_from_angles(l, alpha, beta) for l in range(lmax + 1)]


def rotate_to_edge_frame(features: torch.Tensor, wigner: Sequence[torch.Tensor]) -> torch.Tensor:
    """(E, (L+1)², C) global → edge frame: Dᵀ x per l (the m-ordered SO(3)-array layout)."""
    return torch.cat([torch.bmm(d.transpose(1, 2), features[:, l * l : (l + 1) ** 2]) for l, d in enumerate(wigner)], 1)


def rotate_from_edge_frame(features: torch.Tensor, wigner: Sequence[torch.Tensor]) -> torch.Tensor:
    """(E, (L+1)², C) edge frame → global: D x per l."""
    return torch.cat([torch.bmm(d, features[:, l * l : (l + 1) ** 2]) for l, d in enumerate(wigner)], 1)


__all__ = [
    "edge_wigner",
    "orbital_rotation",
    "rotate_from_edge_frame",
    "rotate_to_edge_frame",
    "spin_rotation",
    "to_e3nn",
    "wigner_D",
]

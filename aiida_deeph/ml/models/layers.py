"""Small equivariant building blocks shared by the DeepH-2 and DeepH-E3 models.

Two feature layouts are used:

* the SO(3) array (eSCN/EquiformerV2 style): ``(..., (L+1)², C)``, every l = 0..L with the same C channels,
  components l-major and m = −l..l inside each l (e3nn's order, see :mod:`aiida_deeph.ml.wigner`);
* e3nn's flat irreps layout ``(..., irreps.dim)`` for the tensor-product baseline (:class:`IrrepsLayerNorm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn


def degree_index(lmax: int) -> torch.Tensor:
    """l of each component of the SO(3) array: [0, 1, 1, 1, 2, ...], length (L+1)²."""
    return torch.repeat_interleave(torch.arange(lmax + 1), 2 * torch.arange(lmax + 1) + 1)


class GaussianBasis(nn.Module):
    """Gaussians of the distance on [0, cutoff] (DeepH-E3's edge embedding); no envelope, so DFT pairs longer than
    the cutoff still see a (small, smooth) signal instead of a hard zero."""

    def __init__(self, cutoff: float, num_basis: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_basis))
        self.width = cutoff / (num_basis - 1)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((distances[:, None] - self.centers) / self.width) ** 2)


class MLP(nn.Sequential):
    """Linear–SiLU–…–Linear on invariant features (radial weights, attention logits); ``sizes`` = [in, hidden…, out]."""

    def __init__(self, sizes: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for n, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if n:
                layers.append(nn.SiLU())
            layers.append(nn.Linear(size_in, size_out))
        super().__init__(*layers)


class SO3Linear(nn.Module):
    """Channel mixing with one weight matrix per l on the SO(3) array; bias on l = 0 only (equivariant)."""

    def __init__(self, lmax: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.weight = nn.Parameter(torch.randn(lmax + 1, in_channels, out_channels) / in_channels**0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, {self.weight.shape[1]} → {self.weight.shape[2]} channels"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[..., l * l : (l + 1) ** 2, :] @ self.weight[l] for l in range(self.lmax + 1)]
        parts[0] = parts[0] + self.bias
        return torch.cat(parts, -2)


class EquivariantLayerNorm(nn.Module):
    """Layer norm on the SO(3) array: l = 0 as a usual LayerNorm over channels; each l > 0 divided by its RMS over
    (m, channels), which is rotation-invariant, then scaled per (l, channel)."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = degree_index(lmax)
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("scalar", (degree == 0).to(torch.get_default_dtype())[:, None], persistent=False)
        self.register_buffer("multiplicity", 2.0 * torch.arange(lmax + 1) + 1, persistent=False)

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, channels={self.weight.shape[1]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.scalar * x[..., :1, :].mean(-1, keepdim=True)  # centre the scalars only
        power = x.pow(2).mean(-1)  # (..., K)
        per_l = power.new_zeros(*power.shape[:-1], self.lmax + 1).index_add(-1, self.degree, power) / self.multiplicity
        scale = torch.rsqrt(per_l + self.eps)[..., self.degree, None] * self.weight[self.degree]
        return x * scale + self.scalar * self.bias


class GatedFeedForward(nn.Module):
    """SO3Linear → gate → SO3Linear: scalars through SiLU, each l > 0 channel times a sigmoid gate computed from the
    input scalars (the gate nonlinearity of e3nn/NequIP, in the SO(3)-array layout)."""

    def __init__(self, lmax: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.up = SO3Linear(lmax, channels, hidden)
        self.gates = nn.Linear(channels, lmax * hidden)
        self.down = SO3Linear(lmax, hidden, channels)
        self.register_buffer("gate_index", degree_index(lmax)[1:] - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        gates = torch.sigmoid(self.gates(x[..., 0, :])).unflatten(-1, (self.lmax, self.hidden))
        # SiLU(h₀) = h₀ σ(h₀): one product applies the activation and the gates together
        gates = torch.cat([torch.sigmoid(h[..., :1, :]), gates[..., self.gate_index, :]], -2)
        return self.down(h * gates)


class SO3Readout(nn.Module):
    """SO(3) array (E, (L+1)², C) → e3nn flat features of ``irreps_out`` (one irrep per l), ``copies`` times
    concatenated (real and imaginary parts with spin): one linear C → copies · mul per l."""

    def __init__(self, lmax: int, channels: int, irreps_out: o3.Irreps, copies: int = 1) -> None:
        super().__init__()
        degrees = [mul_ir.ir.l for mul_ir in irreps_out]
        if degrees != sorted(set(degrees)) or max(degrees) > lmax:
            raise ValueError(f"readout needs sorted irreps with one entry per l <= {lmax}, got {irreps_out}")
        self.irreps_out, self.copies = irreps_out, copies
        self.linears = nn.ModuleList(nn.Linear(channels, copies * mul, bias=ir.l == 0) for mul, ir in irreps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        for (mul, ir), linear in zip(self.irreps_out, self.linears):
            y = linear(x[:, ir.l**2 : (ir.l + 1) ** 2])  # (E, 2l+1, copies·mul)
            parts.append(y.unflatten(-1, (self.copies, mul)).permute(0, 2, 3, 1).flatten(2))
        return torch.cat(parts, -1).flatten(1)


class IrrepsLayerNorm(nn.Module):
    """Layer norm for e3nn flat features (DeepH-E3's e3LayerNorm): per irrep type, centre the scalars, divide by
    the RMS over (multiplicity, components), scale per channel; bias on even scalars only."""

    def __init__(self, irreps: o3.Irreps, eps: float = 1e-6) -> None:
        super().__init__()
        self.irreps, self.eps = o3.Irreps(irreps), eps
        self.weight = nn.Parameter(torch.ones(self.irreps.num_irreps))
        self.bias = nn.Parameter(torch.zeros(sum(mul for mul, ir in self.irreps if ir == o3.Irrep("0e"))))

    def extra_repr(self) -> str:
        return f"{self.irreps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts, channel, bias = [], 0, 0
        for (mul, ir), block in zip(self.irreps, self.irreps.slices()):
            field = x[:, block].unflatten(-1, (mul, ir.dim))
            if ir.l == 0:
                field = field - field.mean(1, keepdim=True)
            field = field * torch.rsqrt(field.pow(2).mean((1, 2), keepdim=True) + self.eps)
            field = field * self.weight[channel : channel + mul, None]
            if ir == o3.Irrep("0e"):
                field = field + self.bias[bias : bias + mul, None]
                bias += mul
            channel += mul
            parts.append(field.flatten(1))
        return torch.cat(parts, -1)


def scatter_softmax(logits: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of (E, H) logits over the edges that share ``index`` (the attention of one node over its neighbours)."""
    expanded = index[:, None].expand_as(logits)
    peak = logits.new_full((num_segments, logits.shape[1]), -torch.inf)
    peak = peak.scatter_reduce(0, expanded, logits.detach(), "amax", include_self=True)
    weights = torch.exp(logits - peak[index])
    total = weights.new_zeros(num_segments, logits.shape[1]).index_add(0, index, weights)
    return weights / total[index]

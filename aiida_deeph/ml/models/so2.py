"""SO(2) convolution in the edge frame (eSCN, Passaro & Zitnick 2023), as plain batched matmuls.

Once a feature is rotated so that its edge points along the polar axis (:func:`~aiida_deeph.ml.wigner.
rotate_to_edge_frame`), the Clebsch–Gordan product with the edge's spherical harmonics only couples components of
equal |m|: the m = 0 components of all l mix through one real matrix, and each (+m, −m) pair of all l ≥ |m| mixes
like a complex number, (y₊ + i y₋) = (W_r + i W_i)(x₊ + i x₋). That is the most general linear map commuting with
rolls about the edge, so the layer is SO(3)-equivariant once rotated back, at O(L³) instead of the O(L⁶) of a full
tensor product. As in EquiformerV2, a radial MLP of the edge length scales every input (l, |m|, channel)
component beforehand (the same factor for +m and −m).

One matmul per |m| ≤ ``mmax`` over all edges; components with |m| > mmax come out zero (eSCN's m truncation).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP


def _component(l: int, m: int) -> int:
    return l * l + l + m


class SO2Convolution(nn.Module):
    """(E, (L+1)², C_in) in the edge frame + radial features (E, R) → (E, (L+1)², C_out) in the edge frame."""

    def __init__(
        self,
        lmax: int,
        in_channels: int,
        out_channels: int,
        radial_features: int,
        radial_hidden: int,
        mmax: int | None = None,
    ) -> None:
        super().__init__()
        self.lmax = lmax
        self.mmax = lmax if mmax is None else mmax
        if not 0 <= self.mmax <= lmax:
            raise ValueError(f"mmax must be in 0..{lmax}, got {self.mmax}")
        self.in_channels, self.out_channels = in_channels, out_channels
        # Gather order: m = 0 for all l, then (+1 for l ≥ 1), (−1 for l ≥ 1), (+2 ...), ...
        gather, radial_row = [_component(l, 0) for l in range(lmax + 1)], list(range(lmax + 1))
        rows = lmax + 1
        for m in range(1, self.mmax + 1):
            degrees = range(m, lmax + 1)
            gather += [_component(l, m) for l in degrees] + [_component(l, -m) for l in degrees]
            radial_row += 2 * list(range(rows, rows + len(degrees)))  # ±m share one radial factor
            rows += len(degrees)
        size = (lmax + 1) ** 2
        rest = sorted(set(range(size)) - set(gather))  # |m| > mmax: zero output
        self.register_buffer("gather", torch.tensor(gather), persistent=False)
        self.register_buffer("radial_row", torch.tensor(radial_row), persistent=False)
        self.register_buffer("scatter", torch.argsort(torch.tensor(gather + rest)), persistent=False)
        self.radial = MLP([radial_features, radial_hidden, rows * in_channels])
        self.linear_m0 = nn.Linear((lmax + 1) * in_channels, (lmax + 1) * out_channels)
        self.linear_m = nn.ModuleList(
            nn.Linear((lmax + 1 - m) * in_channels, 2 * (lmax + 1 - m) * out_channels, bias=False)  # [W_r | W_i]
            for m in range(1, self.mmax + 1)
        )

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, mmax={self.mmax}, {self.in_channels} → {self.out_channels} channels"

    def forward(self, x: torch.Tensor, radial: torch.Tensor) -> torch.Tensor:
        edges = len(x)
        scale = self.radial(radial).unflatten(-1, (-1, self.in_channels))  # (E, rows, C_in)
        x = x[:, self.gather] * scale[:, self.radial_row]
        n = self.lmax + 1
        parts = [self.linear_m0(x[:, :n].flatten(1)).unflatten(-1, (n, self.out_channels))]
        start = n
        for m, linear in enumerate(self.linear_m, 1):
            n = self.lmax + 1 - m
            pair = x[:, start : start + 2 * n].unflatten(1, (2, n)).flatten(2)  # (E, ±, n·C_in)
            real, imag = linear(pair).chunk(2, -1)  # W_r x±, W_i x±
            parts.append((real[:, 0] - imag[:, 1]).unflatten(-1, (n, self.out_channels)))  # y₊ = W_r x₊ − W_i x₋
            parts.append((real[:, 1] + imag[:, 0]).unflatten(-1, (n, self.out_channels)))  # y₋ = W_r x₋ + W_i x₊
            start += 2 * n
        out = torch.cat(parts, 1)
        missing = (self.lmax + 1) ** 2 - out.shape[1]
        if missing:
            out = torch.cat([out, out.new_zeros(edges, missing, self.out_channels)], 1)
        return out[:, self.scatter]

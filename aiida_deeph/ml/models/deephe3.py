"""DeepH-E3 baseline (Gong et al., Nat. Commun. 14, 2848 (2023)): e3nn tensor-product convolutions with gates.

Model API (shared with :mod:`.deeph2`): ``model(graph) -> (E, B, B)`` Hermitian blocks packed exactly like
``graph.target`` (see :mod:`aiida_deeph.ml.graph`); :func:`aiida_deeph.ml.graph.unpack_blocks` turns them into a
:class:`~aiida_deeph.io.BlockMatrix`.

Same inputs and head as DeepH-2: element embedding on nodes, Gaussian distance basis + element-pair embedding on
edges, readout to the output irreps and the Wigner–Eckart head. Each block (all edges, on-site included, whose
spherical harmonics reduce to Y_0):

* node update: x_i ← SC(x_i, Z_i) + LN(Σ_j Conv([x_i, x_j, e_ij] ⊗ Y(r̂_ij)) / √deg_i),
* edge update: e_ij ← SC(e_ij, Z_i Z_j) + LN(Conv([x_i, x_j, e_ij] ⊗ Y(r̂_ij))) with the new x,

where Conv is a "uvu" tensor product whose per-edge weights come from a radial MLP, followed by a linear map and a
gate, and SC is a species-conditioned self-connection (fully connected TP with the one-hot species).
Parity is tracked (features carry both parities of every l), so the model is O(3)-equivariant.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from ..basis import OrbitalBasis
from ..graph import CrystalGraph
from ..wigner import to_e3nn
from ..wigner_eckart import WignerEckartHead
from .layers import GaussianBasis, IrrepsLayerNorm, MLP


class EquivariantConvolution(nn.Module):
    """Linear → (features ⊗ Y, uvu, per-edge weights from the radial MLP) → Linear → Gate, to ``irreps_out``."""

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_out: o3.Irreps, num_radial: int,
                 radial_hidden: int) -> None:
        super().__init__()
        channels = max(mul for mul, _ in irreps_out)
        types = [ir for _, ir in o3.Irreps(irreps_in).simplify()]
        irreps_hidden = o3.Irreps([(channels, ir) for ir in types]).sort().irreps.simplify()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e")
        wanted = {ir for _, ir in scalars + gates + gated}
        mid, instructions = [], []
        for i1, (mul, ir1) in enumerate(irreps_hidden):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir in ir1 * ir2:
                    if ir in wanted:
                        instructions.append((i1, i2, len(mid), "uvu", True))
                        mid.append((mul, ir))
        self.pre = o3.Linear(irreps_in, irreps_hidden)
        self.tp = o3.TensorProduct(irreps_hidden, irreps_sh, o3.Irreps(mid), instructions, shared_weights=False,
                                   internal_weights=False)
        self.radial = MLP([num_radial, radial_hidden, self.tp.weight_numel])
        self.post = o3.Linear(self.tp.irreps_out, scalars + gates + gated)
        acts = [nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
        self.gate = Gate(scalars, acts, gates, [torch.sigmoid], gated)
        if self.gate.irreps_out != irreps_out:
            raise ValueError(f"irreps_out must list scalars first: {irreps_out}")

    def forward(self, features: torch.Tensor, sh: torch.Tensor, radial: torch.Tensor) -> torch.Tensor:
        return self.gate(self.post(self.tp(self.pre(features), sh, self.radial(radial))))


class E3Block(nn.Module):
    """One node update then one edge update (see the module docstring)."""

    def __init__(self, irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps,
                 num_elements: int, num_radial: int, radial_hidden: int) -> None:
        super().__init__()
        self.node_conv = EquivariantConvolution(irreps_node + irreps_node + irreps_edge, irreps_sh, irreps_out,
                                                num_radial, radial_hidden)
        self.node_norm = IrrepsLayerNorm(irreps_out)
        self.node_self = o3.FullyConnectedTensorProduct(irreps_node, f"{num_elements}x0e", irreps_out)
        self.edge_conv = EquivariantConvolution(irreps_out + irreps_out + irreps_edge, irreps_sh, irreps_out,
                                                num_radial, radial_hidden)
        self.edge_norm = IrrepsLayerNorm(irreps_out)
        self.edge_self = o3.FullyConnectedTensorProduct(irreps_edge, f"{num_elements**2}x0e", irreps_out)

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        graph: CrystalGraph,
        sh: torch.Tensor,
        radial: torch.Tensor,
        species: torch.Tensor,
        pairs: torch.Tensor,
        inv_sqrt_degree: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = graph.edge_index
        message = self.node_conv(torch.cat([x[i], x[j], e], -1), sh, radial)
        total = message.new_zeros(len(x), message.shape[1]).index_add(0, i, message) * inv_sqrt_degree[:, None]
        x = self.node_self(x, species) + self.node_norm(total)
        e = self.edge_self(e, pairs) + self.edge_norm(self.edge_conv(torch.cat([x[i], x[j], e], -1), sh, radial))
        return x, e


class DeepHE3(nn.Module):
    """Tensor-product network + Wigner–Eckart head. ``lmax`` defaults to what the basis needs."""

    def __init__(
        self,
        basis: OrbitalBasis,
        lmax: int | None = None,
        channels: int = 16,
        num_blocks: int = 3,
        cutoff: float = 8.0,
        num_radial: int = 32,
        radial_hidden: int = 64,
        sh_lmax: int | None = None,
        parity: bool = True,
    ) -> None:
        super().__init__()
        self.basis = basis
        self.lmax = basis.required_lmax if lmax is None else lmax
        if self.lmax < basis.required_lmax:
            raise ValueError(f"lmax={self.lmax} cannot express the blocks of {basis}: needs >= {basis.required_lmax}")
        self.irreps_feature = o3.Irreps(
            [(channels, (l, p)) for l in range(self.lmax + 1) for p in ((1, -1) if parity else ((-1) ** l,))]
        ).sort().irreps.simplify()
        self.irreps_sh = o3.Irreps.spherical_harmonics(min(self.lmax, 4) if sh_lmax is None else sh_lmax)
        scalars = o3.Irreps(f"{channels}x0e")
        self.node_embedding = nn.Embedding(basis.num_elements, channels)
        self.pair_embedding = nn.Embedding(basis.num_pair_types, channels)
        self.radial_basis = GaussianBasis(cutoff, num_radial)
        self.edge_embedding = MLP([num_radial, radial_hidden, channels])
        self.blocks = nn.ModuleList(
            E3Block(scalars if n == 0 else self.irreps_feature, scalars if n == 0 else self.irreps_feature,
                    self.irreps_feature, self.irreps_sh, basis.num_elements, num_radial, radial_hidden)
            for n in range(num_blocks)
        )
        self.head = WignerEckartHead(basis, parity=parity)
        copies = self.head.irreps_out + self.head.irreps_out if basis.spinful else self.head.irreps_out  # [re, im]
        self.readout = o3.Linear(self.irreps_feature, copies)

    def forward(self, graph: CrystalGraph) -> torch.Tensor:
        distance = graph.edge_vec.norm(dim=1)
        radial = self.radial_basis(distance)
        sh = o3.spherical_harmonics(self.irreps_sh, to_e3nn(graph.edge_vec), normalize=True, normalization="component")
        dtype = radial.dtype
        species = nn.functional.one_hot(graph.species, self.basis.num_elements).to(dtype)
        pairs = nn.functional.one_hot(graph.pair_type, self.basis.num_pair_types).to(dtype)
        degree = torch.bincount(graph.edge_index[0], minlength=graph.num_nodes).clamp(min=1).to(dtype)
        x = self.node_embedding(graph.species)
        e = self.edge_embedding(radial) + self.pair_embedding(graph.pair_type)
        for block in self.blocks:
            x, e = block(x, e, graph, sh, radial, species, pairs, degree.rsqrt())
        return self.head.blocks(self.readout(e), graph)

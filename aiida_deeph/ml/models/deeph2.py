"""DeepH-2-style equivariant local-coordinate transformer (ELCT; Wang et al., arXiv:2401.17015).

Model API (shared with :mod:`.deephe3`): ``model(graph) -> (E, B, B)`` Hermitian blocks packed exactly like
``graph.target`` (see :mod:`aiida_deeph.ml.graph`); :func:`aiida_deeph.ml.graph.unpack_blocks` turns them into a
:class:`~aiida_deeph.io.BlockMatrix`.

Features are SO(3) arrays (:mod:`.layers`) on nodes (atoms) and edges (atom pairs, which become the H blocks).
Each block, pre-norm transformer style:

1. message of every off-site edge from x_i, x_j and e_ij (summed after per-l linear maps), rotated into the edge
   frame (Wigner-D built once per graph), one SO(2) convolution (:mod:`.so2`) with radial weights, giving a value
   and an edge update;
2. multi-head attention of atom i over its neighbours, logits from the m = 0 (rotation-invariant) components of the
   edge-frame message; values rotated back and summed; then a gated feed-forward on the nodes;
3. edge update: the second half of the convolution for off-site edges; on-site edges (i, i, 0), which have no
   frame, mix [x_i, e_ii] per l, x_i taken after this block's messages (so that the on-site blocks see the
   atom's environment from the first block on); then a gated feed-forward on the edges.

Parity is not tracked (SO(3) only, as DeepH-2's ``consider_parity = false``): the head reads output irreps by l.
The readout + Wigner–Eckart head (:mod:`aiida_deeph.ml.wigner_eckart`) turn final edge features into blocks, through
the head's target normalisation (per pair type, site and irrep; fitted to the training targets by the trainer).
There is no layer norm before the readout: it would divide out the magnitude of each edge's features, which then
has to be rebuilt from ratios of channels; the residual stream, Y_lm(r̂) × radial embedding included, reaches the
readout as it is (half the error of the normed readout when memorising a real CP2K structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from ..basis import OrbitalBasis
from ..graph import CrystalGraph
from ..wigner import rotate_from_edge_frame, rotate_to_edge_frame, to_e3nn
from ..wigner_eckart import WignerEckartHead
from .layers import (
    EquivariantLayerNorm,
    GatedFeedForward,
    GaussianBasis,
    MLP,
    SO3Linear,
    SO3Readout,
    degree_index,
    scatter_softmax,
)
from .so2 import SO2Convolution


@dataclass
class EdgeGeometry:
    """What every block needs about the off-site and on-site edges, computed once per forward."""

    offsite: torch.Tensor  # (E',) edge indices
    center: torch.Tensor  # (E',) atom i, which receives the message
    neighbour: torch.Tensor  # (E',) atom j
    wigner: list[torch.Tensor]  # per l, (E', 2l+1, 2l+1)
    radial: torch.Tensor  # (E', num_radial)
    onsite: torch.Tensor  # (E_0,) edge indices
    onsite_atom: torch.Tensor  # (E_0,)


class ELCTBlock(nn.Module):
    """One transformer block updating node and edge features (see the module docstring)."""

    def __init__(self, lmax: int, channels: int, num_heads: int, ffn_hidden: int, num_radial: int, radial_hidden: int,
                 mmax: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be a multiple of num_heads ({num_heads})")
        self.lmax, self.channels, self.num_heads = lmax, channels, num_heads
        self.norm_node = EquivariantLayerNorm(lmax, channels)
        self.norm_edge = EquivariantLayerNorm(lmax, channels)
        # [x_i, x_j, e_ij] enter the convolution as one C-channel sum of per-l linear maps (the node terms are
        # computed per atom): a third of the cost of convolving the 3C concatenation.
        self.source_center = SO3Linear(lmax, channels, channels)
        self.source_neighbour = SO3Linear(lmax, channels, channels)
        self.source_edge = SO3Linear(lmax, channels, channels)
        self.conv = SO2Convolution(lmax, channels, 2 * channels, num_radial, radial_hidden, mmax)
        self.attention = MLP([(lmax + 1) * channels, channels, num_heads])
        self.node_out = SO3Linear(lmax, channels, channels)
        self.onsite = SO3Linear(lmax, 2 * channels, channels)
        self.norm_node_ffn = EquivariantLayerNorm(lmax, channels)
        self.ffn_node = GatedFeedForward(lmax, channels, ffn_hidden)
        self.norm_edge_ffn = EquivariantLayerNorm(lmax, channels)
        self.ffn_edge = GatedFeedForward(lmax, channels, ffn_hidden)
        self.register_buffer("m0", torch.tensor([l * l + l for l in range(lmax + 1)]), persistent=False)

    def forward(self, x: torch.Tensor, e: torch.Tensor, geo: EdgeGeometry) -> tuple[torch.Tensor, torch.Tensor]:
        xn, en = self.norm_node(x), self.norm_edge(e)
        source = (self.source_center(xn)[geo.center] + self.source_neighbour(xn)[geo.neighbour]
                  + self.source_edge(en[geo.offsite]))
        local = self.conv(rotate_to_edge_frame(source, geo.wigner), geo.radial)
        logits = self.attention(local[:, self.m0, : self.channels].flatten(1))  # m = 0: invariant
        weights = scatter_softmax(logits, geo.center, len(x))
        message, edge_update = rotate_from_edge_frame(local, geo.wigner).chunk(2, -1)
        message = (message.unflatten(-1, (self.num_heads, -1)) * weights[:, None, :, None]).flatten(-2)
        x = x + self.node_out(torch.zeros_like(x).index_add(0, geo.center, message.to(x.dtype)))
        xm = self.norm_node_ffn(x)
        x = x + self.ffn_node(xm)
        # on-site edges read the atom *after* this block's messages: its environment, already in the first block
        onsite_update = self.onsite(torch.cat([xm[geo.onsite_atom], en[geo.onsite]], -1))
        e = e.index_add(0, geo.offsite, edge_update.to(e.dtype)).index_add(0, geo.onsite, onsite_update.to(e.dtype))
        e = e + self.ffn_edge(self.norm_edge_ffn(e))
        return x, e


class DeepH2(nn.Module):
    """ELCT network + Wigner–Eckart head. ``lmax`` defaults to what the basis needs (2·l_max, +1 with SOC)."""

    def __init__(
        self,
        basis: OrbitalBasis,
        lmax: int | None = None,
        channels: int = 32,
        num_blocks: int = 3,
        num_heads: int = 2,
        cutoff: float = 8.0,
        num_radial: int = 32,
        radial_hidden: int = 64,
        ffn_hidden: int | None = None,
        mmax: int | None = None,
    ) -> None:
        super().__init__()
        self.basis = basis
        self.lmax = basis.required_lmax if lmax is None else lmax
        if self.lmax < basis.required_lmax:
            raise ValueError(f"lmax={self.lmax} cannot express the blocks of {basis}: needs >= {basis.required_lmax}")
        self.channels = channels
        self.node_embedding = nn.Embedding(basis.num_elements, channels)
        self.pair_embedding = nn.Embedding(basis.num_pair_types, channels)
        self.radial_basis = GaussianBasis(cutoff, num_radial)
        self.edge_embedding = MLP([num_radial, radial_hidden, (self.lmax + 1) * channels])
        self.blocks = nn.ModuleList(
            ELCTBlock(self.lmax, channels, num_heads, ffn_hidden or 2 * channels, num_radial, radial_hidden,
                      self.lmax if mmax is None else mmax)
            for _ in range(num_blocks)
        )
        self.head = WignerEckartHead(basis, parity=False)
        self.readout = SO3Readout(self.lmax, channels, self.head.irreps_out, copies=2 if basis.spinful else 1)
        self.register_buffer("degree", degree_index(self.lmax), persistent=False)

    def geometry(self, graph: CrystalGraph) -> EdgeGeometry:
        offsite, onsite = graph.offsite, graph.onsite
        return EdgeGeometry(
            offsite=offsite,
            center=graph.edge_index[0, offsite],
            neighbour=graph.edge_index[1, offsite],
            wigner=graph.wigner(self.lmax),
            radial=self.radial_basis(graph.edge_vec[offsite].norm(dim=1)),
            onsite=onsite,
            onsite_atom=graph.edge_index[0, onsite],
        )

    def embed(self, graph: CrystalGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial features: element embedding on node scalars; on edges, Y_lm(r̂) times a radial MLP per (l, channel)
        plus an element-pair embedding on the scalars (on-site edges: Y_l>0(0) = 0)."""
        size = (self.lmax + 1) ** 2
        x = self.node_embedding.weight.new_zeros(graph.num_nodes, size, self.channels)
        x[:, 0] = self.node_embedding(graph.species)
        sh = o3.spherical_harmonics(
            list(range(self.lmax + 1)), to_e3nn(graph.edge_vec), normalize=True, normalization="component"
        )
        radial = self.edge_embedding(self.radial_basis(graph.edge_vec.norm(dim=1))).unflatten(-1, (self.lmax + 1, -1))
        e = sh[:, :, None] * radial[:, self.degree]
        e[:, 0] = e[:, 0] + self.pair_embedding(graph.pair_type)
        return x, e

    def forward(self, graph: CrystalGraph) -> torch.Tensor:
        geo = self.geometry(graph)
        x, e = self.embed(graph)
        for block in self.blocks:
            x, e = block(x, e, geo)
        return self.edge_blocks(e, graph)

    def edge_blocks(self, e: torch.Tensor, graph: CrystalGraph) -> torch.Tensor:
        """Final edge features of every edge of ``graph`` → its Hermitian blocks (readout and head)."""
        return self.head.blocks(self.readout(e), graph)

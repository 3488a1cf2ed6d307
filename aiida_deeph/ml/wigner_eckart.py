"""Wigner–Eckart head: per-edge output irreps → H_ij(R) blocks, grouped by element pair.

For a shell pair (l1, l2) the block is H[m1, m2] = Σ_l3 Σ_m3 Q[m1, m2, m3] y_l3[m3] with
Q = √(2 l3 + 1) · ``o3.wigner_3j(l1, l2, l3)``: over l3 = |l1 − l2| … l1 + l2 the Q's form an orthogonal change of
basis, so :meth:`WignerEckartHead.project` (y = Qᵀ H) is the exact inverse and y has the norm of H. With spin–orbit
coupling the spin-major (2 n_i, 2 n_j) complex block is Σ_k σ_k/√2 ⊗ K_k over (1, σ_y, σ_z, σ_x) (the Pauli vector in
e3nn order transforms as l = 1); K_0 is built as above and (K_y, K_z, K_x) from irreps l4 ∈ l3 ⊗ 1 through
Q(l3, 1, l4), as in DeepH-E3. The real and imaginary parts come from two real copies of the output irreps.

For each ordered element pair all of this is one constant, very sparse matrix W (block entries × output features;
Mo–Mo with s4p2d2f1: 2,528 nonzeros out of 729 × 625), stored as (row, column, value) triplets, so the assembly of
all edges of that pair is one gather, one product and one ``index_add``: no Python loop over edges or shells.
Hermiticity H_ij(R) = H_ji(−R)† is then imposed exactly by H_e = ½ (A_e + A_rev(e)†), which keeps equivariance
because both terms transform alike.

Target normalisation (:class:`OutputNormalization`, owned by the head): the network's raw outputs are O(1); the
head maps them to physical units per (element pair, on-site / off-site) and per output irrep as
y = g(r) ⊙ (μ + σ ⊙ raw), with μ a shift on the invariant (0e) irreps only, σ one scale per irrep instance and,
off site, g(r) = exp(c₀ + c₁ r + c₂ r²) per irrep instance, the fitted decay of that irrep's part of the blocks
with the bond length (on site g = 1): the network's outputs are O(1) for near and far pairs alike. All are
rotation-invariant functions of the pair type and the distance, so equivariance is untouched; they are computed
from the training targets (:func:`fit_output_normalization`) and kept as buffers in the ``state_dict`` so an exported
model reproduces them. The defaults (μ = 0, σ = 1, g = 1) are the identity.

Layout of the result: (E, B, B) with B = ``basis.block_size``; each edge's block sits in the top-left corner, the
rest is zero, exactly as :mod:`aiida_deeph.ml.graph` packs the targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .basis import OrbitalBasis

# Pauli matrices scaled to unit Frobenius norm, in the order (1, σ_y, σ_z, σ_x) = (spin 0, spin 1 in e3nn order).
_PAULI = np.array(
    [[[1, 0], [0, 1]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]], [[0, 1], [1, 0]]], dtype=np.complex128
) / math.sqrt(2)


@lru_cache(maxsize=None)
def _coupling(l1: int, l2: int, l3: int) -> np.ndarray:
    return math.sqrt(2 * l3 + 1) * o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()


def assembly_matrix(
    basis: OrbitalBasis, element_i: str, element_j: str, parity: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W with vec(H_ij) = W y as sparse triplets ``(rows, columns, values)``.

    Rows index the row-major entries of the (n_i, n_j) block, or of the spin-major (2 n_i, 2 n_j) block with spin;
    columns index :meth:`OrbitalBasis.output_irreps`. Values are real without spin and complex with spin, where W
    acts on y = y_re + i y_im.
    """
    n_i, n_j = basis.num_orbitals(element_i), basis.num_orbitals(element_j)
    spin = 2 if basis.spinful else 1
    rows, columns, values = [], [], []
    for slot in basis.output_slots(element_i, element_j, parity):
        (l1, i0, _), (l2, j0, _) = slot.shell_i, slot.shell_j
        if not basis.spinful:
            local = _coupling(l1, l2, slot.l)[None, :, None]  # (s, a, t, b, d) with one spin value
        elif slot.spin is None:  # orbital irrep with spin 0: 1/√2 ⊗ K_0
            local = np.einsum("st,abd->satbd", _PAULI[0], _coupling(l1, l2, slot.l))
        else:  # l4 = slot.l from l3 = slot.spin coupled with the Pauli vector: Σ_k σ_k/√2 ⊗ K_k
            orbital = np.einsum("abc,ckd->kabd", _coupling(l1, l2, slot.spin), _coupling(slot.spin, 1, slot.l))
            local = np.einsum("kst,kabd->satbd", _PAULI[1:], orbital)
        s, a, t, b, d = np.nonzero(np.abs(local) > 1e-14)
        rows.append((s * n_i + i0 + a) * (spin * n_j) + t * n_j + j0 + b)
        columns.append(slot.column + d)
        values.append(local[s, a, t, b, d])
    values = np.concatenate(values)
    return np.concatenate(rows), np.concatenate(columns), values if basis.spinful else values.real


def hermitian_symmetrize(blocks: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
    """½ (A_e + A_rev(e)†) on padded (E, B, B) blocks; the transpose of a top-left block is top-left again."""
    return 0.5 * (blocks + blocks[reverse].transpose(1, 2).conj())


class OutputNormalization(nn.Module):
    """raw (E, F) → g(r) ⊙ (μ + σ ⊙ raw) per (pair type, site), site 0 = on-site, 1 = off-site (module docstring).

    Buffers (persistent), per feature column but constant within each irrep instance: ``shift`` μ and ``scale`` σ
    (P, 2, F), μ non-zero on 0e columns only; ``decay`` (P, F, 4) = (c₀, c₁, c₂, r₀) of the off-site decay
    log g(r) = c₀ + c₁ ρ + c₂ ρ², ρ = max(r, r₀), non-increasing for ρ ≥ r₀ by construction of the fit.
    """

    def __init__(self, irreps_out: o3.Irreps, copies: int, num_pair_types: int) -> None:
        super().__init__()
        dim = irreps_out.dim
        instance, invariant, count = [], [], 0
        for mul, ir in irreps_out:
            for _ in range(mul):
                instance += [count] * ir.dim
                invariant += [ir.l == 0 and ir.p == 1] * ir.dim
                count += 1
        instance = torch.tensor(instance)
        self.num_instances = copies * count
        self.register_buffer("instance", torch.cat([instance + c * count for c in range(copies)]), persistent=False)
        self.register_buffer("invariant", torch.tensor(invariant * copies), persistent=False)
        self.register_buffer("shift", torch.zeros(num_pair_types, 2, copies * dim))
        self.register_buffer("scale", torch.ones(num_pair_types, 2, copies * dim))
        self.register_buffer("decay", torch.zeros(num_pair_types, copies * dim, 4))

    def log_decay(self, distance: torch.Tensor, pair_type: torch.Tensor) -> torch.Tensor:
        """log g (E, F) of off-site edges."""
        c = self.decay[pair_type]
        rho = torch.maximum(distance[:, None], c[..., 3])
        return c[..., 0] + rho * (c[..., 1] + rho * c[..., 2])

    def forward(self, raw: torch.Tensor, pair_type: torch.Tensor, distance: torch.Tensor,
                site: torch.Tensor) -> torch.Tensor:
        y = raw * self.scale[pair_type, site] + self.shift[pair_type, site]
        return y * torch.exp(self.log_decay(distance, pair_type) * site[:, None])  # g = 1 on site


def _fit_decay(distance: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(c₀, c₁, c₂, r₀) of log size ≈ c₀ + c₁ r + c₂ r², non-increasing for r ≥ r₀ = min r; lower degree if not."""
    if size.max() <= 1e-12:
        return np.array([0.0, 0.0, 0.0, 0.0])
    log = np.log(np.maximum(size, 1e-8 * size.max()))
    r0 = float(distance.min())
    for degree in (2, 1):
        if len(np.unique(np.round(distance, 6))) <= degree:
            continue
        coef = np.polynomial.polynomial.polyfit(distance, log, degree)
        coef = np.concatenate([coef, np.zeros(3 - len(coef))])
        if coef[2] <= 0 and coef[1] + 2 * coef[2] * r0 <= 0:
            return np.array([*coef, r0])
    return np.array([float(np.log(np.sqrt(np.mean(size**2)))), 0.0, 0.0, r0])


@torch.no_grad()
def fit_output_normalization(head: "WignerEckartHead", graphs: Callable[[], Iterable]) -> None:
    """Set ``head.normalization`` from the targets of ``graphs()`` (called twice; CrystalGraphs with target/mask).

    Pass 1 fits, per pair type and output irrep, the off-site decay g(r) to the RMS of the irrep's components on
    each edge; pass 2 takes, per (pair type, site), the g²-weighted mean of y/g on the 0e columns and RMS of
    (y/g − μ) per irrep instance."""
    norm = head.normalization
    pairs, features = norm.shift.shape[0], norm.shift.shape[2]
    instance = norm.instance.cpu()
    width = torch.zeros(norm.num_instances, dtype=torch.float64).index_add_(
        0, instance, torch.ones(len(instance), dtype=torch.float64))

    def edges(graph):
        valid = graph.mask.flatten(1).any(1)
        target = graph.target.to(torch.complex128 if head.basis.spinful else torch.float64)
        y = head.project(target, graph.pair_type.to(target.device)).double()
        site = torch.ones(graph.num_edges, dtype=torch.long, device=y.device)
        site[graph.onsite] = 0
        distance = graph.edge_vec.double().norm(dim=1)
        return y[valid].cpu(), graph.pair_type[valid].cpu(), site[valid].cpu(), distance[valid].cpu()

    collected: dict[int, list] = {}
    for graph in graphs():
        y, pair_type, site, distance = edges(graph)
        off = site == 1
        sizes = torch.zeros(len(y), norm.num_instances, dtype=torch.float64).index_add_(1, instance, y * y) / width
        for t in pair_type[off].unique().tolist():
            chosen = off & (pair_type == t)
            collected.setdefault(t, []).append((distance[chosen], sizes[chosen].sqrt()))
    decay = torch.zeros(pairs, norm.num_instances, 4, dtype=torch.float64)
    for t, parts in collected.items():
        distance, sizes = (torch.cat(part).numpy() for part in zip(*parts))
        for k in range(norm.num_instances):
            decay[t, k] = torch.as_tensor(_fit_decay(distance, sizes[:, k]))
    norm.decay.copy_(decay[:, instance])
    decay = norm.decay.double().cpu()  # what the forward pass will use

    # Weighted by g²: μ and σ are the least-squares fits of y ≈ g (μ + σ ε), so that far blocks, whose tiny
    # targets (noise, truncation) the fitted decay describes least well, do not dominate them.
    weight = torch.zeros(pairs, 2, features, dtype=torch.float64)  # Σ g²
    cross = torch.zeros(pairs, 2, features, dtype=torch.float64)  # Σ g y
    squares = torch.zeros(pairs, 2, features, dtype=torch.float64)  # Σ y²
    for graph in graphs():
        y, pair_type, site, distance = edges(graph)
        c = decay[pair_type]
        rho = torch.maximum(distance[:, None], c[..., 3])
        g = torch.exp((c[..., 0] + rho * (c[..., 1] + rho * c[..., 2])) * site[:, None])
        key = pair_type * 2 + site
        weight.view(-1, features).index_add_(0, key, g * g)
        cross.view(-1, features).index_add_(0, key, g * y)
        squares.view(-1, features).index_add_(0, key, y * y)
    seen = weight[..., 0] > 0
    total = weight.clamp(min=1e-300)
    mean = torch.where(norm.invariant.cpu(), cross / total, torch.zeros(()))
    variance = (squares - 2 * mean * cross + mean * mean * weight) / total  # of y/g − μ, per column
    per_instance = torch.zeros(pairs, 2, norm.num_instances, dtype=torch.float64).index_add_(2, instance, variance)
    sigma = (per_instance / width).clamp(min=0).sqrt()
    floor = (1e-3 * sigma.amax(-1, keepdim=True)).clamp(min=1e-12)
    sigma = torch.maximum(sigma, floor)[..., instance]
    norm.shift.copy_(torch.where(seen[..., None], mean, torch.zeros(())).to(norm.shift.dtype))
    norm.scale.copy_(torch.where(seen[..., None], sigma, torch.ones(())).to(norm.scale.dtype))


class WignerEckartHead(nn.Module):
    """Output irreps per edge → Hermitian H_ij(R) blocks, padded to (E, B, B).

    Input features are ``irreps_out`` in the e3nn layout; with spin, two copies concatenated: [real, imaginary]
    (``num_features`` = 2 · dim). ``parity=False`` for networks that only know SO(3) (irreps labelled (−1)^l).
    """

    def __init__(self, basis: OrbitalBasis, parity: bool = True) -> None:
        super().__init__()
        self.basis = basis
        self.parity = parity
        self.irreps_out = basis.output_irreps(parity)
        self.num_features = self.irreps_out.dim * (2 if basis.spinful else 1)
        spin = 2 if basis.spinful else 1
        self.shapes = [
            (spin * basis.num_orbitals(el_i), spin * basis.num_orbitals(el_j)) for _, el_i, el_j in basis.pair_types()
        ]
        dtype = torch.get_default_dtype()
        for pair_type, el_i, el_j in basis.pair_types():
            rows, columns, values = assembly_matrix(basis, el_i, el_j, parity)
            self.register_buffer(f"rows_{pair_type}", torch.as_tensor(rows), persistent=False)
            self.register_buffer(f"columns_{pair_type}", torch.as_tensor(columns), persistent=False)
            # Real buffers only: Module.to(dtype) would drop the imaginary part of a complex buffer.
            self.register_buffer(f"real_{pair_type}", torch.as_tensor(values.real, dtype=dtype), persistent=False)
            if basis.spinful:
                self.register_buffer(f"imag_{pair_type}", torch.as_tensor(values.imag, dtype=dtype), persistent=False)
        self.normalization = OutputNormalization(self.irreps_out, 2 if basis.spinful else 1, basis.num_pair_types)

    def extra_repr(self) -> str:
        return f"{self.basis}, irreps_out={self.irreps_out}, parity={self.parity}"

    def _triplets(self, pair_type: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values = getattr(self, f"real_{pair_type}")
        if self.basis.spinful:
            values = torch.complex(values, getattr(self, f"imag_{pair_type}"))
        return getattr(self, f"rows_{pair_type}"), getattr(self, f"columns_{pair_type}"), values

    def _complex(self, features: torch.Tensor) -> torch.Tensor:
        """[real, imaginary] features → complex y with spin; unchanged without."""
        if not self.basis.spinful:
            return features
        real, imag = features.chunk(2, -1)
        return torch.complex(real, imag)

    def assemble(self, features: torch.Tensor, pair_type: torch.Tensor) -> torch.Tensor:
        """Blocks A_e = W y_e without symmetrisation; (E, B, B), complex with spin."""
        y = self._complex(features)
        size = self.basis.block_size
        out = y.new_zeros(len(y), size, size)
        for t, (n_rows, n_cols) in enumerate(self.shapes):
            edges = torch.nonzero(pair_type == t).squeeze(1)
            if len(edges) == 0:
                continue
            rows, columns, values = self._triplets(t)
            flat = y.new_zeros(len(edges), n_rows * n_cols).index_add(1, rows, (y[edges][:, columns] * values).to(y.dtype))
            out[edges, :n_rows, :n_cols] = flat.view(len(edges), n_rows, n_cols)
        return out

    def forward(self, features: torch.Tensor, pair_type: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        """Hermitian blocks (E, B, B): H_ij(R) = H_ji(−R)† exactly (``reverse[e]`` is the edge (j, i, −R))."""
        return hermitian_symmetrize(self.assemble(features, pair_type), reverse)

    def blocks(self, raw: torch.Tensor, graph) -> torch.Tensor:
        """Raw network outputs of every edge of ``graph`` → Hermitian blocks, through :attr:`normalization`."""
        site = torch.ones(graph.num_edges, dtype=torch.long, device=raw.device)
        site[graph.onsite] = 0
        features = self.normalization(raw, graph.pair_type, graph.edge_vec.norm(dim=1), site)
        return self(features, graph.pair_type, graph.reverse)

    def project(self, blocks: torch.Tensor, pair_type: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`assemble` (y = W† vec H, W is orthogonal/unitary): padded blocks → output features."""
        y = blocks.new_zeros(len(blocks), self.irreps_out.dim)
        for t, (n_rows, n_cols) in enumerate(self.shapes):
            edges = torch.nonzero(pair_type == t).squeeze(1)
            if len(edges) == 0:
                continue
            rows, columns, values = self._triplets(t)
            flat = blocks[edges, :n_rows, :n_cols].reshape(len(edges), n_rows * n_cols)
            y[edges] = y.new_zeros(len(edges), y.shape[1]).index_add(1, columns, (flat[:, rows] * values.conj()).to(y.dtype))
        return torch.cat([y.real, y.imag], -1) if self.basis.spinful else y

"""DeepH-2 (SO(2)/ELCT) and DeepH-E3 (tensor products): symmetries, Hermiticity, training smoke test, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from aiida_deeph.io import DeepHStructure
from aiida_deeph.ml import (
    OrbitalBasis,
    build_graph,
    build_model,
    collate,
    find_pairs,
    graph_from_structure,
    unpack_blocks,
)
from aiida_deeph.ml.models.layers import EquivariantLayerNorm, GatedFeedForward
from aiida_deeph.ml.models.so2 import SO2Convolution
from aiida_deeph.ml.wigner import edge_wigner, orbital_rotation, rotate_from_edge_frame, rotate_to_edge_frame, wigner_D

torch.set_num_threads(1)

SHELLS = {"C": [0, 0, 1, 1, 2], "N": [0, 1]}
SPECIES = ["C", "C", "N", "N"]
LATTICE = np.array([[3.2, 0.1, 0.0], [0.3, 3.4, 0.0], [0.2, -0.1, 3.6]])
POSITIONS = np.random.default_rng(0).random((4, 3)) @ LATTICE
PAIRS = find_pairs(LATTICE, POSITIONS, 3.3)
SMALL = {
    "deeph2": {"model": "deeph2", "channels": 8, "num_blocks": 2, "num_heads": 2, "num_radial": 8, "radial_hidden": 16},
    "deephe3": {"model": "deephe3", "channels": 4, "num_blocks": 2, "sh_lmax": 2, "num_radial": 8, "radial_hidden": 16},
}


@pytest.fixture(scope="module", autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def randomize_normalization(model):
    """Non-trivial target normalisation (random shifts on 0e, scales and decays): the symmetry tests cover it."""
    norm = model.head.normalization
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm.shift.copy_(torch.randn(norm.shift.shape, generator=generator) * norm.invariant)
        norm.scale.copy_(0.5 + torch.rand(norm.scale.shape[:2] + (norm.num_instances,), generator=generator)
                         [..., norm.instance])
        decay = torch.rand(norm.decay.shape[0], norm.num_instances, 4, generator=generator)
        decay[..., 1:3] *= -1  # non-increasing
        norm.decay.copy_(decay[:, norm.instance])
    return model


@pytest.fixture(scope="module", params=list(SMALL))
def model(request):
    torch.manual_seed(0)
    return randomize_normalization(build_model(SMALL[request.param], OrbitalBasis(SHELLS)).eval())


@pytest.fixture(scope="module", params=list(SMALL))
def spinful_model(request):
    torch.manual_seed(0)
    return randomize_normalization(build_model(SMALL[request.param], OrbitalBasis(SHELLS, spinful=True)).eval())


def graph(basis: OrbitalBasis, rotation=np.eye(3), shift=np.zeros(3), pairs=PAIRS, positions=POSITIONS):
    return build_graph(basis, SPECIES, positions @ rotation.T + shift, LATTICE @ rotation.T, pairs)


def rotated_blocks(blocks: torch.Tensor, graph, basis: OrbitalBasis, rotation: np.ndarray) -> torch.Tensor:
    """D_i H_ij D_j† for every edge, with padded per-element D (⊗ SU(2) with spin)."""
    size = basis.block_size
    per_element = blocks.new_zeros(basis.num_elements, size, size)
    for index, element in enumerate(basis.elements):
        d = orbital_rotation(basis.shells[element], rotation, basis.spinful)
        per_element[index, : len(d), : len(d)] = d
    i, j = graph.edge_index
    return per_element[graph.species[i]] @ blocks @ per_element[graph.species[j]].transpose(1, 2).conj()


def random_rotation(seed: int) -> np.ndarray:
    return Rotation.random(random_state=seed).as_matrix()


# --- symmetries ---------------------------------------------------------------------------------------------------


def test_rotation_equivariance(model):
    basis = model.basis
    blocks = model(graph(basis))
    assert blocks.abs().max() > 1e-2  # not trivially zero
    for seed in range(3):
        rotation = random_rotation(seed)
        error = (model(graph(basis, rotation)) - rotated_blocks(blocks, graph(basis), basis, rotation)).abs().max()
        assert error < 1e-9


def test_improper_rotations_with_parity():
    """DeepH-E3 tracks parity: inversion and a rotoinversion act with (−1)^l per shell. (DeepH-2 is SO(3) only.)"""
    torch.manual_seed(0)
    model = randomize_normalization(build_model(SMALL["deephe3"], OrbitalBasis(SHELLS)).eval())
    blocks = model(graph(model.basis))
    for rotation in (-np.eye(3), -random_rotation(3)):
        expected = rotated_blocks(blocks, graph(model.basis), model.basis, rotation)
        assert (model(graph(model.basis, rotation)) - expected).abs().max() < 1e-9


def test_spinful_rotation_equivariance(spinful_model):
    basis = spinful_model.basis
    blocks = spinful_model(graph(basis))
    assert blocks.is_complex() and blocks.shape[1] == 26
    rotation = random_rotation(4)
    error = (spinful_model(graph(basis, rotation)) - rotated_blocks(blocks, graph(basis), basis, rotation)).abs().max()
    assert error < 1e-9
    assert unpack_blocks(blocks, graph(basis)).hermiticity_error() < 1e-12


def test_translation_invariance(model):
    basis = model.basis
    shifted = model(graph(basis, shift=np.array([0.37, -1.2, 2.9])))
    assert (shifted - model(graph(basis))).abs().max() < 1e-10


def test_permutation_invariance(model):
    """Relabel atoms (within each element, as the DeepH format groups them) and shuffle the edges."""
    basis = model.basis
    reference = unpack_blocks(model(graph(basis)), graph(basis))
    order = np.array([1, 0, 3, 2])  # new atom n is old atom order[n]
    new_index = np.argsort(order)
    pairs = PAIRS.copy()
    pairs[:, 3:] = new_index[PAIRS[:, 3:]]
    pairs = pairs[np.random.default_rng(1).permutation(len(pairs))]
    permuted_graph = graph(basis, pairs=pairs, positions=POSITIONS[order])
    permuted = unpack_blocks(model(permuted_graph), permuted_graph)
    for (rx, ry, rz, i, j), block in reference.items():
        assert np.abs(permuted[(rx, ry, rz, new_index[i], new_index[j])] - block).max() < 1e-10


def test_hermiticity(model):
    predicted = unpack_blocks(model(graph(model.basis)), graph(model.basis))
    assert predicted.hermiticity_error() < 1e-12


def test_batch_equals_separate_graphs(model):
    first, second = graph(model.basis), graph(model.basis, random_rotation(5))
    together = model(collate([first, second]))
    assert torch.allclose(together, torch.cat([model(first), model(second)]), atol=1e-12)


# --- training smoke test ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_overfit_one_structure(name):
    """Targets from a differently initialised teacher (so they are reachable); the loss must fall in 30 Adam steps."""
    basis = OrbitalBasis(SHELLS)
    config = {**SMALL[name], "num_blocks": 1}
    torch.manual_seed(1)
    teacher = build_model(config, basis)
    torch.manual_seed(2)
    student = build_model(config, basis)
    data = graph(basis)
    with torch.no_grad():
        data.target = teacher(data)
    data.mask = data.block_mask(basis.block_size)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = ((student(data) - data.target) ** 2 * data.mask).sum() / data.mask.sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


# --- building blocks ----------------------------------------------------------------------------------------------


def so3_rotate(features: torch.Tensor, rotation: np.ndarray, lmax: int) -> torch.Tensor:
    """Rotate an SO(3) array (..., (L+1)², C) by the e3nn D of every l."""
    d = torch.block_diag(*[wigner_D(l, torch.as_tensor(rotation)) for l in range(lmax + 1)])
    return torch.einsum("ij,...jc->...ic", d, features)


@pytest.mark.parametrize("mmax", [None, 1])
def test_so2_convolution_is_equivariant(mmax):
    torch.manual_seed(0)
    lmax, edges = 3, 6
    conv = SO2Convolution(lmax, 5, 4, radial_features=3, radial_hidden=8, mmax=mmax)
    vectors, features, radial = torch.randn(edges, 3), torch.randn(edges, (lmax + 1) ** 2, 5), torch.randn(edges, 3)

    def apply(vectors, features):
        wigner = edge_wigner(vectors, lmax)
        return rotate_from_edge_frame(conv(rotate_to_edge_frame(features, wigner), radial), wigner)

    rotation = random_rotation(6)
    out = apply(vectors, features)
    rotated = apply(vectors @ torch.as_tensor(rotation).T, so3_rotate(features, rotation, lmax))
    assert torch.allclose(rotated, so3_rotate(out, rotation, lmax), atol=1e-12)
    if mmax == 1:  # truncated components are zero in the edge frame
        local = conv(rotate_to_edge_frame(features, edge_wigner(vectors, lmax)), radial)
        assert local[:, [4, 8, 9, 15]].abs().max() == 0  # m = ±2 of l = 2, m = −3 of l = 3, m = 3 of l = 3


def test_norm_and_feed_forward_are_equivariant():
    torch.manual_seed(0)
    lmax = 3
    features = torch.randn(5, (lmax + 1) ** 2, 6)
    rotation = random_rotation(7)
    for layer in (EquivariantLayerNorm(lmax, 6), GatedFeedForward(lmax, 6, 10)):
        out = layer(so3_rotate(features, rotation, lmax))
        assert torch.allclose(out, so3_rotate(layer(features), rotation, lmax), atol=1e-12)


# --- configuration ------------------------------------------------------------------------------------------------


def test_build_model_validates_the_config():
    basis = OrbitalBasis(SHELLS)
    with pytest.raises(ValueError, match="valid keys: model, lmax, num_blocks"):
        build_model({"model": "deeph2", "chanels": 8}, basis)
    with pytest.raises(ValueError, match="sh_lmax"):
        build_model({"model": "deeph2", "sh_lmax": 2}, basis)  # a deephe3 key
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"model": "deeph3"}, basis)
    with pytest.raises(ValueError, match="needs >= 4"):
        build_model({"lmax": 3}, basis)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        build_model({"channels": 6, "num_heads": 4}, basis)
    model = build_model({"channels": 8, "num_blocks": 1}, basis)
    assert model.config["model"] == "deeph2" and model.config["channels"] == 8 and model.lmax == 4
    assert build_model(model.config, basis).config == model.config


# --- real data --------------------------------------------------------------------------------------------------


def test_deeph2_on_mos2_with_f_orbitals(dft_fixtures):
    """ABACUS MoS2 (Mo s4p2d2f1): L = 6 features; the prediction on the DFT graph rotates like the blocks."""
    structure = DeepHStructure.read(dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "deeph_ref")
    basis = OrbitalBasis.from_structure(structure)
    torch.manual_seed(0)
    model = build_model({"channels": 8, "num_blocks": 1, "num_radial": 8, "radial_hidden": 16}, basis).eval()
    assert model.lmax == 6
    reference_graph = graph_from_structure(structure, basis)
    blocks = model(reference_graph)
    assert blocks.shape == reference_graph.target.shape
    rotation = random_rotation(8)
    structure.lattice, structure.positions = structure.lattice @ rotation.T, structure.positions @ rotation.T
    rotated = model(graph_from_structure(structure, basis))
    assert (rotated - rotated_blocks(blocks, reference_graph, basis, rotation)).abs().max() < 1e-9
    assert unpack_blocks(blocks, reference_graph).hermiticity_error() < 1e-12

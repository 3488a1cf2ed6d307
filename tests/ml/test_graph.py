"""Crystal graphs: edges and vectors, reverse edges, packing/unpacking of blocks, neighbour search, real MoS2 data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from e3nn import o3

from aiida_deeph.io import BlockMatrix, DeepHStructure
from aiida_deeph.ml.basis import OrbitalBasis
from aiida_deeph.ml.graph import build_graph, collate, find_pairs, graph_from_structure, unpack_blocks
from aiida_deeph.ml.wigner import orbital_rotation

torch.set_num_threads(1)

SHELLS = {"C": [0, 0, 1, 1, 2], "N": [0, 1]}
SPECIES = ["C", "C", "N", "N"]
LATTICE = np.array([[3.2, 0.1, 0.0], [0.3, 3.4, 0.0], [0.2, -0.1, 3.6]])
POSITIONS = np.random.default_rng(0).random((4, 3)) @ LATTICE


# Graphs are built in the default dtype; float64 keeps the DFT blocks bit-exact.
pytestmark = pytest.mark.usefixtures("float64")


def brute_force_pairs(lattice, positions, cutoff):
    keys = []
    for shift in itertools.product(range(-3, 4), repeat=3):
        for i, j in itertools.product(range(len(positions)), repeat=2):
            distance = np.linalg.norm(positions[j] + np.array(shift) @ lattice - positions[i])
            if distance < cutoff:
                keys.append((*shift, i, j))
    return sorted(keys)


def random_blocks(basis: OrbitalBasis, pairs: np.ndarray, rng: np.random.Generator) -> BlockMatrix:
    spin = 2 if basis.spinful else 1
    blocks = {}
    for key in map(tuple, pairs.tolist()):
        shape = (spin * basis.num_orbitals(SPECIES[key[3]]), spin * basis.num_orbitals(SPECIES[key[4]]))
        block = rng.standard_normal(shape)
        blocks[key] = block + 1j * rng.standard_normal(shape) if basis.spinful else block
    return BlockMatrix.from_blocks(blocks)


def test_find_pairs_matches_brute_force():
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    assert [tuple(p) for p in pairs.tolist()] == brute_force_pairs(LATTICE, POSITIONS, 3.3)
    assert sum(1 for p in pairs if p[3] == p[4] and not any(p[:3])) == 4  # on-site pairs included


def test_find_pairs_with_radii_per_element():
    pairs = find_pairs(LATTICE, POSITIONS, {"C": 2.0, "N": 1.2}, SPECIES)
    radius = np.array([2.0, 2.0, 1.2, 1.2])
    full = find_pairs(LATTICE, POSITIONS, 4.1)  # > the largest r_i + r_j
    vectors = POSITIONS[full[:, 4]] + full[:, :3] @ LATTICE - POSITIONS[full[:, 3]]
    expected = full[np.linalg.norm(vectors, axis=1) < radius[full[:, 3]] + radius[full[:, 4]]]
    assert np.array_equal(pairs, expected)
    with pytest.raises(ValueError, match="species"):
        find_pairs(LATTICE, POSITIONS, {"C": 2.0})


def test_edges_vectors_and_reverse():
    basis = OrbitalBasis(SHELLS)
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    graph = build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs)
    assert graph.num_edges == len(pairs) and graph.num_nodes == 4
    assert np.array_equal(graph.atom_pairs, pairs)
    i, j = pairs[:, 3], pairs[:, 4]
    assert np.allclose(graph.edge_vec.numpy(), POSITIONS[j] + pairs[:, :3] @ LATTICE - POSITIONS[i])
    reverse = graph.reverse.numpy()
    assert np.array_equal(pairs[reverse], np.column_stack([-pairs[:, :3], j, i]))
    assert np.array_equal(reverse[reverse], np.arange(len(pairs)))
    assert graph.pair_type.tolist() == [2 * (a >= 2) + (b >= 2) for a, b in zip(i, j)]
    assert len(graph.onsite) == 4 and len(graph.offsite) == len(pairs) - 4
    with pytest.raises(ValueError, match="no reverse"):
        build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs[np.flatnonzero(pairs[:, 3] != pairs[:, 4])[:1]])


@pytest.mark.parametrize("spinful", [False, True])
def test_targets_pack_and_unpack_exactly(spinful):
    basis = OrbitalBasis(SHELLS, spinful=spinful)
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    matrix = random_blocks(basis, pairs, np.random.default_rng(1))
    shuffled = pairs[np.random.default_rng(2).permutation(len(pairs))]  # edge order independent of H's order
    graph = build_graph(basis, SPECIES, POSITIONS, LATTICE, shuffled, matrix)
    size = 26 if spinful else 13
    assert graph.target.shape == graph.mask.shape == (len(pairs), size, size)
    assert graph.target.is_complex() == spinful
    assert int(graph.mask.sum()) == len(matrix.entries)
    assert graph.target[~graph.mask].abs().sum() == 0
    unpacked = unpack_blocks(graph.target, graph)
    for key, block in matrix.items():
        assert np.array_equal(unpacked[key], block)


def test_edges_without_target_are_masked_out():
    basis = OrbitalBasis(SHELLS)
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    onsite = pairs[(pairs[:, 3] == pairs[:, 4]) & ~pairs[:, :3].any(1)]
    blocks = random_blocks(basis, onsite, np.random.default_rng(3))
    graph = build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs, blocks)
    has_target = graph.mask.flatten(1).any(1)
    assert has_target.tolist() == [(p[3] == p[4] and not p[:3].any()) for p in pairs]


def test_wrong_block_shape_is_rejected():
    basis = OrbitalBasis(SHELLS)
    pairs = np.array([[0, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs, BlockMatrix.from_blocks({(0, 0, 0, 0, 0): np.eye(4)}))


def test_collate_shifts_indices():
    basis = OrbitalBasis(SHELLS)
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    blocks = random_blocks(basis, pairs, np.random.default_rng(4))
    graph = build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs, blocks)
    batch = collate([graph, graph])
    assert batch.num_nodes == 8 and batch.num_edges == 2 * graph.num_edges
    assert torch.equal(batch.edge_index[:, graph.num_edges :], graph.edge_index + 4)
    assert torch.equal(batch.reverse[graph.num_edges :], graph.reverse + graph.num_edges)
    assert torch.equal(batch.target[graph.num_edges :], graph.target)


def test_to_changes_float_dtype_only():
    basis = OrbitalBasis(SHELLS, spinful=True)
    pairs = find_pairs(LATTICE, POSITIONS, 3.3)
    blocks = random_blocks(basis, pairs, np.random.default_rng(5))
    graph = build_graph(basis, SPECIES, POSITIONS, LATTICE, pairs, blocks)
    single = graph.to(dtype=torch.float32)
    assert single.edge_vec.dtype == torch.float32 and single.target.dtype == torch.complex64
    assert single.edge_index.dtype == torch.int64 and single.mask.dtype == torch.bool


# --- real data: ABACUS MoS2 converted by deepx-dock ---------------------------------------------------------------


@pytest.fixture(scope="module")
def mos2(dft_fixtures) -> DeepHStructure:
    return DeepHStructure.read(dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "deeph_ref")


def test_mos2_graph_holds_every_dft_block(mos2):
    graph = graph_from_structure(mos2)
    assert graph.num_edges == len(mos2.hamiltonian.atom_pairs) == 239
    assert bool(graph.mask.flatten(1).any(1).all())
    unpacked = unpack_blocks(graph.target, graph)
    for key, block in mos2.hamiltonian.items():
        assert np.array_equal(unpacked[key], block)
    assert graph.target.shape[1] == 27  # Mo: 4s 2p 2d 1f
    # the overlap's pairs are the Hamiltonian's (DeepH inference graphs use the overlap)
    assert np.array_equal(np.sort(graph.atom_pairs, axis=0), np.sort(mos2.overlap.atom_pairs, axis=0))


def test_mos2_inference_graphs_without_a_hamiltonian(mos2):
    """Without H the edges come from the overlap (DeepH inference) or from a neighbour search within a cutoff."""
    structure = mos2
    without_h = DeepHStructure(structure.lattice, structure.species, structure.positions,
                               structure.elements_orbital_map, overlap=structure.overlap)
    from_overlap = graph_from_structure(without_h)
    assert from_overlap.target is None
    assert np.array_equal(from_overlap.atom_pairs, structure.overlap.atom_pairs)
    searched = graph_from_structure(structure, cutoff=8.4)  # just beyond the longest DFT pair (8.36 Å)
    assert searched.num_edges >= 239
    assert int(searched.mask.flatten(1).any(1).sum()) == 239  # the DFT blocks, others masked out
    with pytest.raises(ValueError, match="give a cutoff"):
        graph_from_structure(DeepHStructure(structure.lattice, structure.species, structure.positions,
                                            structure.elements_orbital_map))


def symmetry_map(structure: DeepHStructure, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a point operation about atom 0: the atom permutation, their lattice shifts, and R in fractional form."""
    lattice, positions = structure.lattice, structure.positions
    image = (positions - positions[0]) @ rotation.T + positions[0]
    fractional = np.linalg.solve(lattice.T, (image[:, None] - positions[None]).reshape(-1, 3).T).T.reshape(
        len(positions), len(positions), 3)
    match = np.abs(fractional - np.round(fractional)).max(-1) < 1e-4
    assert np.all(match.sum(1) == 1), "not a symmetry of the structure"
    permutation = match.argmax(1)
    shifts = np.round(fractional[np.arange(len(positions)), permutation]).astype(int)
    lattice_map = np.round(np.linalg.solve(lattice.T, (lattice @ rotation.T).T).T).astype(int)
    return permutation, shifts, lattice_map


def mapping_error(structure: DeepHStructure, rotation: np.ndarray, wigner) -> float:
    """max |D_i H_ij(R) D_jᵀ − H_i'j'(R')| over all blocks, with D_i = block_diag(wigner(l, rotation) per shell)."""
    permutation, shifts, lattice_map = symmetry_map(structure, rotation)
    shells = structure.elements_orbital_map
    rotation = torch.as_tensor(rotation, dtype=torch.float64)
    d = {el: torch.block_diag(*[wigner(l, rotation) for l in ls]).numpy() for el, ls in shells.items()}
    worst = 0.0
    for (rx, ry, rz, i, j), block in structure.hamiltonian.items():
        shift = np.array([rx, ry, rz]) @ lattice_map + shifts[j] - shifts[i]
        image = structure.hamiltonian[(*shift.tolist(), permutation[i], permutation[j])]
        worst = max(worst, np.abs(d[structure.species[i]] @ block @ d[structure.species[j]].T - image).max())
    return worst


@pytest.mark.parametrize("operation", ["C3", "mirror"])
def test_mos2_blocks_follow_the_e3nn_yzx_convention(mos2, operation):
    """Symmetry operations of the MoS2 cell map DFT blocks onto each other as H' = D_i H D_jᵀ with the e3nn D of
    P R Pᵀ (:func:`orbital_rotation`). The C3 axis through Mo tests the convention, the vertical mirror (improper)
    the shell parities; feeding e3nn the unpermuted R must fail (negative control)."""
    if operation == "C3":
        c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    else:
        rotation = np.diag([-1.0, 1.0, 1.0])  # x → −x through Mo
    assert mapping_error(mos2, rotation, lambda l, r: orbital_rotation([l], r)) < 1e-5  # eV; blocks reach 40 eV
    if operation == "C3":
        unpermuted = mapping_error(mos2, rotation, lambda l, r: o3.Irrep(l, (-1) ** l).D_from_matrix(r))
        assert unpermuted > 1e-2

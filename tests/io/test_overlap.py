"""The analytic MOLOPT overlap: completeness of the (i, j, R) set, Hermiticity, S(k) > 0, and the rotation test that
proves the PySCF row of the orbital-convention table against e3nn's Wigner D."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from ase.build import graphene
from e3nn import o3
from pyscf import gto
from scipy.linalg import block_diag
from scipy.spatial.transform import Rotation

from aiida_deeph.io.conventions import to_standard
from aiida_deeph.io.deeph_format import BlockMatrix
from aiida_deeph.io.overlap import analytic_overlap, basis_shells, pyscf_basis_name
from aiida_deeph.io.units import BOHR_TO_ANGSTROM

SZV, DZVP = "SZV-MOLOPT-SR-GTH", "DZVP-MOLOPT-SR-GTH"
P_YZX = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # (x, y, z) -> (y, z, x)


def perturbed_graphene_2x2() -> tuple[np.ndarray, list[str], np.ndarray]:
    atoms = graphene(a=2.46, vacuum=7.5).repeat((2, 2, 1))
    positions = atoms.positions + np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    return np.array(atoms.cell), atoms.get_chemical_symbols(), positions


def perturbed_zincblende(a: float, species: list[str], seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    lattice = a / 2 * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    positions = np.array([[0.0, 0.0, 0.0], [a / 4] * 3]) + np.random.default_rng(seed).normal(scale=0.05, size=(2, 3))
    return lattice, species, positions


def offsets(species: list[str], basis) -> tuple[np.ndarray, int]:
    sizes = [sum(2 * l + 1 for l in basis_shells(basis, el)) for el in species]
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]), int(sum(sizes))


def max_difference(a: BlockMatrix, b: BlockMatrix) -> float:
    """max |a − b| over the union of the stored blocks, a missing block counting as zero."""
    worst = 0.0
    for key in set(a.index) | set(b.index):
        block_a = a[key] if key in a else np.zeros_like(b[key])
        block_b = b[key] if key in b else np.zeros_like(a[key])
        worst = max(worst, float(np.max(np.abs(block_a - block_b))))
    return worst


# --- basis -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("basis", "element", "shells"),
    [
        (DZVP, "C", [0, 0, 1, 1, 2]),
        (SZV, "C", [0, 1]),
        ("DZVP-MOLOPT-GTH", "C", [0, 0, 1, 1, 2]),
        ("gth-dzvp-molopt-sr", "Si", [0, 0, 1, 1, 2]),
        ({"C": SZV, "N": DZVP}, "C", [0, 1]),
        ({"C": SZV, "N": DZVP}, "N", [0, 0, 1, 1, 2]),
    ],
)
def test_basis_shells(basis, element: str, shells: list[int]) -> None:
    assert basis_shells(basis, element) == shells


def test_cp2k_basis_names_map_to_pyscf() -> None:
    assert pyscf_basis_name("DZVP-MOLOPT-SR-GTH") == "gth-dzvp-molopt-sr"
    assert pyscf_basis_name("DZVP-MOLOPT-GTH") == "gth-dzvp-molopt"
    assert pyscf_basis_name("DZVP-MOLOPT-SR-GTH-q4") == "gth-dzvp-molopt-sr"
    assert pyscf_basis_name("gth-szv-molopt-sr") == "gth-szv-molopt-sr"


def test_missing_element_basis_is_an_error() -> None:
    with pytest.raises(ValueError, match="no basis given for element N"):
        basis_shells({"C": SZV}, "N")


# --- graphene: completeness, Hermiticity, normalisation, S(k) > 0 ------------------------------------------------------
@pytest.fixture(scope="module", params=[SZV, DZVP])
def graphene_overlap(request) -> tuple[str, list[str], BlockMatrix]:
    lattice, species, positions = perturbed_graphene_2x2()
    return request.param, species, analytic_overlap(lattice, species, positions, request.param)


def test_hermitian_exactly(graphene_overlap) -> None:
    _, _, overlap = graphene_overlap
    assert overlap.hermiticity_error() == 0.0


def test_onsite_diagonal_is_one(graphene_overlap) -> None:
    _, species, overlap = graphene_overlap
    error = max(np.max(np.abs(np.diag(overlap[(0, 0, 0, i, i)]) - 1)) for i in range(len(species)))
    assert error < 1e-12, f"onsite diagonal deviates from 1 by {error:.2e}"


@pytest.mark.parametrize("kpoint", [(0.0, 0.0, 0.0), (0.137, 0.291, 0.05)])
def test_overlap_at_k_positive_definite(graphene_overlap, kpoint) -> None:
    basis, species, overlap = graphene_overlap
    sk = overlap.at_k(np.array(kpoint), *offsets(species, basis))
    assert np.max(np.abs(sk - sk.conj().T)) < 1e-14
    lowest = np.linalg.eigvalsh(sk).min()
    assert lowest > 1e-4, f"S(k={kpoint}) has eigenvalue {lowest:.2e}"


def brute_force_overlap(lattice, species, positions, basis: str, tol: float, reach: tuple[int, int, int]) -> BlockMatrix:
    """Every image in a box, every atom pair, from independently built molecules (PySCF basis name); max |S| ≥ tol."""
    lattice, positions = lattice / BOHR_TO_ANGSTROM, positions / BOHR_TO_ANGSTROM
    parsed = {el: gto.basis.load(basis, el) for el in set(species)}

    def molecule(shift: np.ndarray) -> gto.Mole:
        atoms = [(el, tuple(p + shift)) for el, p in zip(species, positions)]
        return gto.M(atom=atoms, basis=parsed, unit="Bohr", spin=None, verbose=0)

    home = molecule(np.zeros(3))
    ao = home.aoslice_by_atom()[:, 2:]
    shells = basis_shells(basis, species[0])
    blocks, box_surface = {}, 0.0
    for image in np.ndindex(*(2 * n + 1 for n in reach)):
        image = np.array(image) - reach
        matrix = gto.intor_cross("int1e_ovlp", home, molecule(image @ lattice))
        for i, j in np.ndindex(len(species), len(species)):
            block = to_standard(matrix[ao[i, 0] : ao[i, 1], ao[j, 0] : ao[j, 1]], "pyscf", shells, shells)
            if np.any(np.abs(image) == reach):
                box_surface = max(box_surface, float(np.max(np.abs(block))))
            elif np.max(np.abs(block)) >= tol:
                blocks[(*image.tolist(), i, j)] = block
    assert box_surface < tol, "the brute-force box is too small"
    return BlockMatrix.from_blocks(blocks)


BRUTE_FORCE_CASES = {  # structure, basis as CP2K names it, the same in PySCF's spelling, image box
    "graphene-SZV": (perturbed_graphene_2x2(), SZV, "gth-szv-molopt-sr", (4, 4, 1)),
    "diamond-DZVP": (perturbed_zincblende(3.567, ["C", "C"], seed=1), DZVP, "gth-dzvp-molopt-sr", (6, 6, 6)),
}


@lru_cache(maxsize=None)
def brute_force_reference(case: str) -> BlockMatrix:
    structure, _, pyscf_name, reach = BRUTE_FORCE_CASES[case]
    return brute_force_overlap(*structure, pyscf_name, tol=1e-10, reach=reach)


@pytest.mark.parametrize("chunk_atoms", [1, 128])
@pytest.mark.parametrize("case", list(BRUTE_FORCE_CASES))
def test_matches_brute_force_over_all_images(case: str, chunk_atoms: int) -> None:
    structure, basis, _, _ = BRUTE_FORCE_CASES[case]
    reference = brute_force_reference(case)
    overlap = analytic_overlap(*structure, basis, cutoff_tol=1e-10, chunk_atoms=chunk_atoms)
    assert set(overlap.index) == set(reference.index), f"{case}: the (R, i, j) sets differ"
    error = max_difference(overlap, reference)
    assert error < 1e-13, f"{case}: max |S − S_brute| = {error:.2e}"


def test_translation_invariance() -> None:
    lattice, species, positions = perturbed_graphene_2x2()
    overlap = analytic_overlap(lattice, species, positions, DZVP)
    shifted = analytic_overlap(lattice, species, positions + np.array([0.37, -1.21, 2.05]), DZVP)
    assert set(shifted.index) == set(overlap.index)
    error = max_difference(shifted, overlap)
    assert error < 1e-12, f"max |S(shifted) − S| = {error:.2e}"


# --- rotation: S'_ij(R) = D_i S_ij(R) D_jᵀ with e3nn's D ------------------------------------------------------------------
@pytest.fixture
def float64_torch():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds D in the default dtype; float32 is only good to ~3e-7
    yield
    torch.set_default_dtype(previous)


def wigner_d(shells: list[int], rotation: np.ndarray, permute: bool) -> np.ndarray:
    """Block-diagonal D over an atom's shells; ``permute`` applies the (x, y, z) → (y, z, x) change of basis."""
    matrix = P_YZX @ rotation @ P_YZX.T if permute else rotation
    return block_diag(*[o3.Irrep(l, (-1) ** l).D_from_matrix(torch.tensor(matrix)).numpy() for l in shells])


def rotation_deviation(overlap: BlockMatrix, rotated: BlockMatrix, species, basis, rotation, permute: bool) -> float:
    d = {el: wigner_d(basis_shells(basis, el), rotation, permute) for el in set(species)}
    expected = BlockMatrix.from_blocks(
        {key: d[species[key[3]]] @ block @ d[species[key[4]]].T for key, block in overlap.items()}
    )
    return max_difference(rotated, expected)


CELLS = {
    "diamond": (perturbed_zincblende(3.567, ["C", "C"], seed=1), DZVP),
    "SiC": (perturbed_zincblende(4.36, ["Si", "C"], seed=2), {"Si": SZV, "C": DZVP}),
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_rotation_matches_e3nn_wigner_d(cell: str, float64_torch) -> None:
    (lattice, species, positions), basis = CELLS[cell]
    rotation = Rotation.random(random_state=7).as_matrix()
    # tol 1e-11: a block present in one run only (max |S| near tol) is then < 13 · 1e-11 after rotation, well below 1e-9
    overlap = analytic_overlap(lattice, species, positions, basis, cutoff_tol=1e-11)
    rotated = analytic_overlap(lattice @ rotation.T, species, positions @ rotation.T, basis, cutoff_tol=1e-11)

    deviation = rotation_deviation(overlap, rotated, species, basis, rotation, permute=True)
    assert deviation <= 1e-9, f"{cell}: max |S' − D S Dᵀ| = {deviation:.2e}"
    # Sharpness: e3nn's D without the (x, y, z) → (y, z, x) change of basis must fail clearly.
    wrong = rotation_deviation(overlap, rotated, species, basis, rotation, permute=False)
    assert wrong > 1e-2, f"{cell}: the unpermuted D also fits ({wrong:.2e}); the test cannot see the p order"

"""Γ split into irrep blocks by a rotation of the cell: the blocks hold exactly the eigenvalues of the whole H(Γ)."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_deeph.io.deeph_format import BlockMatrix, DeepHStructure
from aiida_deeph.io.overlap import analytic_overlap
from aiida_deeph.ml.bands import compute_bands, compute_dos
from aiida_deeph.ml.eigensolvers import ShiftInvert, dense_eigh
from aiida_deeph.ml.kpath import KPath
from aiida_deeph.ml.sparse import BlochOperators
from aiida_deeph.ml.symmetry import GammaFolding, find_flip, find_rotation, gamma_eigenvalues
from aiida_deeph.structures.twisted import twisted_bilayer

from .synthetic import read_mos2, single_threaded_blas, supercell

pytestmark = pytest.mark.usefixtures(single_threaded_blas.__name__)
DZVP_SHELLS = [0, 0, 1, 1, 2]
ONSITE = np.repeat([-21.4, -21.4, -11.4, -11.4, 5.0], [1, 1, 3, 3, 5])  # eV per orbital, s s' p p' d


def huckel_structure(atoms) -> DeepHStructure:
    """The exact DZVP overlap of ``atoms`` and an extended-Hückel H on its blocks (constant per shell, so exactly
    as symmetric as S)."""
    lattice, species, positions = np.array(atoms.cell), atoms.get_chemical_symbols(), atoms.positions
    overlap = analytic_overlap(lattice, species, positions, "DZVP-MOLOPT-SR-GTH")
    s = overlap.entries.reshape(-1, 13, 13)
    h = 1.75 * s * (ONSITE[:, None] + ONSITE[None, :]) / 2
    onsite = np.flatnonzero((overlap.atom_pairs[:, 3] == overlap.atom_pairs[:, 4]) & ~overlap.atom_pairs[:, :3].any(1))
    h[onsite[:, None], np.arange(13), np.arange(13)] = ONSITE
    hamiltonian = BlockMatrix(overlap.atom_pairs, overlap.chunk_shapes, overlap.chunk_boundaries, h.reshape(-1))
    return DeepHStructure(lattice, species, positions, {"C": DZVP_SHELLS}, fermi_energy_eV=-17.5,
                          hamiltonian=hamiltonian, overlap=overlap)


@pytest.fixture(scope="module")
def twisted() -> DeepHStructure:
    """The 21.79° bilayer (28 atoms, 364 orbitals): a 3-fold axis through an atom of each layer."""
    return huckel_structure(twisted_bilayer("graphene", m=1, n=2))


def block_spectrum(folding: GammaFolding) -> np.ndarray:
    return np.sort(np.concatenate([np.repeat(dense_eigh(block.h, block.s), block.degeneracy)
                                   for block in folding.blocks()]))


def test_twisted_bilayer_has_a_threefold_axis_through_atoms(twisted):
    rotation = find_rotation(twisted.lattice, twisted.species, twisted.positions)
    assert rotation.order == 3
    np.testing.assert_allclose(np.linalg.matrix_power(rotation.matrix, 3), np.eye(3), atol=1e-12)
    assert sorted(rotation.permutation) == list(range(28))
    images = twisted.positions @ rotation.matrix.T
    fractional = (images - twisted.positions[rotation.permutation]) @ np.linalg.inv(twisted.lattice)
    np.testing.assert_allclose(fractional, np.round(fractional), atol=1e-9)  # images up to lattice vectors
    folding = GammaFolding(twisted, rotation)
    assert sorted(folding.orbit_size) == [1] * 4 + [3] * 8  # 4 atoms on axes (AA sites), 8 orbits of 3


def test_twisted_bilayer_has_an_in_plane_flip_that_swaps_the_layers(twisted):
    """D3: a 2-fold axis in the plane, h g h = g⁻¹ for the atoms too; no atom is fixed, every orbit of g is
    swapped with one in the other layer, so only half the orbits' rows are kept."""
    rotation = find_rotation(twisted.lattice, twisted.species, twisted.positions)
    flip = find_flip(twisted.lattice, twisted.species, twisted.positions, rotation)
    assert flip.order == 2
    np.testing.assert_allclose(flip.matrix @ flip.matrix, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(flip.matrix @ rotation.matrix @ flip.matrix, rotation.matrix.T, atol=1e-12)
    assert flip.matrix[2, 2] == pytest.approx(-1.0)
    layer = twisted.positions[:, 2] > twisted.positions[:, 2].mean()
    assert np.all(layer[flip.permutation] != layer)
    assert np.array_equal(flip.permutation[rotation.permutation[flip.permutation]], np.argsort(rotation.permutation))
    folding = GammaFolding(twisted)
    assert np.all(folding.partner != np.arange(len(folding.partner))) and len(folding.row_orbits) == 6


@pytest.mark.parametrize("dihedral, expected", [
    (False, [("0", 1, "f"), ("1", 2, "c")]),
    (True, [("0+", 1, "f"), ("0-", 1, "f"), ("1", 2, "f")]),
])
def test_blocks_hold_every_eigenvalue_of_gamma(twisted, dihedral, expected):
    """C3: p = 0 real, p = 1 complex (counted twice, for p = 2); the atoms on the axis split their p and d shells
    between the irreps. D3: the flip splits p = 0 in two halves (A1, A2), and makes p = 1 real (E). Either way,
    together exactly the spectrum of H(Γ), 364 values."""
    folding = GammaFolding(twisted, dihedral=dihedral)
    blocks = list(folding.blocks())
    assert [(str(b.irrep), b.degeneracy, b.h.dtype.kind) for b in blocks] == expected
    assert sum(b.h.shape[0] * b.degeneracy for b in blocks) == 364
    for block in blocks:
        assert abs(block.h - block.h.conj().T).max() < 1e-8 and abs(block.s - block.s.conj().T).max() < 1e-9
    reference = dense_eigh(*BlochOperators(twisted).at_k(np.zeros(3)))
    window = np.abs(reference - twisted.fermi_energy_eV) < 15
    np.testing.assert_allclose(block_spectrum(folding)[window], reference[window], atol=1e-7)


def test_sixfold_rotation_of_graphene(twisted):
    """The graphene cell's highest rotation is C6 about a hexagon centre: two atoms swapped, each fixed by C3;
    irreps p = 0 and 3 real, 1 and 2 complex and doubly counted. Its in-plane flips (D6) map the orbit onto
    itself: p = 0 and 3 split by the flip's sign, p = 1 and 2 become real through the Takagi factor of the flip."""
    from ase.build import graphene

    structure = huckel_structure(graphene(vacuum=5.0))
    reference = dense_eigh(*BlochOperators(structure).at_k(np.zeros(3)))
    cyclic = GammaFolding(structure, dihedral=False)
    assert cyclic.rotation.order == 6 and list(cyclic.orbit_size) == [2]
    assert [(str(b.irrep), b.degeneracy, b.h.dtype.kind) for b in cyclic.blocks()] == \
        [("0", 1, "f"), ("1", 2, "c"), ("2", 2, "c"), ("3", 1, "f")]
    np.testing.assert_allclose(block_spectrum(cyclic), reference, atol=1e-8)
    dihedral = GammaFolding(structure)
    assert list(dihedral.partner) == [0]
    assert [(str(b.irrep), b.h.shape[0], b.h.dtype.kind) for b in dihedral.blocks()] == \
        [("0+", 3, "f"), ("0-", 2, "f"), ("1", 4, "f"), ("2", 4, "f"), ("3+", 3, "f"), ("3-", 2, "f")]
    np.testing.assert_allclose(block_spectrum(dihedral), reference, atol=1e-8)


def test_real_dft_hamiltonian_folds_to_its_own_spectrum(dft_fixtures):
    """ABACUS's MoS2 tiled 3×3 (27 atoms): the DFT H is 3-fold symmetric to its own precision (its real-space
    grid breaks the rotation slightly), so the blocks agree with the whole H(Γ) to a few µeV within ±5 eV of E_F
    (1.3 µeV measured) and to ~1 meV only for the states 120 eV up."""
    structure = supercell(read_mos2(dft_fixtures), (3, 3, 1))
    folding = GammaFolding(structure)
    assert folding.rotation.order == 3
    reference = dense_eigh(*BlochOperators(structure).at_k(np.zeros(3)))
    near = np.abs(reference - structure.fermi_energy_eV) < 5
    assert near.sum() > 50
    assert np.abs(block_spectrum(folding) - reference)[near].max() < 1e-5


@pytest.mark.parametrize("dihedral, asked", [
    (False, ([23, 22], [5, 5, 10, 10, 20, 20])),  # blocks of 124 and 120 rows
    (True, ([13, 13, 22], [4, 4, 5, 8, 8, 10, 16, 16, 20])),  # 62, 62 and 120 rows
])
def test_nearest_eigenvalues_through_the_sparse_solver(twisted, dihedral, asked):
    """gamma_eigenvalues with shift-invert on every block: the 40 nearest σ, each block first asked for its share
    by rows; with too small a first request (``margin``) the blocks that fall short are asked again, and the
    result is the same."""
    reference = dense_eigh(*BlochOperators(twisted).at_k(np.zeros(3)))
    folding = GammaFolding(twisted, dihedral=dihedral)
    for sigma, margin, asked in zip((twisted.fermi_energy_eV, 2.0), (1.5, 0.2), asked):
        calls = []
        with ShiftInvert(sigma, backend="superlu") as solver:
            def counted(matrices, num):
                calls.append(num)
                return solver.taking(matrices, num)

            values = gamma_eigenvalues(folding, 40, sigma, counted, dense_limit=0, margin=margin)
        expected = np.sort(reference[np.argsort(np.abs(reference - sigma))[:40]])
        np.testing.assert_allclose(values, expected, atol=1e-8)
        assert calls == asked


def test_compute_bands_uses_the_blocks_at_gamma_only(twisted):
    path = KPath(twisted.lattice, np.array([[0.0, 0, 0], [0.5, 0, 0]]), np.array([[0.5, 0, 0], [0.0, 0, 0]]),
                 (("Γ", "M"), ("M", "Γ")), (3, 3))
    plain = compute_bands(twisted, kpath=path, solver="sparse", num_bands=30)
    folded = compute_bands(twisted, kpath=path, solver="sparse", num_bands=30, symmetry=True)
    np.testing.assert_allclose(folded.eigenvalues, plain.eigenvalues, atol=1e-8)


def test_structures_without_a_rotation_are_refused():
    from ase import Atoms

    atoms = Atoms("C4", positions=np.random.default_rng(0).uniform(0, 5, (4, 3)), cell=[5.0, 6.0, 7.0], pbc=True)
    structure = huckel_structure(atoms)
    assert find_rotation(structure.lattice, structure.species, structure.positions) is None
    with pytest.raises(ValueError, match="no rotation symmetry"):
        compute_bands(structure, solver="sparse", num_bands=4, symmetry=True)


def test_command_line_bands_with_symmetry(twisted, tmp_path):
    """``bands --symmetry`` gives the same band.h5 as without; a cell with no rotation is a usage error (2)."""
    import subprocess
    import sys

    import h5py

    folder = twisted.write(tmp_path / "twisted")

    def bands(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aiida_deeph.ml", "bands", str(folder), "--solver", "sparse",
                               "--num-bands", "30", "--npoints", "6", *extra], capture_output=True, text=True,
                              timeout=300)

    plain = bands("--out", str(tmp_path / "plain"))
    folded = bands("--out", str(tmp_path / "folded"), "--symmetry")
    assert plain.returncode == folded.returncode == 0, plain.stderr + folded.stderr
    with h5py.File(tmp_path / "plain" / "band.h5") as a, h5py.File(tmp_path / "folded" / "band.h5") as b:
        np.testing.assert_allclose(b["band_data"][()], a["band_data"][()], atol=1e-8)
    from ase import Atoms

    atoms = Atoms("C4", positions=np.random.default_rng(0).uniform(0, 5, (4, 3)), cell=[5.0, 6.0, 7.0], pbc=True)
    folder = huckel_structure(atoms).write(tmp_path / "asymmetric")
    refused = bands("--symmetry")
    assert refused.returncode == 2 and "no rotation symmetry" in refused.stderr


def test_kpm_dos_at_gamma_from_the_blocks(twisted):
    """The KPM on the D3 blocks, each counted by its irrep's dimension, holds every state and follows the KPM of
    the whole H(Γ) within the trace estimates' noise."""
    options = dict(method="kpm", num_moments=256, num_vectors=64, energies=np.linspace(-40.0, 10.0, 2001))
    blocks = compute_dos(twisted, symmetry=True, **options)
    whole = compute_dos(twisted, **options)
    assert blocks.method == "kpm" and blocks.resolution_eV > 0
    size = BlochOperators(twisted).size
    high = compute_dos(twisted, symmetry=True, **{**options, "energies": np.array([1e6])})
    assert high.integrated[-1] == pytest.approx(size)  # Σ dimension × rows = 364 exactly
    assert np.max(np.abs(blocks.integrated - whole.integrated)) < 0.03 * size


def test_command_line_kpm_dos_with_symmetry(twisted, tmp_path):
    """``dos --method kpm --symmetry``: the moments follow --width, and dos.h5 records the resolution reached."""
    import subprocess
    import sys

    import h5py

    folder = twisted.write(tmp_path / "twisted")
    done = subprocess.run([sys.executable, "-m", "aiida_deeph.ml", "dos", str(folder), "--method", "kpm", "--symmetry",
                           "--width", "25"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with h5py.File(folder / "dos.h5") as handle:
        assert 24.0 < handle["resolution_eV"][()] <= 25.0 and handle["method"][()] == b"kpm"
        assert handle["integrated_dos"][-1] == pytest.approx(364)
    assert "resolution" in done.stdout

"""Proof of the orbital conventions on the real engine.

Rotating a structure and rerunning CP2K must give H'_ij(R) = D_i H_ij(R) D_jᵀ block by block with e3nn's Wigner-D
in the (y, z, x) convention; CP2K's S(R) must equal PySCF's analytic overlap in the same MOLOPT basis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from aiida import orm
from aiida.engine import run_get_node
from ase import Atoms
from e3nn import o3
from scipy.spatial.transform import Rotation

from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.io.overlap import analytic_overlap
from aiida_deeph.ml.wigner import orbital_rotation

pytestmark = pytest.mark.cp2k

# Tight settings: the residual rotation error (~0.2 meV measured) is SCF convergence and the real-space grid.
PARAMETERS = {
    "FORCE_EVAL": {
        "DFT": {
            "QS": {"EPS_DEFAULT": 1.0e-12},
            "MGRID": {"CUTOFF": 300, "REL_CUTOFF": 50},
            "SCF": {"EPS_SCF": 1.0e-8, "MAX_SCF": 100, "ADDED_MOS": 4,
                    "SMEAR": {"_": "ON", "METHOD": "FERMI_DIRAC", "ELECTRONIC_TEMPERATURE": 300}},
            "XC": {"XC_FUNCTIONAL": {"_": "PBE"}},
        }
    }
}


def diamond(rotation: np.ndarray) -> orm.StructureData:
    a = 3.567
    cell = 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    fractional = np.array([[0.0, 0.0, 0.0], [0.27, 0.24, 0.26]])  # perturbed: no site symmetry left
    atoms = Atoms("C2", cell=cell @ rotation.T, scaled_positions=fractional, pbc=True)
    return orm.StructureData(ase=atoms)


def run_cp2k(code, structure: orm.StructureData):
    builder = DeepHCp2kCalculation.get_builder()
    builder.code = code
    builder.structure = structure
    builder.parameters = orm.Dict(PARAMETERS)
    builder.basis_set = orm.Str("DZVP-MOLOPT-SR-GTH")
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([2, 2, 2])
    builder.kpoints = kpoints
    builder.metadata.options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 2},
                                "max_wallclock_seconds": 600}
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    return results["hamiltonian"].get_deeph(), results["output_parameters"].get_dict()


@pytest.fixture(scope="module")
def rotated_pair(cp2k_code):
    rotation = Rotation.random(random_state=7).as_matrix()
    reference, params = run_cp2k(cp2k_code, diamond(np.eye(3)))
    rotated, _ = run_cp2k(cp2k_code, diamond(rotation))
    return reference, rotated, rotation, params


def max_rotation_error(reference, rotated, rotation, which: str, wigner=orbital_rotation) -> float:
    shells = reference.elements_orbital_map["C"]
    d = wigner(shells, torch.as_tensor(rotation, dtype=torch.float64)).numpy()
    before, after = getattr(reference, which), getattr(rotated, which)
    assert set(before.index) == set(after.index)  # same R labels and atoms: fractional coordinates are unchanged
    return max(float(np.abs(after[key] - d @ block @ d.T).max()) for key, block in before.items())


def test_hamiltonian_rotates_with_wigner_d(rotated_pair):
    reference, rotated, rotation, params = rotated_pair
    error_mev = 1e3 * max_rotation_error(reference, rotated, rotation, "hamiltonian")
    print(f"rotation test: {len(reference.hamiltonian)} blocks, max |H' - D H D^T| = {error_mev:.4f} meV, "
          f"CP2K wall {params['wall_time_seconds']:.1f} s")
    assert error_mev < 1.0, f"max |H' - D H D^T| = {error_mev:.4f} meV"


def test_overlap_rotates_with_wigner_d(rotated_pair):
    reference, rotated, rotation, _ = rotated_pair
    error = max_rotation_error(reference, rotated, rotation, "overlap")
    print(f"rotation test: max |S' - D S D^T| = {error:.2e}")
    assert error < 1e-6, f"max |S' - D S D^T| = {error:.2e}"


def test_the_check_is_sharp(rotated_pair):
    """e3nn's D without the (x, y, z) → (y, z, x) change of basis must fail by far: the test can tell."""
    reference, rotated, rotation, _ = rotated_pair

    def unpermuted(shells, matrix):
        return torch.block_diag(*[o3.Irrep(l, (-1) ** l).D_from_matrix(matrix) for l in shells])

    assert max_rotation_error(reference, rotated, rotation, "hamiltonian", unpermuted) > 0.1  # eV


def test_hermiticity_and_fermi_level(rotated_pair):
    reference, _, _, params = rotated_pair
    assert reference.hamiltonian.hermiticity_error() < 1e-10
    levels = reference.eigenvalues([[0, 0, 0]])[0]
    assert levels[3] < params["fermi_energy"] < levels[4] + 1.0  # 8 valence electrons: 4 occupied bands at Γ


def test_overlap_equals_pyscf_analytic(rotated_pair):
    reference, _, _, _ = rotated_pair
    tolerance = 1e-10
    analytic = analytic_overlap(reference.lattice, reference.species, reference.positions, "DZVP-MOLOPT-SR-GTH",
                                cutoff_tol=tolerance)
    common = [key for key in reference.overlap.index if key in analytic.index]
    # CP2K writes elements down to 1e-12: its extra pairs must all be below the analytic tolerance ...
    extra = max((float(np.abs(b).max()) for k, b in reference.overlap.items() if k not in analytic.index), default=0.0)
    assert extra < tolerance, f"a CP2K pair missing from the analytic overlap has |S| = {extra:.1e}"
    # ... and CP2K's neighbour list must not miss any pair that matters.
    lost = max((float(np.abs(b).max()) for k, b in analytic.items() if k not in reference.overlap.index), default=0.0)
    assert lost < 1e-8, f"CP2K dropped a pair with |S| = {lost:.1e}"
    error = max(float(np.abs(reference.overlap[key] - analytic[key]).max()) for key in common)
    print(f"S(R) CP2K vs PySCF: {len(common)} common pairs, max error {error:.2e}")
    assert error < 1e-6, f"max |S_cp2k - S_pyscf| = {error:.2e}"

"""deeph.cp2k: input validation, and a real CP2K run parsed into the DeepH format."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase.build import graphene

from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain


def perturbed_graphene(n: int = 2, amplitude: float = 0.05, seed: int = 0) -> orm.StructureData:
    atoms = graphene(a=2.46, vacuum=6.0).repeat((n, n, 1))
    atoms.rattle(amplitude, seed=seed)
    atoms.pbc = (True, True, False)
    return orm.StructureData(ase=atoms)


def calc_builder(code, structure, protocol="fast", **overrides):
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(code, structure, protocol, overrides=overrides)
    calc = DeepHCp2kCalculation.get_builder()
    for key, value in builder.cp2k.items():
        calc[key] = value
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([4, 4, 1])
    calc.kpoints = kpoints
    return calc


@pytest.mark.cp2k
def test_graphene_run(cp2k_code):
    calc = calc_builder(cp2k_code, perturbed_graphene())
    results, node = run_get_node(calc)
    assert node.is_finished_ok, node.exit_status
    params = results["output_parameters"].get_dict()
    assert params["scf_converged"] and params["cp2k_version"] == "CP2K version 2023.1"
    hamiltonian = results["hamiltonian"]
    assert hamiltonian.natoms == 8 and hamiltonian.elements_orbital_map == {"C": [0, 1]}
    deeph = hamiltonian.get_deeph()
    assert deeph.hamiltonian.hermiticity_error() < 1e-10
    assert deeph.overlap.hermiticity_error() == 0.0
    levels = hamiltonian.eigenvalues([[0, 0, 0]])[0]
    occupied = 8 * 4 // 2
    assert levels[occupied - 1] < params["fermi_energy"] < levels[occupied]

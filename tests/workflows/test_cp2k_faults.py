"""deeph.cp2k.base with real CP2K runs forced to fail, recovered with nothing lost (issue #7).

test_cp2k_base.py checks that a non-converged SCF is restarted. Here every restart must continue from the failed run's
wavefunction, and the Hamiltonian the WorkChain ends with must be the one an undisturbed run of the same structure
gives (``cp2k_graphene(1)``: same cell, fast protocol, 4×4×1 k-points).
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.workflows.cp2k_base import WAVEFUNCTION_FILES, Cp2kBaseWorkChain
from aiida_deeph.workflows.dft_base import WALLTIME_FACTOR

from ..calculations.test_cp2k import perturbed_graphene

pytestmark = pytest.mark.cp2k

EXIT = DeepHCp2kCalculation.exit_codes
KPOINTS = [[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.5, 0.0, 0.0], [0.1, 0.3, 0.0]]
EIGENVALUE_TOLERANCE = 2e-3  # eV: two SCF runs converged to EPS_SCF 1e-6 from different starts


def _run(cp2k_code, overrides: dict) -> tuple[dict, list[orm.CalcJobNode]]:
    """The WorkChain on cp2k_graphene(1)'s structure and mesh: its outputs and its CP2K jobs in order."""
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, perturbed_graphene(), "fast", overrides)
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([4, 4, 1])
    builder.kpoints = kpoints
    del builder.kpoints_distance
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return results, sorted(node.called, key=lambda calc: calc.ctime)


def _left_wavefunction(calc: orm.CalcJobNode) -> bool:
    return any(name in calc.outputs.remote_folder.listdir() for name in WAVEFUNCTION_FILES)


def _assert_continues(previous: orm.CalcJobNode, current: orm.CalcJobNode) -> None:
    """``current`` starts from the wavefunction ``previous`` left."""
    assert current.inputs.parent_calc_folder.uuid == previous.outputs.remote_folder.uuid
    dft = current.inputs.parameters["FORCE_EVAL"]["DFT"]
    assert dft["SCF"]["SCF_GUESS"] == "RESTART"
    assert dft["WFN_RESTART_FILE_NAME"].split("/")[-1] in WAVEFUNCTION_FILES


def _assert_same_hamiltonian(result: HamiltonianData, reference_folder) -> None:
    reference = HamiltonianData(folder=reference_folder)
    assert result.npairs == reference.npairs
    np.testing.assert_allclose(result.eigenvalues(KPOINTS), reference.eigenvalues(KPOINTS),
                               atol=EIGENVALUE_TOLERANCE)


def test_scf_restarts_continue_from_the_wavefunction(cp2k_code, cp2k_graphene):
    """MAX_SCF 3: the SCF fails, each restart continues from the last wavefunction with twice the steps."""
    overrides = {"cp2k": {"parameters": {"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": 3}}}}}}
    results, calcs = _run(cp2k_code, overrides)
    print(f"\n[cp2k faults] SCF: {len(calcs)} CP2K runs, exit statuses {[calc.exit_status for calc in calcs]}")
    assert len(calcs) >= 2 and calcs[0].exit_status == EXIT.ERROR_SCF_NOT_CONVERGED.status
    for index, (previous, current) in enumerate(zip(calcs, calcs[1:])):
        assert previous.exit_status == EXIT.ERROR_SCF_NOT_CONVERGED.status
        assert current.inputs.parameters["FORCE_EVAL"]["DFT"]["SCF"]["MAX_SCF"] == 3 * 2 ** (index + 1)
        _assert_continues(previous, current)
    assert calcs[-1].is_finished_ok
    _assert_same_hamiltonian(results["hamiltonian"], cp2k_graphene(1)[0])


def test_walltime_restarts_with_more_time_from_the_wavefunction(cp2k_code, cp2k_graphene):
    """A 2 s walltime, far too short for the SCF: CP2K stops itself, and each restart gets 1.5× the time and the last
    wavefunction until one run converges."""
    overrides = {"cp2k": {"metadata": {"options": {"max_wallclock_seconds": 2}}}, "max_iterations": 12}
    results, calcs = _run(cp2k_code, overrides)
    walltimes = [calc.get_option("max_wallclock_seconds") for calc in calcs]
    print(f"\n[cp2k faults] walltime: {len(calcs)} CP2K runs with max_wallclock_seconds {walltimes}, "
          f"exit statuses {[calc.exit_status for calc in calcs]}")
    assert calcs[0].exit_status == EXIT.ERROR_OUT_OF_WALLTIME.status, (
        f"a {walltimes[0]} s max_wallclock_seconds did not stop CP2K (exit status {calcs[0].exit_status})")
    for previous, current in zip(calcs, calcs[1:]):
        assert previous.exit_status == EXIT.ERROR_OUT_OF_WALLTIME.status
        assert current.get_option("max_wallclock_seconds") == int(WALLTIME_FACTOR
                                                                  * previous.get_option("max_wallclock_seconds"))
        if _left_wavefunction(previous):
            _assert_continues(previous, current)
    assert calcs[-1].is_finished_ok
    _assert_same_hamiltonian(results["hamiltonian"], cp2k_graphene(1)[0])

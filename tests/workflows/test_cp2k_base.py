"""deeph.cp2k.base: protocols, input validation before submission, real restarts, submission through the daemon."""

from __future__ import annotations

import pytest
from aiida import orm
from aiida.engine import run_get_node
from ase import Atoms

from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain

from ..calculations.test_cp2k import perturbed_graphene


def test_protocols_listed_and_merged(aiida_profile, cp2k_code):
    assert set(Cp2kBaseWorkChain.get_available_protocols()) == {"fast", "moderate", "precise"}
    structure = perturbed_graphene()
    fast = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, structure, "fast")
    precise = Cp2kBaseWorkChain.get_builder_from_protocol(
        cp2k_code, structure, "precise", overrides={"cp2k": {"parameters": {"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": 7}}}}}}
    )
    assert fast.cp2k.basis_set.value == "SZV-MOLOPT-SR-GTH"
    assert precise.cp2k.basis_set.value == "DZVP-MOLOPT-SR-GTH"
    scf = precise.cp2k.parameters["FORCE_EVAL"]["DFT"]["SCF"]
    assert scf["MAX_SCF"] == 7 and scf["EPS_SCF"] == 1.0e-8  # override on top of the protocol on top of defaults
    with pytest.raises(ValueError, match="unknown protocol"):
        Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, structure, "ultra")


def _run_expecting_refusal(builder, match: str):
    with pytest.raises(ValueError, match=match):
        run_get_node(builder)


@pytest.mark.parametrize(
    "atoms, overrides, match",
    [
        (Atoms("C2", positions=[[0, 0, 5], [0.2, 0, 5]], cell=[5, 5, 10], pbc=True), {}, "overlap"),
        (Atoms("CNC", positions=[[0, 0, 0], [1.5, 0, 0], [3, 0, 0]], cell=[6, 6, 6], pbc=True), {}, "grouped"),
        (Atoms("U", positions=[[0, 0, 0]], cell=[6, 6, 6], pbc=True), {}, "basis set not in"),
        (Atoms("C", positions=[[0, 0, 0]], cell=[6, 6, 6], pbc=True), {"cp2k": {"pseudopotential": "GTH-NOPE"}},
         "pseudopotential not in"),
    ],
)
def test_bad_input_refused_before_submission(aiida_profile, cp2k_code, atoms, overrides, match):
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, orm.StructureData(ase=atoms), "fast", overrides)
    count = orm.QueryBuilder().append(orm.CalcJobNode).count()
    _run_expecting_refusal(builder, match)
    assert orm.QueryBuilder().append(orm.CalcJobNode).count() == count  # nothing was submitted


def test_kpoint_mesh_along_vacuum_refused(aiida_profile, cp2k_code):
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, perturbed_graphene(), "fast")
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([3, 3, 2])
    builder.kpoints = kpoints
    del builder.kpoints_distance
    _run_expecting_refusal(builder, "non-periodic direction c")


@pytest.mark.cp2k
def test_scf_not_converged_is_restarted(aiida_profile, cp2k_code):
    """A real CP2K SCF forced into non-convergence (3 steps) is restarted with more steps until it converges."""
    overrides = {"cp2k": {"parameters": {"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": 4}}}}}, "max_iterations": 6}
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, perturbed_graphene(), "fast", overrides)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    calcs = sorted(node.called, key=lambda n: n.ctime)
    assert len(calcs) >= 2
    assert calcs[0].exit_status == calcs[0].process_class.exit_codes.ERROR_SCF_NOT_CONVERGED.status
    assert calcs[-1].is_finished_ok and "hamiltonian" in results
    assert any("SCF not converged" in log.message for log in orm.Log.collection.get_logs_for(node))


@pytest.mark.cp2k
def test_submit_through_daemon(aiida_profile, cp2k_code, submit_and_await):
    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, perturbed_graphene(seed=3), "fast")
    node = submit_and_await(builder, timeout=300)
    assert node.is_finished_ok, node.exit_status
    assert node.outputs.hamiltonian.npairs > 0


def _failed_calculation(exit_code, remote_path=None, computer=None) -> orm.CalcJobNode:
    """A stored CalcJobNode that failed with ``exit_code``, optionally with a remote folder holding a wavefunction."""
    from aiida.common.links import LinkType

    node = orm.CalcJobNode(computer=computer, process_type="aiida.calculations:deeph.cp2k")
    node.set_process_state("finished")
    node.set_exit_status(exit_code.status)
    node.store()
    if remote_path is not None:
        remote = orm.RemoteData(remote_path=str(remote_path), computer=computer)
        remote.base.links.add_incoming(node, LinkType.CREATE, "remote_folder")
        remote.store()
    return node


def _workchain(cp2k_code, **overrides):
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager

    builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, perturbed_graphene(), "fast", overrides)
    process = instantiate_process(get_manager().get_runner(), builder)
    process.setup()
    return process


def test_walltime_handler_restarts_from_wavefunction(aiida_profile, cp2k_code, tmp_path):
    (tmp_path / "aiida-RESTART.kp").write_text("wfn")
    process = _workchain(cp2k_code, cp2k={"metadata": {"options": {"max_wallclock_seconds": 600}}})
    node = _failed_calculation(Cp2kBaseWorkChain._process_class.exit_codes.ERROR_OUT_OF_WALLTIME, tmp_path,
                               cp2k_code.computer)
    report = process.handle_out_of_walltime(node)
    assert report.do_break
    assert process.ctx.inputs.metadata["options"]["max_wallclock_seconds"] == 900
    assert process.ctx.inputs.parent_calc_folder.uuid == node.outputs.remote_folder.uuid
    dft = process.ctx.inputs.parameters["FORCE_EVAL"]["DFT"]
    assert dft["WFN_RESTART_FILE_NAME"] == "parent_calc/aiida-RESTART.kp" and dft["SCF"]["SCF_GUESS"] == "RESTART"


def test_scf_handler_without_wavefunction_starts_fresh(aiida_profile, cp2k_code):
    process = _workchain(cp2k_code)
    node = _failed_calculation(Cp2kBaseWorkChain._process_class.exit_codes.ERROR_SCF_NOT_CONVERGED)
    process.handle_scf_not_converged(node)
    scf = process.ctx.inputs.parameters["FORCE_EVAL"]["DFT"]["SCF"]
    assert scf["MAX_SCF"] == 200 and abs(scf["MIXING"]["ALPHA"] - 0.21) < 1e-12
    assert "parent_calc_folder" not in process.ctx.inputs and "SCF_GUESS" not in scf


def test_out_of_memory_handler_doubles_the_nodes(aiida_profile, cp2k_code):
    from aiida.engine import CalcJob

    process = _workchain(cp2k_code)
    process.handle_out_of_memory(_failed_calculation(CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY))
    assert process.ctx.inputs.metadata["options"]["resources"]["num_machines"] == 2


def test_unknown_failure_stops_with_a_report(aiida_profile, cp2k_code):
    process = _workchain(cp2k_code)
    exit_code = Cp2kBaseWorkChain._process_class.exit_codes.ERROR_MATRICES_MISSING
    report = process.handle_unknown_failure(_failed_calculation(exit_code))
    assert report.do_break and report.exit_code.status == Cp2kBaseWorkChain.exit_codes.ERROR_UNRECOVERABLE_FAILURE.status

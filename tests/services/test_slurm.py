"""Production-like setup: PostgreSQL + RabbitMQ profile, the daemon, and CP2K submitted to SLURM with sbatch.

Run by ``bash scripts/test.sh --services`` (which starts the services with scripts/services.sh).
"""

from __future__ import annotations

import subprocess
import time

import pytest
from aiida import orm
from aiida.engine import submit

from aiida_deeph.tools.local_setup import setup_cp2k, setup_localhost
from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain

from ..calculations.test_cp2k import perturbed_graphene

pytestmark = [pytest.mark.services, pytest.mark.cp2k]

SBATCH_COMMENT = "#SBATCH --comment=aiida-deeph-ci"


@pytest.fixture(scope="module")
def slurm_cp2k(aiida_profile, tmp_path_factory):
    computer = setup_localhost("slurm-deeph", tmp_path_factory.mktemp("slurm_work"), scheduler="core.slurm")
    return setup_cp2k(computer)


def test_profile_uses_real_services(aiida_profile):
    assert aiida_profile.storage_backend == "core.psql_dos"
    assert aiida_profile.process_control_backend == "core.rabbitmq"


def _builder(code, supercell=2, protocol="fast", walltime=600):
    overrides = {"cp2k": {"metadata": {"options": {"max_wallclock_seconds": walltime,
                                                   "custom_scheduler_commands": SBATCH_COMMENT}}}}
    return Cp2kBaseWorkChain.get_builder_from_protocol(code, perturbed_graphene(supercell), protocol, overrides)


def test_cp2k_submitted_to_slurm_through_daemon(slurm_cp2k, submit_and_await):
    node = submit_and_await(_builder(slurm_cp2k), timeout=600)
    assert node.is_finished_ok, node.exit_status
    calc = node.called[0]
    assert calc.get_job_id().isdigit()  # a SLURM job id
    script = calc.base.repository.get_object_content("_aiidasubmit.sh")
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=2", "#SBATCH --time=00:10:00", SBATCH_COMMENT):
        assert line in script, f"{line!r} missing from the submit script:\n{script}"
    assert node.outputs.hamiltonian.npairs > 0


def _wait(predicate, timeout: float, what: str):
    start = time.time()
    while time.time() - start < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def _running_job(workchain: orm.WorkChainNode) -> str | None:
    for calc in workchain.called:
        job_id = calc.get_job_id()
        if job_id:
            state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
            if state.strip() == "RUNNING":
                return job_id
    return None


def test_scancel_is_handled_by_the_restart_workchain(slurm_cp2k, started_daemon_client):
    node = submit(_builder(slurm_cp2k, supercell=3, protocol="moderate"))
    job_id = _wait(lambda: _running_job(node), 300, "the CP2K job to run under SLURM")
    time.sleep(5)  # let CP2K start writing its output
    subprocess.run(["scancel", job_id], check=True)
    _wait(lambda: node.is_terminated, 900, "the restart WorkChain to finish")
    assert node.is_finished_ok, node.exit_status
    first, *rest = sorted(node.called, key=lambda n: n.ctime)
    assert not first.is_finished_ok and rest and rest[-1].is_finished_ok
    assert any("cut short" in log.message for log in orm.Log.collection.get_logs_for(node))


def test_training_submitted_to_slurm_with_a_gpu_request(slurm_cp2k, cp2k_graphene, submit_and_await, tmp_path):
    """deeph.train through the daemon to sbatch: resources, walltime and the GPU request land in the script; on this
    GPU-less node the job asks for no real GRES (SLURM would refuse it) but the line is passed through verbatim."""
    from aiida_deeph.calculations.train import TrainCalculation
    from aiida_deeph.data.dataset import DatasetData
    from aiida_deeph.ml.dataset import preprocess
    from aiida_deeph.tools.local_setup import setup_python

    python = setup_python(slurm_cp2k.computer)
    dataset = DatasetData(preprocess(cp2k_graphene(2), tmp_path / "dataset", (0.5, 0.5, 0.0)))
    gpu_line = "#SBATCH --comment=gpus-per-task:1"  # a real cluster: #SBATCH --gres=gpu:1
    builder = TrainCalculation.get_builder()
    builder.code = python
    builder.dataset = dataset
    builder.parameters = orm.Dict({"system": {"device": "cpu", "num_threads": 1},
                                   "model": {"channels": 8, "num_blocks": 1, "num_heads": 1, "num_radial": 8,
                                             "radial_hidden": 16, "cutoff": 11.0},
                                   "process": {"train": {"max_epochs": 2, "progress": False}}})
    builder.metadata.options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1},
                                "max_wallclock_seconds": 900, "custom_scheduler_commands": gpu_line}
    node = submit_and_await(builder, timeout=600)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert node.get_job_id().isdigit()
    # the daemon stored the submit script; this process's node object still holds the repository it was created with
    script = orm.load_node(node.pk).base.repository.get_object_content("_aiidasubmit.sh")
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --time=00:15:00", gpu_line):
        assert line in script, f"{line!r} missing from the submit script:\n{script}"
    assert node.outputs.output_parameters["epochs"] == 2 and "model" in node.outputs

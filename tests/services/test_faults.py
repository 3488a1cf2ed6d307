"""Faults through the daemon on PostgreSQL + RabbitMQ, each checked for lost or repeated work (issue #7).

- the daemon SIGKILLed in the middle of a ``deeph.dataset``: RabbitMQ holds a task for every process the daemon ran,
  every DFT job ran exactly once and the dataset is the one an undisturbed run makes;
- a ``deeph.train`` job SIGKILLed mid-epoch: ``deeph.training`` resumes from latest.pt and ends with the metrics of
  an uninterrupted run;
- a campaign of 100 small ``deeph.cp2k`` jobs through SLURM with 2 daemon workers: all finish ok (throughput printed).

The sections are numbered as in the issue; item 3 (SCF and walltime faults of real CP2K runs) needs no services: it
is tests/workflows/test_cp2k_faults.py. Run by ``bash scripts/test.sh --services`` (``-s`` shows the throughput).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import submit
from aiida.engine.processes.control import get_process_tasks
from aiida.manage import get_manager
from aiida.schedulers.datastructures import JobState
from ase import Atoms
from ase.build import graphene

from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.tools.local_setup import setup_code
from aiida_deeph.workflows.dataset import DatasetWorkChain
from aiida_deeph.workflows.training import TrainingWorkChain

from .test_slurm import slurm_cp2k  # noqa: F401  (a fixture: the SLURM computer and its CP2K)

pytestmark = [pytest.mark.services, pytest.mark.cp2k]  # every test here runs CP2K (the training: on its data)

WORKERS = 2
CP2K_JOB = "aiida.calculations:deeph.cp2k"


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    """The first truthy value of ``predicate()``; TimeoutError after ``timeout`` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def daemon(daemon_client):
    """The profile's daemon, running with WORKERS workers."""
    if not daemon_client.is_daemon_running:
        daemon_client.start_daemon(number_workers=WORKERS)
    missing = WORKERS - daemon_client.get_number_of_workers()
    if missing > 0:
        daemon_client.increase_workers(missing, wait=True)
    return daemon_client


def sigkill_daemon(client) -> list[int]:
    """SIGKILL the daemon's circus process and everything it runs (workers, stats): no clean shutdown at all."""
    circus = psutil.Process(client.get_daemon_pid())
    victims = [circus, *circus.children()]  # circus first, so that it cannot respawn the workers
    for process in victims:
        process.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs(victims, timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"
    return [process.pid for process in victims]


def queued_tasks() -> set[int]:
    """Pks of the processes whose task waits in RabbitMQ's process queue, taken by no daemon worker.

    Each look also renews the queue's lease (it redeclares the queue, gets and requeues every task, as ``verdi process
    repair`` does). A test profile's queue (kiwipy testing mode) is deleted, tasks and all, 10 s after its last
    consumer leaves, where a production queue is durable: looking into it stands in for that durability while no
    daemon runs. Without it a daemon restarted in more than 10 s (12 s on a loaded machine) finds an empty queue and
    every process it ran hangs.
    """
    return set(get_process_tasks(get_manager().get_broker()))


def restart_daemon(client, tasks: set[int]) -> None:
    """Start the daemon again, looking into the queue every second until its workers have taken ``tasks``."""
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(client.start_daemon, number_workers=WORKERS)
        wait_for(lambda: not tasks & queued_tasks() and started.done(), 600, "the restarted daemon to take the tasks")
        started.result()


# --- 1. the daemon killed in the middle of deeph.dataset --------------------------------------------------------------
def _dataset_builder(cp2k_code, python_code):
    atoms = graphene(a=2.46, vacuum=6.0)
    atoms.pbc = (True, True, False)
    overrides = {"cp2k": {"kpoints_distance": 0.8}}  # 2×2×1 k-points, not 5×5×1: the faults are under test here
    return DatasetWorkChain.get_builder_from_protocol(cp2k_code, python_code, orm.StructureData(ase=atoms), "test",
                                                      overrides)


def _dft_jobs(workchain: orm.WorkflowNode) -> list[orm.CalcJobNode]:
    return [node for node in workchain.called_descendants if node.process_type == CP2K_JOB]


def _one_done_one_running(workchain: orm.WorkflowNode) -> bool:
    jobs = _dft_jobs(workchain)
    return (any(job.is_finished_ok for job in jobs)
            and any(not job.is_terminated and job.get_scheduler_state() == JobState.RUNNING for job in jobs))


def _samples(workchain: orm.WorkflowNode) -> dict[str, orm.StructureData]:
    (maker,) = [node for node in workchain.called if node.process_label == "perturbed_structures"]
    return {link.link_label: link.node for link in maker.base.links.get_outgoing(link_type=LinkType.CREATE).all()}


def dataset_content(dataset) -> dict:
    """dataset.json and split.json, less what depends on where the preprocess job ran: each structure's absolute
    source path and the checksum over them. The graphs' sha256 digests stay: equal content, equal dataset."""
    repository = dataset.base.repository
    meta = json.loads(repository.get_object_content("dataset.json"))
    del meta["checksum"]
    for record in meta["structures"]:
        del record["source"]
    return {"meta": meta, "split": json.loads(repository.get_object_content("split.json"))}


@pytest.fixture(scope="module")
def reference_dataset(daemon, cp2k_code, python_code):
    """An undisturbed ``deeph.dataset`` run: the reference of the killed one, and the training set below."""
    node = submit(_dataset_builder(cp2k_code, python_code))
    wait_for(lambda: node.is_terminated, 1800, "the reference deeph.dataset")
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return node.outputs.dataset


def test_daemon_sigkill_mid_dataset_loses_nothing(daemon, cp2k_code, python_code, reference_dataset):
    node = submit(_dataset_builder(cp2k_code, python_code))
    wait_for(lambda: _one_done_one_running(node), 1800, "one DFT job finished and the next one running")
    killed = sigkill_daemon(daemon)
    active = {process.pk for process in (node, *node.called_descendants) if not process.is_terminated}
    wait_for(lambda: active <= queued_tasks(), 30, f"RabbitMQ to requeue the tasks of processes {sorted(active)}")
    print(f"\n[faults] SIGKILLed daemon processes {killed}; RabbitMQ requeued the tasks of {sorted(active)}")
    restart_daemon(daemon, active)
    wait_for(lambda: node.is_terminated, 1800, "the killed deeph.dataset to finish after the restart")
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    samples = _samples(node)
    jobs = _dft_jobs(node)
    assert not any(job.base.caching.is_created_from_cache for job in jobs)  # else no DFT job was running
    runs = Counter(job.inputs.structure.uuid for job in jobs)
    assert runs == Counter({sample.uuid: 1 for sample in samples.values()}), "a DFT job ran twice or not at all"
    assert all(job.is_finished_ok for job in jobs), [(job.pk, job.exit_status) for job in jobs]
    assert node.outputs.output_parameters["succeeded"] == len(samples) == 4
    assert dataset_content(node.outputs.dataset) == dataset_content(reference_dataset)


# --- 2. a training job killed mid-epoch -------------------------------------------------------------------------------
EPOCHS = 150
KILL_AFTER = 5  # epochs logged before the kill
METRICS = ("epochs", "best_epoch", "train_mae_meV", "val_mae_meV", "test_mae_meV")


def _training_builder(python_code, dataset):
    overrides = {"train": {"parameters": {"system": {"seed": 7, "num_threads": 1},
                                          "process": {"train": {"max_epochs": EPOCHS, "checkpoint_every": 1}}}}}
    return TrainingWorkChain.get_builder_from_protocol(python_code, dataset, "test", overrides)


def _epochs_logged(job: orm.CalcJobNode) -> int:
    workdir = job.get_remote_workdir()
    log = Path(workdir) / "outputs" / "log" if workdir else None
    if log is None or not log.is_file():
        return 0
    return sum(line.startswith("epoch") for line in log.read_text().splitlines())


def _first_train_job(workchain: orm.WorkflowNode) -> orm.CalcJobNode | None:
    return next(iter(sorted(workchain.called, key=lambda node: node.ctime)), None)


def _engine_process(workdir: str) -> psutil.Process:
    """The ``python -m aiida_deeph.ml train`` process running in ``workdir`` (nobody else's)."""
    workdir = os.path.realpath(workdir)
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = process.info["cmdline"] or []
        if "aiida_deeph.ml" in cmdline and "train" in cmdline and process.info["cwd"] == workdir:
            return process
    raise LookupError(f"no training process in {workdir}")


def _curve(job: orm.CalcJobNode) -> dict[int, np.ndarray]:
    """Epoch → (train MAE, val MAE, train loss, val loss, learning rate) of one job's training curve."""
    curve = job.outputs.training_curve
    epochs = curve.get_x()[1].astype(int)
    values = np.array([array for _, array, _ in curve.get_y()]).T
    return dict(zip(epochs.tolist(), values))


def test_training_killed_mid_epoch_resumes_to_the_same_metrics(daemon, python_code, reference_dataset):
    """Wherever the kill lands, the restart redoes at most the epoch in progress, and every epoch after it and the
    final metrics are the uninterrupted run's (CPU, fixed seed). Not covered: a kill between latest.pt and best.pt of
    a new best epoch (Trainer.save writes them in that order) would lose that best epoch."""
    reference = submit(_training_builder(python_code, reference_dataset))
    node = submit(_training_builder(python_code, reference_dataset))
    first = wait_for(lambda: _first_train_job(node), 600, "the first deeph.train job")
    wait_for(lambda: _epochs_logged(first) >= KILL_AFTER, 900, f"{KILL_AFTER} epochs in the job's log", 0.2)
    _engine_process(first.get_remote_workdir()).send_signal(signal.SIGKILL)
    killed_at = _epochs_logged(first)
    print(f"\n[faults] SIGKILLed deeph.train<{first.pk}> after {killed_at} logged epochs")
    wait_for(lambda: node.is_terminated and reference.is_terminated, 1800, "both trainings to finish")
    assert reference.is_finished_ok, (reference.exit_status, reference.exit_message)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    killed, resumed = sorted(node.called, key=lambda job: job.ctime)  # exactly one restart
    print(f"[faults] the killed job ended with exit status {killed.exit_status}: {killed.exit_message}")
    assert killed.outputs.output_parameters["status"] == "running"
    assert resumed.inputs.parent_folder.uuid == killed.outputs.remote_folder.uuid
    start = int(resumed.outputs.retrieved.base.repository.get_object_content("outputs/log")
                .split("resumed from ", 1)[1].split(" at epoch ", 1)[1].split()[0])
    assert killed_at - 1 <= start <= killed_at  # from the last checkpoint: at most the epoch in progress is redone

    expected, got = reference.outputs.output_parameters.get_dict(), node.outputs.output_parameters.get_dict()
    print(f"[faults] resumed from epoch {start}; uninterrupted vs resumed: "
          + ", ".join(f"{key} {expected[key]} / {got[key]}" for key in METRICS))
    assert got["epochs"] == expected["epochs"] == EPOCHS
    for key in METRICS:
        assert got[key] == pytest.approx(expected[key], rel=1e-6), key
    # the resumed job carries the curve on (the killed run's rows up to its checkpoint, then its own): every epoch
    # once, each equal to the uninterrupted run's
    (reference_job,) = reference.called
    reference_curve, resumed_curve = _curve(reference_job), _curve(resumed)
    assert sorted(resumed_curve) == list(range(1, EPOCHS + 1))
    for epoch, values in resumed_curve.items():
        np.testing.assert_allclose(values, reference_curve[epoch], rtol=1e-6, err_msg=f"epoch {epoch}")


# --- 4. a campaign of 100 small DFT jobs ------------------------------------------------------------------------------
CAMPAIGN = 100
# H2 in a 5 Å box, SZV, Γ only, 60 Ry: about 4 s of CPU per job on this machine, 1 process each
CAMPAIGN_PARAMETERS = {"FORCE_EVAL": {"DFT": {
    "QS": {"EPS_DEFAULT": 1.0e-8},
    "MGRID": {"CUTOFF": 60, "REL_CUTOFF": 20, "NGRIDS": 1},
    "SCF": {"EPS_SCF": 1.0e-5, "MAX_SCF": 50, "MIXING": {"METHOD": "BROYDEN_MIXING", "ALPHA": 0.4}},
    "XC": {"XC_FUNCTIONAL": {"_": "PBE"}},
}}}


def _h2(bond: float) -> orm.StructureData:
    return orm.StructureData(ase=Atoms("H2", positions=[[2.5 - bond / 2, 2.5, 2.5], [2.5 + bond / 2, 2.5, 2.5]],
                                       cell=[5.0, 5.0, 5.0], pbc=True))


def _campaign_builder(code, index: int):
    builder = DeepHCp2kCalculation.get_builder()
    builder.code = code
    builder.structure = _h2(0.70 + 0.001 * index)  # a different molecule each: no job can be a cache hit
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([1, 1, 1])
    builder.kpoints = kpoints
    builder.parameters = orm.Dict(CAMPAIGN_PARAMETERS)
    builder.basis_set = orm.Str("SZV-MOLOPT-SR-GTH")
    builder.metadata.options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1},
                                "withmpi": False, "max_wallclock_seconds": 600}
    return builder


def test_campaign_of_100_dft_jobs_through_slurm(daemon, slurm_cp2k):  # noqa: F811
    serial = setup_code(slurm_cp2k.computer, "cp2k-serial", "cp2k.psmp", with_mpi=False)
    assert daemon.get_number_of_workers() == WORKERS
    start = time.monotonic()
    nodes = [submit(_campaign_builder(serial, index)) for index in range(CAMPAIGN)]
    submitted = time.monotonic() - start
    wait_for(lambda: all(node.is_terminated for node in nodes), 3600, f"{CAMPAIGN} CP2K jobs")
    wall = time.monotonic() - start

    states = Counter(node.process_state.value for node in nodes)
    failed = [(node.pk, node.exit_status) for node in nodes if not node.is_finished_ok]
    print(f"\n[campaign] {CAMPAIGN} deeph.cp2k jobs (H2, SZV, Γ, 1 process each) through SLURM, {WORKERS} daemon "
          f"workers, PostgreSQL + RabbitMQ: submitted in {submitted:.1f} s, all terminated after {wall:.1f} s "
          f"= {CAMPAIGN / wall * 60:.1f} jobs/min; states {dict(states)}; failed {failed}; "
          f"load average {os.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores")
    assert states == Counter({"finished": CAMPAIGN}), "a job was lost, excepted or killed"
    assert not failed
    assert all("hamiltonian" in node.outputs for node in nodes)
    assert len({node.get_job_id() for node in nodes}) == CAMPAIGN  # one SLURM job each

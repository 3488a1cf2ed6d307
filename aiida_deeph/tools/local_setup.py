"""The embedded default: a localhost computer and a CP2K code on it, made idempotently (scripts and tests share it)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from aiida import orm
from aiida.common.exceptions import NotExistent

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "{tot_num_mpiprocs}"]


def setup_localhost(label: str = "localhost-deeph", workdir: str | Path | None = None, mpiprocs: int = 2,
                    scheduler: str = "core.direct") -> orm.Computer:
    """Load or create a configured ``core.local`` computer that runs MPI jobs as the current user (root included)."""
    try:
        return orm.load_computer(label)
    except NotExistent:
        pass
    workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / "aiida-deeph-work"
    workdir.mkdir(parents=True, exist_ok=True)
    computer = orm.Computer(
        label=label,
        hostname="localhost",
        description="this machine (aiida-deeph embedded default)",
        transport_type="core.local",
        scheduler_type=scheduler,
        workdir=str(workdir),
    ).store()
    computer.set_mpirun_command(MPIRUN)
    computer.set_default_mpiprocs_per_machine(mpiprocs)
    computer.set_prepend_text("export OMP_NUM_THREADS=1")
    computer.configure(safe_interval=0.0)
    computer.set_minimum_job_poll_interval(0.5)
    return computer


def setup_code(computer: orm.Computer, label: str, executable: str, with_mpi: bool | None = None) -> orm.InstalledCode:
    """Load or create ``label@computer`` pointing at ``executable`` (resolved on PATH)."""
    try:
        return orm.load_code(f"{label}@{computer.label}")
    except NotExistent:
        pass
    path = shutil.which(executable) or executable
    if not Path(path).exists():
        raise FileNotFoundError(f"{executable} not found; install it first (CP2K: apt-get install cp2k)")
    return orm.InstalledCode(
        label=label, computer=computer, filepath_executable=path, default_calc_job_plugin=None, with_mpi=with_mpi
    ).store()


def setup_cp2k(computer: orm.Computer | None = None) -> orm.InstalledCode:
    """The CP2K code of the embedded engine (Debian's ``cp2k.psmp`` under MPI)."""
    return setup_code(computer or setup_localhost(), "cp2k", "cp2k.psmp", with_mpi=True)


def setup_python(computer: orm.Computer | None = None) -> orm.InstalledCode:
    """``deeph-python``: this environment's interpreter, which runs ``python -m aiida_deeph.ml`` jobs."""
    return setup_code(computer or setup_localhost(), "deeph-python", sys.executable, with_mpi=False)


CACHED_PROCESSES = ("aiida.calculations:deeph.cp2k", "aiida.calculations:deeph.openmx", "aiida.calculations:deeph.abacus",
                    "aiida.calculations:deeph.overlap", "aiida.calculations:deeph.preprocess")


def enable_caching(profile_name: str) -> list[str]:
    """Let the profile reuse finished DFT, overlap and preprocessing jobs with identical inputs (a rerun of a dataset
    campaign then skips the DFT it has done); training and inference are left alone (timings are results too)."""
    from aiida.manage.configuration import get_config

    config = get_config()
    current = config.get_option("caching.enabled_for", scope=profile_name) or []
    wanted = sorted(set(current) | set(CACHED_PROCESSES))
    if wanted != sorted(current):
        config.set_option("caching.enabled_for", wanted, scope=profile_name)
        config.store()
    return wanted

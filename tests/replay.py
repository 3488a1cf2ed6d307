"""Fake DFT codes for replay tests, as aiida-quantumespresso tests its plugins against recorded outputs.

``replay_code(run, ...)`` returns an InstalledCode whose executable is a bash script that checks its input files
exist and copies recorded output files into the working directory. The script holds the absolute paths of the
recordings (the shared fixtures folder, or modified copies in tmp_path), so no output is copied into the repository.
Several runs are replayed in turn, one per call (a counter file next to the script), for restart tests.

Also here: ``prepare`` (``prepare_for_submission`` on a folder, for input-writer tests), ``assert_refused`` (for
validation tests) and synthetic OpenMX data files, since the OpenMX VPS/PAO library is not among the fixtures.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from aiida import orm
from aiida.common import CalcInfo
from aiida.common.folders import Folder
from aiida.engine import run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager

Run = Mapping[str, Path]  # output file (relative to the working directory) → recorded file


def replay_script(folder: Path, runs: Sequence[Run], expect: Sequence[str]) -> Path:
    lines = ["#!/bin/bash", "set -e"]
    lines += [f"test -e {shlex.quote(name)} || {{ echo 'missing input {name}' >&2; exit 2; }}" for name in expect]
    counter = shlex.quote(str(folder / "calls"))
    lines += [f"call=$(cat {counter} 2>/dev/null || echo 0)", f"echo $((call + 1)) > {counter}", 'case "$call" in']
    for n, run in enumerate(runs):
        pattern = "*" if n == len(runs) - 1 else str(n)
        copies = [f"mkdir -p {shlex.quote(str(Path(target).parent))} && cp {shlex.quote(str(source))} "
                  f"{shlex.quote(target)}" for target, source in run.items()]
        lines += [f"  {pattern})", *(f"    {line}" for line in copies), "    ;;"]
    lines.append("esac")
    script = folder / "replay.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


@pytest.fixture
def replay_code(aiida_code_installed, aiida_localhost, tmp_path_factory):
    """Factory: ``replay_code(run1, run2, ..., expect=[input files])`` → a stored InstalledCode on localhost."""

    def factory(*runs: Run, expect: Sequence[str] = ()) -> orm.InstalledCode:
        script = replay_script(tmp_path_factory.mktemp("replay"), runs, expect)
        return aiida_code_installed(filepath_executable=str(script), computer=aiida_localhost, with_mpi=False)

    return factory


SERIAL = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "withmpi": False,
          "max_wallclock_seconds": 600}


def prepare(process_class, inputs: dict, folder: Path) -> CalcInfo:
    """Validate ``inputs`` and write the input files of ``process_class`` into ``folder``."""
    process = instantiate_process(get_manager().get_runner(), process_class, **inputs)
    return process.prepare_for_submission(Folder(str(folder)))


def assert_refused(process_class, inputs: dict, match: str) -> None:
    """Running ``process_class`` on ``inputs`` fails validation with ``match``, and no CalcJob node is created."""
    count = orm.QueryBuilder().append(orm.CalcJobNode).count()
    with pytest.raises(ValueError, match=match):
        run_get_node(process_class, **inputs)
    assert orm.QueryBuilder().append(orm.CalcJobNode).count() == count


def write_vps(path: Path, atomic_number: int, valence: float) -> Path:
    """A VPS header with what aiida-pseudo's VpsData parses (element, valence, functional)."""
    path.write_text(f"   AtomSpecies        {atomic_number}\n   xc.type            GGA\n"
                    f"   valence.electron   {valence}\n")
    return path


def write_pao(path: Path, atomic_number: int, lmax: int, mul: int, cutoff: float = 6.0) -> Path:
    """A PAO file header and one radial-function block per l (three grid points)."""
    lines = [f"   AtomSpecies        {atomic_number}", f"   radial.cutoff.pao  {cutoff}", f"   PAO.Lmax  {lmax}",
             f"   PAO.Mul   {mul}", "   grid.num.output 3"]
    for l in range(lmax + 1):
        row = " ".join(["0.1"] * (mul + 2))
        lines += [f"<pseudo.atomic.orbitals.L={l}", row, row, row, f"pseudo.atomic.orbitals.L={l}>"]
    path.write_text("\n".join(lines) + "\n")
    return path

"""Shared base of the CalcJobs that run the ML engine remotely: ``python -m aiida_deeph.ml <command> ...``.

The code is a Python interpreter with aiida-deeph installed on the remote side (no AiiDA profile needed there);
``aiida-deeph setup`` makes ``deeph-python@localhost-deeph`` for this machine.
"""

from __future__ import annotations

import os

from aiida import orm
from aiida.common import CalcInfo, CodeInfo
from aiida.engine import CalcJob

from aiida_deeph.data.folder_data import ChecksummedFolderData


def log_names(command: str) -> tuple[str, str]:
    """stdout and stderr of one engine command (``train.out``, ``train.err``, ...)."""
    return f"{command}.out", f"{command}.err"


def toml_dumps(sections: dict) -> str:
    """TOML text of nested sections of scalars and lists (the training config; tomllib only reads)."""
    lines: list[str] = []

    def value(item) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(x) for x in item) + "]"
        raise TypeError(f"cannot write {type(item).__name__} to TOML")

    def section(prefix: str, table: dict) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if scalars or not prefix:
            if prefix:
                lines.append(f"[{prefix}]")
            lines.extend(f"{key} = {value(item)}" for key, item in scalars.items())
            lines.append("")
        for key, sub in table.items():
            if isinstance(sub, dict):
                section(f"{prefix}.{key}" if prefix else key, sub)

    section("", sections)
    return "\n".join(lines).strip() + "\n"


def keep_path(path: str) -> tuple[str, str, int]:
    """A retrieve-list entry that keeps ``path``'s folders (a plain string would keep only its last name)."""
    return path, ".", path.count("/") + 1


def copy_folder_node(node: ChecksummedFolderData, target: str) -> list[tuple[str, str, str]]:
    """local_copy_list entries that lay ``node``'s repository out under ``target/``."""
    return [(node.uuid, relative, os.path.join(target, relative)) for relative in node.checksums]


class MLCalculation(CalcJob):
    """Base: one or more ``python -m aiida_deeph.ml`` commands run in the job's working directory."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("metadata.options.withmpi", valid_type=bool, default=False)
        spec.input("metadata.options.resources", valid_type=dict,
                   default={"num_machines": 1, "num_mpiprocs_per_machine": 1})
        spec.input("settings", valid_type=orm.Dict, required=False, help="Plugin settings (see each CalcJob).")
        spec.exit_code(302, "ERROR_OUTPUT_STDOUT_MISSING", message="The engine's stdout was not retrieved.")
        spec.exit_code(303, "ERROR_OUTPUT_FILES_MISSING", message="Expected output files are missing: {message}")
        spec.exit_code(304, "ERROR_CORRUPTED_INPUT",
                       message="An input file was unreadable or failed its sha256 check (engine exit status 5).")
        spec.exit_code(305, "ERROR_ENGINE_FAILED", message="The ML engine failed: {message}")
        spec.exit_code(420, "ERROR_OUT_OF_MEMORY", message="The job ran out of (GPU) memory.")

    def codeinfo(self, arguments: list[str], launcher: list[str] = ()) -> CodeInfo:
        """``python [launcher] -m aiida_deeph.ml arguments`` (launcher: e.g. ``-m torch.distributed.run ...``)."""
        info = CodeInfo()
        info.code_uuid = self.inputs.code.uuid
        info.cmdline_params = [*launcher, "-m", "aiida_deeph.ml", *arguments]
        info.stdout_name, info.stderr_name = log_names(arguments[0])
        info.withmpi = self.inputs.metadata.options.withmpi
        return info

    def calcinfo(self, codeinfos: list[CodeInfo], local_copy_list=(), retrieve=(), retrieve_temporary=()) -> CalcInfo:
        info = CalcInfo()
        info.codes_info = codeinfos
        info.local_copy_list = list(local_copy_list)
        logs = [name for codeinfo in codeinfos for name in (codeinfo.stdout_name, codeinfo.stderr_name)]
        info.retrieve_list = [*logs, *(keep_path(path) for path in retrieve)]
        info.retrieve_temporary_list = [keep_path(path) for path in retrieve_temporary]
        return info

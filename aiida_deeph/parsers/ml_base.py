"""Shared checks of the parsers of the ML-engine CalcJobs: logs retrieved, and how the engine failed if it did."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from aiida_deeph.calculations.ml_base import log_names

OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class MLParser(Parser):
    """Base: ``command`` is the engine command whose logs tell whether it ran."""

    command: str

    def read_log(self, name: str) -> str:
        """A retrieved text file (path relative to the working directory), or "" when it was not retrieved."""
        try:
            return self.retrieved.base.repository.get_object_content(name)
        except (FileNotFoundError, IsADirectoryError):
            return ""

    def engine_failure(self) -> ExitCode | None:
        """The exit code for a failed engine run, or None when its logs show nothing wrong."""
        stdout, stderr = log_names(self.command)
        if stdout not in self.retrieved.base.repository.list_object_names():
            return self.exit_codes.ERROR_OUTPUT_STDOUT_MISSING
        errors = self.read_log(stderr)
        lowered = errors.lower()
        if any(marker in lowered for marker in OOM_MARKERS):
            return self.exit_codes.ERROR_OUT_OF_MEMORY
        if "sha256" in lowered or "corrupted" in lowered:
            return self.exit_codes.ERROR_CORRUPTED_INPUT
        if "Traceback" in errors or "error:" in lowered:
            last = [line for line in errors.strip().splitlines() if line.strip()][-1]
            return self.exit_codes.ERROR_ENGINE_FAILED.format(message=last)
        return None

    def folder_output(self, temporary_folder: str | None, folder_name: str, marker: str, port: str,
                      make_node: Callable[[Path], orm.Data]) -> ExitCode | None:
        """Output ``port`` = ``make_node(folder)`` for a retrieved engine output folder holding ``marker``; 303 when
        the marker is missing or the folder is unreadable (the node class's own checks raise ValueError)."""
        folder = Path(temporary_folder or "") / folder_name
        if not (folder / marker).is_file():
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{folder_name}/{marker}")
        try:
            node = make_node(folder)
        except ValueError as exc:  # DeepHFormatError and the data classes' checks
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{folder_name} is unreadable: {exc}")
        self.out(port, node)
        return None

"""Shared flow of the ``deeph.openmx`` and ``deeph.abacus`` parsers.

Read the main output into ``output_parameters`` (reader errors → 3xx with the reader's message; an incomplete output
of a job the scheduler killed for walltime → 400), stop at 410 if the SCF did not converge, then convert the
temporarily retrieved matrix files to a ``HamiltonianData`` unless they were kept on the remote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiida import orm
from aiida.engine import ExitCode
from aiida.parsers import Parser

from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.io.deeph_format import DeepHFormatError, DeepHStructure


class OutputMissing(Exception):
    """An expected output file is absent."""


def last_number(text: str, pattern: str) -> float | None:
    """The number captured by ``pattern`` on its last match, None when it never matches."""
    matches = re.findall(pattern, text, re.M)
    return float(matches[-1]) if matches else None


class LcaoParser(Parser):
    """Subclasses read the code's output (:meth:`parse_output`) and matrices (:meth:`convert`)."""

    @property
    def settings(self) -> dict:
        return self.node.inputs.settings.get_dict() if "settings" in self.node.inputs else {}

    @property
    def overlap_only(self) -> bool:
        return bool(self.settings.get("overlap_only", False))

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs) -> ExitCode | None:
        try:
            parameters = self.parse_output()
        except OutputMissing as exc:
            return self._unless_walltime(self.exit_codes.ERROR_OUTPUT_MISSING.format(filename=str(exc)))
        except DeepHFormatError as exc:
            return self._unless_walltime(self.exit_codes.ERROR_OUTPUT_READ.format(message=str(exc)))
        self.out("output_parameters", orm.Dict(parameters))
        if not parameters.get("converged", True):
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if self.settings.get("keep_matrices_remote", False):
            return None
        if retrieved_temporary_folder is None:
            return self.exit_codes.ERROR_NO_RETRIEVED_TEMPORARY_FOLDER
        try:
            structure = self.convert(Path(retrieved_temporary_folder))
        except OutputMissing as exc:
            return self.exit_codes.ERROR_MATRICES_MISSING.format(message=str(exc))
        except (DeepHFormatError, OSError) as exc:
            return self.exit_codes.ERROR_MATRICES_READ.format(message=str(exc))
        self.out("hamiltonian", HamiltonianData(structure=structure))
        return None

    def parse_output(self) -> dict:
        """``output_parameters`` from the retrieved output; raises OutputMissing or the reader's format error."""
        raise NotImplementedError

    def convert(self, folder: Path) -> DeepHStructure:
        """The DeepH structure from the matrix files in ``folder``."""
        raise NotImplementedError

    @contextmanager
    def retrieved_path(self, name: str) -> Iterator[Path]:
        """A retrieved file as a path on disk; OutputMissing when it was not retrieved."""
        repository = self.retrieved.base.repository
        try:
            repository.get_object(name)
        except FileNotFoundError:
            raise OutputMissing(name) from None
        with repository.as_path(name) as path:
            yield path

    def _unless_walltime(self, exit_code: ExitCode) -> ExitCode:
        """An unreadable output of a job the scheduler stopped for walltime is a walltime failure, not a bug."""
        walltime = self.node.process_class.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
        return self.exit_codes.ERROR_OUT_OF_WALLTIME if self.node.exit_status == walltime else exit_code

"""Parser of ``deeph.cp2k``: output parameters, and the DeepH-format Hamiltonian from the CSR files."""

from __future__ import annotations

from pathlib import Path

from aiida import orm
from aiida.parsers import Parser

from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.io import cp2k as cp2k_io
from aiida_deeph.io.deeph_format import DeepHFormatError


class DeepHCp2kParser(Parser):
    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        filename = self.node.get_option("output_filename")
        if filename not in self.retrieved.base.repository.list_object_names():
            return self.exit_codes.ERROR_OUTPUT_STDOUT_MISSING
        with self.retrieved.base.repository.as_path(filename) as path:
            try:
                output = cp2k_io.read_cp2k_output(path)
            except cp2k_io.Cp2kOutputError as exc:
                self.logger.error(str(exc))
                return self.exit_codes.ERROR_OUTPUT_READ

        parameters = output.as_dict()
        if output.walltime_exceeded:
            self.out("output_parameters", orm.Dict(parameters))
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if output.scf_failed or (output.finished and not output.scf_converged):
            self.out("output_parameters", orm.Dict(parameters))
            return self.exit_codes.ERROR_SCF_NOT_CONVERGED
        if output.aborted:
            self.logger.error(output.aborted)
            return self.exit_codes.ERROR_OUTPUT_CONTAINS_ABORT
        if not output.finished:  # killed from outside: by the scheduler for walltime, or cancelled
            walltime = self.node.process_class.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status
            if self.node.exit_status == walltime:
                return self.exit_codes.ERROR_OUT_OF_WALLTIME
            return self.exit_codes.ERROR_OUTPUT_INCOMPLETE
        if retrieved_temporary_folder is None or not output.images:
            self.out("output_parameters", orm.Dict(parameters))
            return self.exit_codes.ERROR_MATRICES_MISSING

        atoms = self.node.inputs.structure.get_ase()
        try:
            structure, diagnostics = cp2k_io.cp2k_to_deeph(
                Path(retrieved_temporary_folder), atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions,
                tuple(self.node.inputs.structure.pbc), output,
            )
        except cp2k_io.Cp2kMatricesMissing as exc:
            self.logger.error(str(exc))
            self.out("output_parameters", orm.Dict(parameters))
            return self.exit_codes.ERROR_MATRICES_MISSING
        except (DeepHFormatError, OSError) as exc:
            self.out("output_parameters", orm.Dict(parameters))
            return self.exit_codes.ERROR_MATRICES_CORRUPT.format(message=str(exc))
        parameters.update(diagnostics)
        self.out("output_parameters", orm.Dict(parameters))
        self.out("hamiltonian", HamiltonianData(structure=structure))
        return None

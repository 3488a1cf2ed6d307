"""``deeph.cp2k``: a CP2K SCF that always writes the real-space H(R), S(R) the DeepH format is made from.

Built on aiida-cp2k's ``Cp2kCalculation``: its spec (structure, kpoints, settings, parent folder, exit codes) and
its input renderer are reused; the input is assembled here so that the matrix output, the k-point mesh and the
wrapped coordinates that make every block land on its true R are always what the parser expects.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiida import orm
from aiida.common import CalcInfo, CodeInfo, InputValidationError
from aiida_cp2k.calculations import Cp2kCalculation
from aiida_cp2k.utils import Cp2kInput

from aiida_deeph.calculations.validation import (
    atom_symbols,
    kpoints_error,
    line_break_error,
    names_error,
    structure_error,
)
from aiida_deeph.io import cp2k as cp2k_io

WALLTIME_MARGIN = 0.9  # CP2K stops itself (wavefunction written) before the scheduler's limit
CP2K_DATA_DIRS = (os.environ.get("CP2K_DATA_DIR", ""), "/usr/share/cp2k", "/usr/share/cp2k/data")


def _names_per_element(node: orm.Str | orm.Dict, elements: list[str]) -> dict[str, str]:
    if isinstance(node, orm.Str):
        return {el: node.value for el in elements}
    return {el: node[el] for el in elements if el in node.get_dict()}


def _local_data_file(name: str) -> Path | None:
    for folder in CP2K_DATA_DIRS:
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _cell_error(structure: orm.StructureData) -> str | None:
    """The atoms must fit CP2K's cell along the non-periodic axes."""
    try:
        cp2k_io.cp2k_fractional(structure.get_ase().get_scaled_positions(wrap=False), tuple(structure.pbc))
    except ValueError as exc:
        return str(exc)
    return None


def validate_names(names: dict[str, str], elements: list[str], data_file: str, what: str) -> str | None:
    missing = [el for el in elements if el not in names]
    if missing:
        return f"no {what} given for {', '.join(missing)}"
    message = names_error((names[el] for el in elements), what)
    local = _local_data_file(data_file)
    if message or local is None:  # without a local copy, the data file lives on the remote: CP2K checks it there
        return message
    entries = cp2k_io.data_file_entries(local)
    unknown = [f"{el}: {names[el]}" for el in elements if names[el] not in entries.get(el, ())]
    if unknown:
        return f"{what} not in {local}: {', '.join(unknown)}"
    return None


def validate_inputs(inputs, _ctx) -> str | None:
    """Refuse bad input before anything is submitted."""
    structure = inputs.get("structure")
    if structure is None:
        return None  # the port is excluded where a WorkChain sets the structure per sample
    kpoints, parameters = inputs.get("kpoints"), inputs.get("parameters")
    message = (structure_error(structure) or _cell_error(structure)
               or (kpoints_error(kpoints, structure.pbc) if kpoints is not None else None)
               or (line_break_error(parameters.get_dict(), "parameters") if parameters is not None else None))
    if message:
        return message
    elements = list(dict.fromkeys(atom_symbols(structure)))
    for key, data_file, what in (("basis_set", "BASIS_MOLOPT", "basis set"),
                                 ("pseudopotential", "GTH_POTENTIALS", "pseudopotential")):
        if key in inputs:
            message = validate_names(_names_per_element(inputs[key], elements), elements, data_file, what)
            if message:
                return message
    return None


class DeepHCp2kCalculation(Cp2kCalculation):
    """CP2K SCF with real-space KS and overlap matrices written for the DeepH format."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs["pseudos_upf"].required = False
        spec.input("structure", valid_type=orm.StructureData, help="The structure; atoms grouped by element.")
        spec.input("kpoints", valid_type=orm.KpointsData, help="Monkhorst–Pack mesh (1 along non-periodic axes).")
        spec.input("parameters", valid_type=orm.Dict, required=False,
                   help="CP2K input sections (FORCE_EVAL/DFT settings); matrix output, cell, coordinates, kinds "
                        "and k-points are added by the plugin.")
        spec.input("basis_set", valid_type=(orm.Str, orm.Dict), default=lambda: orm.Str("DZVP-MOLOPT-SR-GTH"),
                   help="Basis set name (all elements) or {element: name}, from CP2K's BASIS_MOLOPT.")
        spec.input("pseudopotential", valid_type=(orm.Str, orm.Dict), default=lambda: orm.Str("GTH-PBE"),
                   help="GTH pseudopotential name (all elements) or {element: name}, from GTH_POTENTIALS.")
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.cp2k", non_db=True)
        spec.inputs.validator = validate_inputs

        spec.output("hamiltonian", valid_type=orm.Data, required=False,
                    help="HamiltonianData: H(R) and S(R) in the DeepH format (eV, Å).")
        spec.exit_code(305, "ERROR_OUTPUT_STDOUT_MISSING", message="CP2K's main output file was not retrieved.")
        spec.exit_code(330, "ERROR_MATRICES_MISSING",
                       message="CP2K wrote no real-space matrices (no image table or CSR files missing).")
        spec.exit_code(331, "ERROR_MATRICES_CORRUPT", message="The real-space matrix files are corrupt: {message}")

    def _cp2k_input(self) -> tuple[Cp2kInput, str]:
        atoms = self.inputs.structure.get_ase()
        species = atoms.get_chemical_symbols()
        elements = list(dict.fromkeys(species))
        subsys, xyz = cp2k_io.structure_sections(
            atoms.cell.array, species, atoms.positions, tuple(self.inputs.structure.pbc),
            _names_per_element(self.inputs.basis_set, elements),
            _names_per_element(self.inputs.pseudopotential, elements),
        )
        params = Cp2kInput(self.inputs.parameters.get_dict() if "parameters" in self.inputs else {})
        params.add_keyword("GLOBAL/PROJECT", cp2k_io.PROJECT)
        params.add_keyword("GLOBAL/RUN_TYPE", "ENERGY")
        walltime = self.node.get_option("max_wallclock_seconds")
        if walltime:
            params.add_keyword("GLOBAL/WALLTIME", WALLTIME_MARGIN * walltime, override=False)
        params.add_keyword("FORCE_EVAL/METHOD", "QUICKSTEP", override=False)
        params.add_keyword("FORCE_EVAL/DFT/BASIS_SET_FILE_NAME", "BASIS_MOLOPT", override=False)
        params.add_keyword("FORCE_EVAL/DFT/POTENTIAL_FILE_NAME", "GTH_POTENTIALS", override=False)
        params.add_keyword("FORCE_EVAL/DFT/PRINT", cp2k_io.matrix_print_section())
        mesh, _ = self.inputs.kpoints.get_kpoints_mesh()
        params.add_keyword("FORCE_EVAL/DFT/KPOINTS", cp2k_io.kpoints_section(tuple(int(n) for n in mesh)))
        for name, section in subsys.items():
            params.add_keyword(f"FORCE_EVAL/SUBSYS/{name}", section)
        return params, xyz

    def prepare_for_submission(self, folder):
        params, xyz = self._cp2k_input()
        try:
            text = params.render()
        except ValueError as exc:
            raise InputValidationError(f"invalid CP2K parameters: {exc}") from exc
        with folder.open(self._DEFAULT_INPUT_FILE, "w", encoding="utf-8") as handle:
            handle.write(text)
        with folder.open(cp2k_io.COORDS_FILE, "w", encoding="utf-8") as handle:
            handle.write(xyz)

        settings = self.inputs.settings.get_dict() if "settings" in self.inputs else {}
        codeinfo = CodeInfo()
        codeinfo.cmdline_params = list(settings.pop("cmdline", [])) + ["-i", self._DEFAULT_INPUT_FILE]
        codeinfo.stdout_name = self._DEFAULT_OUTPUT_FILE
        codeinfo.join_files = True
        codeinfo.code_uuid = self.inputs.code.uuid

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [self._DEFAULT_OUTPUT_FILE, *settings.pop("additional_retrieve_list", [])]
        # The CSR files are large: parsed from a temporary retrieve and never stored; the DeepH h5 files are.
        calcinfo.retrieve_temporary_list = [f"{cp2k_io.PROJECT}-*_SPIN_*_R_*.csr"]
        calcinfo.remote_symlink_list = []
        calcinfo.remote_copy_list = []
        if "parent_calc_folder" in self.inputs:
            parent = self.inputs.parent_calc_folder
            entry = (parent.computer.uuid, parent.get_remote_path(), self._DEFAULT_PARENT_CALC_FLDR_NAME)
            same = self.inputs.code.computer.uuid == parent.computer.uuid
            (calcinfo.remote_symlink_list if same else calcinfo.remote_copy_list).append(entry)
        if settings:
            raise InputValidationError(f"unknown settings keys: {', '.join(settings)}")
        return calcinfo

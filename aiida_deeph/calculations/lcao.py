"""Shared base of ``deeph.openmx`` and ``deeph.abacus``: LCAO codes whose real-space H(R), S(R) become DeepH data.

Both take a structure (atoms grouped by element), a Γ-centred k-point mesh, the code's own keywords, one
pseudopotential and one :class:`~aiida_deeph.data.orbital.OrbitalData` per element, and ``settings``. Keywords are
checked against the code's keyword list (``keywords/<code>.txt``) before submission; the keywords the plugin writes
itself are refused. AiiDA ``Dict`` keys cannot contain dots, so OpenMX keywords are given with ``_`` for ``.``
(``scf_maxIter``); matching ignores case and that difference, and the input gets the manual's spelling.

The matrix files are large: they are parsed from a temporary retrieve and only the DeepH-format result is stored, or
with ``keep_matrices_remote`` they are left on the remote for a later job.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from aiida import orm
from aiida.common import CalcInfo, CodeInfo
from aiida.common.folders import Folder
from aiida.engine import CalcJob
from aiida_pseudo.data.pseudo import PseudoPotentialData

from aiida_deeph.calculations.validation import (
    atom_symbols,
    kpoints_error,
    line_break_error,
    names_error,
    structure_error,
)
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.orbital import OrbitalData

SUGGESTION_CUTOFF = 0.75  # difflib similarity below which a keyword is not suggested
SUGGESTION_MARGIN = 0.05  # suggest the keywords within this similarity of the best match
SETTINGS = {
    "keep_matrices_remote": "bool: leave the matrix files on the remote instead of converting them",
    "overlap_only": "bool: compute the overlap S(R) only (see the CalcJob's docstring)",
    "initial_magnetic_moments": "{element: μB}: starting spin moment per atom of the element",
    "cmdline": "list of extra command-line arguments",
    "additional_retrieve_list": "list of extra files to retrieve",
}


def normalize(key: str) -> str:
    """The form keywords are compared in: lower case, ``_`` for ``.`` (no two known keywords collide)."""
    return key.lower().replace(".", "_")


@lru_cache(maxsize=None)
def known_keywords(code: str) -> dict[str, str]:
    """Normalized keyword → its spelling in the code's manual."""
    text = resources.files(__package__).joinpath("keywords", f"{code}.txt").read_text(encoding="utf-8")
    names = (line.strip() for line in text.splitlines())
    return {normalize(name): name for name in names if name and not name.startswith("#")}


def check_keywords(parameters: Mapping[str, Any], code: str, controlled: Mapping[str, str]) -> str | None:
    """Why ``parameters`` cannot be used: a plugin-controlled keyword, or an unknown one with its close matches.

    ``controlled`` maps normalized keywords to the reason the plugin sets them.
    """
    known = known_keywords(code)
    seen: dict[str, str] = {}
    for key in parameters:
        name = normalize(key)
        if name in seen:
            return f"keyword given twice: `{seen[name]}` and `{key}`"
        seen[name] = key
        if name in controlled:
            return f"`{key}` is set by the plugin ({controlled[name]}); remove it from `parameters`"
        if name not in known:
            close = [known[match].replace(".", "_") for match in _close_matches(name, list(known))]
            hint = f"; did you mean {' or '.join(close)}?" if close else f" (not in the {code} keyword list)"
            return f"unknown {code} keyword `{key}`{hint}"
    return None


def _close_matches(word: str, candidates: list[str]) -> list[str]:
    """The candidates nearly as similar to ``word`` as the best one (so a clear typo gets a single suggestion)."""
    scored = sorted(((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates), reverse=True)
    best = scored[0][0] if scored else 0.0
    return [c for ratio, c in scored[:3] if ratio >= max(SUGGESTION_CUTOFF, best - SUGGESTION_MARGIN)]


def element_order(structure: orm.StructureData) -> list[str]:
    """Elements in order of first appearance."""
    return list(dict.fromkeys(atom_symbols(structure)))


def _kpoints_error(kpoints: orm.KpointsData | None, pbc: tuple[bool, bool, bool]) -> str | None:
    """A mesh (1 along non-periodic axes) without offset; no k-points at all is left to the caller (a WorkChain)."""
    if kpoints is None:
        return None
    message = kpoints_error(kpoints, pbc)
    if message:
        return message
    _, offset = kpoints.get_kpoints_mesh()
    if any(abs(o) > 1e-12 for o in offset):
        return f"k-point mesh offset {list(offset)} is not supported: use a Γ-centred mesh (offset 0)"
    return None


def format_value(value: Any, true: str, false: str) -> str:
    """A keyword value as input text: booleans as the code spells them, lists space-separated."""
    if isinstance(value, bool):
        return true if value else false
    if isinstance(value, (list, tuple)):
        return " ".join(format_value(v, true, false) for v in value)
    return str(value)


def _per_element_error(nodes: Mapping[str, orm.Data], elements: list[str], what: str, namespace: str) -> str | None:
    missing = [el for el in elements if el not in nodes]
    if missing:
        return f"no {what} for {', '.join(missing)}: give `{namespace}.{missing[0]}`"
    extra = sorted(set(nodes) - set(elements))
    if extra:
        return f"`{namespace}` has entries for elements not in the structure: {', '.join(extra)}"
    wrong = [f"{key} ({node.element})" for key, node in nodes.items() if node.element != key]
    if wrong:
        return f"`{namespace}` entries of another element: {', '.join(wrong)}"
    return None


def _settings_error(settings: Mapping[str, Any], elements: list[str]) -> str | None:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        return f"unknown settings {', '.join(unknown)}; known: " + "; ".join(f"{k} ({v})" for k, v in SETTINGS.items())
    for key in ("keep_matrices_remote", "overlap_only"):
        if not isinstance(settings.get(key, False), bool):
            return f"settings.{key} must be true or false"
    for key in ("cmdline", "additional_retrieve_list"):
        if not isinstance(settings.get(key, []), list):
            return f"settings.{key} must be a list"
    moments = settings.get("initial_magnetic_moments", {})
    if not isinstance(moments, Mapping) or set(moments) - set(elements):
        return f"settings.initial_magnetic_moments must map elements of the structure ({', '.join(elements)}) to μB"
    return None


class LcaoCalculation(CalcJob):
    """Base of the OpenMX and ABACUS CalcJobs; subclasses set the class attributes and write the input files."""

    _code = "lcao"  # keyword list, parser and entry-point name: deeph.<code>
    _pseudo_type: type[PseudoPotentialData] = PseudoPotentialData
    _controlled: Mapping[str, str] = {}  # normalized keyword → why the plugin sets it
    _restart_copies: tuple[tuple[str, str], ...] = ()  # (path in the parent, target): its charge density
    _stdout = "aiida.std"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=orm.StructureData, help="The structure; atoms grouped by element.")
        spec.input("kpoints", valid_type=orm.KpointsData, help="Γ-centred k-point mesh (1 along non-periodic axes).")
        spec.input("parameters", valid_type=orm.Dict, required=False,
                   help="The code's own keywords (checked against its keyword list; `_` for `.` in OpenMX's). "
                        "Cell, atoms, species, k-points and the matrix output are written by the plugin.")
        spec.input_namespace("pseudos", valid_type=cls._pseudo_type, dynamic=True,
                             help="Pseudopotential per element symbol.")
        spec.input_namespace("orbitals", valid_type=OrbitalData, dynamic=True,
                             help="Numerical atomic-orbital basis file (OrbitalData) per element symbol.")
        spec.input("settings", valid_type=orm.Dict, required=False,
                   help="; ".join(f"{key}: {text}" for key, text in SETTINGS.items()))
        spec.input("parent_folder", valid_type=orm.RemoteData, required=False,
                   help="Remote folder of an earlier run of the same structure: the SCF starts from its charge "
                        "density (copied, so the parent stays as it was).")
        spec.input("metadata.options.parser_name", valid_type=str, default=f"deeph.{cls._code}", non_db=True)
        spec.input("metadata.options.output_filename", valid_type=str, default=cls._stdout, non_db=True)
        spec.inputs.validator = cls.validate_inputs

        spec.output("output_parameters", valid_type=orm.Dict,
                    help="version, fermi_energy (eV), energy (eV), converged, scf_steps, wall_time (s).")
        spec.output("hamiltonian", valid_type=HamiltonianData, required=False,
                    help="H(R) and S(R) (S only for overlap-only runs) in the DeepH format (eV, Å).")
        spec.default_output_node = "output_parameters"
        spec.exit_code(301, "ERROR_NO_RETRIEVED_TEMPORARY_FOLDER",
                       message="The temporary folder with the matrix files was not retrieved.")
        spec.exit_code(302, "ERROR_OUTPUT_MISSING", message="The output file {filename} was not retrieved.")
        spec.exit_code(310, "ERROR_OUTPUT_READ", message="The output could not be read: {message}")
        spec.exit_code(320, "ERROR_MATRICES_MISSING", message="No matrix files were written or retrieved: {message}")
        spec.exit_code(321, "ERROR_MATRICES_READ", message="The matrix files could not be read: {message}")
        spec.exit_code(400, "ERROR_OUT_OF_WALLTIME", message="The calculation stopped because it ran out of walltime.")
        spec.exit_code(410, "ERROR_SCF_NOT_CONVERGED", message="The SCF cycle did not converge.")

    @classmethod
    def validate_inputs(cls, inputs, _ctx) -> str | None:
        """Refuse bad input before anything is submitted."""
        structure = inputs.get("structure")
        if structure is None:
            return None  # the port is excluded where a WorkChain sets the structure per sample
        elements = element_order(structure)
        settings = inputs["settings"].get_dict() if "settings" in inputs else {}
        parameters = inputs["parameters"].get_dict() if "parameters" in inputs else {}
        orbitals = inputs.get("orbitals", {})
        pseudos = inputs.get("pseudos", {})
        return (
            structure_error(structure)
            or _kpoints_error(inputs.get("kpoints"), structure.pbc)
            or _settings_error(settings, elements)
            or check_keywords(parameters, cls._code, cls._controlled)
            or line_break_error(parameters, "parameters")
            or _per_element_error(pseudos, elements, "pseudopotential", "pseudos")
            or _per_element_error(orbitals, elements, "orbital file", "orbitals")
            or names_error((node.filename for node in (*pseudos.values(), *orbitals.values())), "file name")
            or next((f"orbitals.{el} is an {node.code} file ({node.filename}); deeph.{cls._code} needs "
                     f"{cls._code} orbitals" for el, node in orbitals.items() if node.code != cls._code), None)
            or cls._validate_code_specific(inputs, settings)
        )

    @classmethod
    def _validate_code_specific(cls, inputs, settings: dict) -> str | None:
        """Further checks of a subclass."""
        return None

    # --- input writing --------------------------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return self.inputs.settings.get_dict() if "settings" in self.inputs else {}

    @property
    def parameters(self) -> dict:
        return self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}

    @property
    def overlap_only(self) -> bool:
        return bool(self.settings.get("overlap_only", False))

    def prepare_for_submission(self, folder: Folder) -> CalcInfo:
        settings = self.settings
        for name, text in self._input_files().items():
            with folder.open(name, "w", encoding="utf-8") as handle:
                handle.write(text)

        codeinfo = CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [*self._cmdline(), *settings.get("cmdline", [])]  # OpenMX: the input file first
        codeinfo.stdout_name = self.inputs.metadata.options.output_filename

        calcinfo = CalcInfo()
        calcinfo.codes_info = [codeinfo]
        elements = element_order(self.inputs.structure)
        calcinfo.local_copy_list = [
            (node.uuid, node.filename, target(node))
            for el in elements
            for node, target in ((self.inputs.pseudos[el], self._pseudo_target),
                                 (self.inputs.orbitals[el], self._orbital_target))
        ]
        calcinfo.retrieve_list = [codeinfo.stdout_name, *self._retrieve_list(),
                                  *settings.get("additional_retrieve_list", [])]
        # The matrix files are large: converted by the parser from a temporary retrieve and never stored as such.
        calcinfo.retrieve_temporary_list = [] if settings.get("keep_matrices_remote") else self._matrix_files()
        if self.restarting:
            self._prepare_restart(folder)
            parent = self.inputs.parent_folder
            calcinfo.remote_copy_list = [(parent.computer.uuid, f"{parent.get_remote_path()}/{source}", target)
                                         for source, target in self._restart_copies]
        return calcinfo

    def _prepare_restart(self, folder: Folder) -> None:
        """Make what the copies of the parent's charge density need (a subclass hook)."""

    @property
    def restarting(self) -> bool:
        """Whether this run starts from a parent's charge density."""
        return "parent_folder" in self.inputs

    def _input_files(self) -> dict[str, str]:
        """Input file name → content."""
        raise NotImplementedError

    def _cmdline(self) -> list[str]:
        return []

    def _pseudo_target(self, pseudo: PseudoPotentialData) -> str:
        """Where the pseudopotential file goes in the working directory."""
        return pseudo.filename

    def _orbital_target(self, orbital: OrbitalData) -> str:
        return orbital.filename

    def _retrieve_list(self) -> list:
        """Small output files kept in the ``retrieved`` node, besides the standard output."""
        raise NotImplementedError

    def _matrix_files(self) -> list:
        """The matrix files the parser converts (retrieved temporarily)."""
        raise NotImplementedError

    def initial_moment(self, element: str) -> float:
        return float(self.settings.get("initial_magnetic_moments", {}).get(element, 0.0))

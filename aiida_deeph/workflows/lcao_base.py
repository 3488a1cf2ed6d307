"""Shared restart WorkChain of ``deeph.openmx.base`` and ``deeph.abacus.base`` (aiida-core's BaseRestartWorkChain).

Protocols give the code's keywords; pseudopotentials come from an aiida-pseudo family and orbitals from a
``deeph.orbital.family``. A failed SCF is rerun with twice the SCF steps and half the mixing weight, a job out of
walltime with 1.5 times the time.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiida import orm
from aiida.common.exceptions import NotExistent
from aiida.engine import ProcessHandlerReport, process_handler
from aiida.plugins.entry_point import get_entry_point_from_class
from aiida_pseudo.groups.family import PseudoPotentialFamily

from aiida_deeph.calculations.lcao import LcaoCalculation, element_order, normalize
from aiida_deeph.data.orbital import OrbitalData, load_orbital_family
from aiida_deeph.workflows.dft_base import DftBaseWorkChain

SCF_STEPS_FACTOR = 2
MIXING_DAMPING = 0.5
MIN_MIXING_WEIGHT = 0.01


def load_pseudo_family(label: str, pseudo_type: type) -> PseudoPotentialFamily:
    """The aiida-pseudo family ``label``; a ValueError saying how to install it when it is missing."""
    entry_point = get_entry_point_from_class(pseudo_type.__module__, pseudo_type.__name__)[1].name
    try:
        family = orm.load_group(label=label)
    except NotExistent:
        raise ValueError(
            f"pseudopotential family {label!r} is not installed: install it from a folder with one {entry_point} "
            f"file per element with `aiida-pseudo install family <folder> {label} -P {entry_point}`"
        ) from None
    if not isinstance(family, PseudoPotentialFamily):
        raise ValueError(f"group {label!r} is a {type(family).__name__}, not an aiida-pseudo family")
    return family


def _keyword(parameters: Mapping, name: str) -> str:
    """The key of keyword ``name`` in ``parameters`` (any case, ``_`` for ``.``), else its Dict-safe form."""
    return next((key for key in parameters if normalize(key) == normalize(name)), name.replace(".", "_"))


class LcaoBaseWorkChain(DftBaseWorkChain):
    """Run an LCAO CalcJob until it succeeds; subclasses name the process, namespace and SCF keywords."""

    _process_class: type[LcaoCalculation] = LcaoCalculation
    _namespace = "lcao"
    _scf_steps: tuple[str, int] = ("", 0)  # keyword of the maximum SCF steps, code default
    _mixing_weights: tuple[tuple[str, float], ...] = ()  # mixing-weight keywords, code defaults

    @classmethod
    def get_builder_from_protocol(
        cls, code: orm.Code, structure: orm.StructureData, protocol: str | None = None,
        overrides: dict | None = None, *, pseudo_family: str | None = None, orbital_family: str | None = None, **_,
    ):
        """A builder from ``protocol`` (fast, moderate, precise) and ``overrides``, with the pseudopotentials and
        orbitals of the structure's elements from the families (defaults: the protocol's ``pseudo_family`` and
        ``orbital_family``).

        :raises ValueError: unknown protocol, a family that is not installed or lacks an element, or of another code.
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        calc = inputs[cls._namespace]
        elements = element_order(structure)
        pseudo_type = cls._process_class._pseudo_type
        pseudos = load_pseudo_family(pseudo_family or inputs["pseudo_family"], pseudo_type).get_pseudos(
            elements=elements)
        wrong = sorted(el for el, node in pseudos.items() if not isinstance(node, pseudo_type))
        if wrong:
            raise ValueError(f"the pseudopotentials of {', '.join(wrong)} are not {pseudo_type.__name__}, "
                             f"which deeph.{cls._process_class._code} needs")
        orbitals = load_orbital_family(orbital_family or inputs["orbital_family"]).get_orbitals(elements=elements)
        _check_orbital_code(orbitals, cls._process_class._code)

        builder = cls.get_builder()
        namespace = builder[cls._namespace]
        namespace.code = code
        namespace.structure = structure
        namespace.parameters = orm.Dict(calc["parameters"])
        namespace.pseudos = pseudos
        namespace.orbitals = orbitals
        namespace.metadata = calc["metadata"]
        if "settings" in calc:
            namespace.settings = orm.Dict(calc["settings"])
        builder.kpoints_distance = orm.Float(inputs["kpoints_distance"])
        builder.max_iterations = orm.Int(inputs["max_iterations"])
        builder.clean_workdir = orm.Bool(inputs["clean_workdir"])
        return builder

    @process_handler(priority=500, exit_codes=[LcaoCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED])
    def handle_scf_not_converged(self, node):
        """Rerun from the failed run's charge density with twice the SCF steps and half the mixing weights."""
        parameters = self.ctx.inputs.parameters.get_dict() if "parameters" in self.ctx.inputs else {}
        name, default = self._scf_steps
        key = _keyword(parameters, name)
        update = {key: SCF_STEPS_FACTOR * int(parameters.get(key, default))}
        for name, default in self._mixing_weights:
            key = _keyword(parameters, name)
            update[key] = max(MIN_MIXING_WEIGHT, MIXING_DAMPING * float(parameters.get(key, default)))
        self.ctx.inputs.parameters = orm.Dict({**parameters, **update})
        restart = "remote_folder" in node.outputs
        if restart:
            self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report(f"{node.process_label}<{node.pk}>: SCF not converged; restarting with "
                    + ", ".join(f"{key} {value:g}" for key, value in update.items())
                    + (" from its charge density" if restart else ""))
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=510, exit_codes=[LcaoCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, node):
        """Rerun with 1.5 times the wall time."""
        walltime = self.more_walltime()
        self.report(f"{node.process_label}<{node.pk}>: out of walltime; restarting with {walltime} s")
        return ProcessHandlerReport(do_break=True)


def _check_orbital_code(orbitals: Mapping[str, OrbitalData], code: str) -> None:
    wrong = sorted(f"{el} ({node.filename})" for el, node in orbitals.items() if node.code != code)
    if wrong:
        raise ValueError(f"the orbital family holds {', '.join(wrong)}, not {code} orbital files")

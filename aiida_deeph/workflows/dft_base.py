"""What every DFT restart WorkChain shares: the exposed CalcJob namespace, the k-point mesh from an explicit mesh
or a density, the outline, and the walltime handler's arithmetic. Subclasses add protocols and handlers."""

from __future__ import annotations

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, CalcJob, ProcessHandlerReport, process_handler, while_

from aiida_deeph.workflows.protocols import ProtocolMixin
from aiida_deeph.workflows.restart import StopOnUnknownFailure

WALLTIME_FACTOR = 1.5


class DftBaseWorkChain(ProtocolMixin, StopOnUnknownFailure, BaseRestartWorkChain):
    """BaseRestartWorkChain around ``_process_class`` exposed in the ``_namespace`` namespace."""

    _namespace: str

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace=cls._namespace, exclude=("kpoints",))
        spec.input("kpoints", valid_type=orm.KpointsData, required=False, help="Explicit k-point mesh.")
        spec.input("kpoints_distance", valid_type=orm.Float, required=False,
                   help="Mesh spacing in Å⁻¹ (used when no explicit mesh is given).")
        spec.inputs.validator = cls.validate_kpoints_inputs
        spec.outline(
            cls.setup,
            cls.set_kpoints,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.expose_outputs(cls._process_class)

    @staticmethod
    def validate_kpoints_inputs(inputs, _ctx):
        if ("kpoints" in inputs) == ("kpoints_distance" in inputs):
            return "give exactly one of `kpoints` and `kpoints_distance`"
        return None

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, self._namespace))

    def set_kpoints(self):
        """The explicit mesh, or one of the requested density for the structure's cell (1 along vacuum axes)."""
        if "kpoints" in self.inputs:
            self.ctx.inputs.kpoints = self.inputs.kpoints
            return
        kpoints = orm.KpointsData()
        kpoints.set_cell_from_structure(self.ctx.inputs.structure)
        kpoints.set_kpoints_mesh_from_density(self.inputs.kpoints_distance.value, force_parity=False)
        self.ctx.inputs.kpoints = kpoints

    def _fewer_k_groups(self) -> None:
        """Lower the code's k-point parallelism (less memory per process); a subclass hook."""

    @process_handler(priority=300, exit_codes=[CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_MEMORY])
    def handle_out_of_memory(self, node):
        """Twice the nodes, and less k-point parallelism where the code has it."""
        options = dict(self.ctx.inputs.metadata.get("options", {}))
        resources = dict(options.get("resources", {}))
        resources["num_machines"] = 2 * int(resources.get("num_machines", 1))
        options["resources"] = resources
        self.ctx.inputs.metadata["options"] = options
        self._fewer_k_groups()
        self.report(f"{node.process_label}<{node.pk}>: out of memory; restarting on {resources['num_machines']} nodes")
        return ProcessHandlerReport(do_break=True)

    def more_walltime(self) -> int:
        """Raise the next run's wall time by WALLTIME_FACTOR; returns the new limit in seconds."""
        options = dict(self.ctx.inputs.metadata.get("options", {}))
        options["max_wallclock_seconds"] = int(WALLTIME_FACTOR * options.get("max_wallclock_seconds", 3600))
        self.ctx.inputs.metadata["options"] = options
        return options["max_wallclock_seconds"]

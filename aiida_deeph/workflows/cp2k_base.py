"""``deeph.cp2k.base``: ``deeph.cp2k`` under aiida-core's BaseRestartWorkChain, with protocols."""

from __future__ import annotations

from aiida import orm
from aiida.engine import ProcessHandlerReport, process_handler

from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.workflows.dft_base import DftBaseWorkChain
from aiida_deeph.workflows.protocols import recursive_merge

MIXING_DAMPING = 0.7
MIN_MIXING_ALPHA = 0.05
WAVEFUNCTION_FILES = ("aiida-RESTART.kp", "aiida-RESTART.wfn")  # k-point and Γ-only runs


class Cp2kBaseWorkChain(DftBaseWorkChain):
    """Run ``deeph.cp2k`` until it succeeds, fixing SCF non-convergence and walltime on the way."""

    _process_class = DeepHCp2kCalculation
    _protocol_file = "cp2k"
    _namespace = "cp2k"

    @classmethod
    def get_builder_from_protocol(cls, code: orm.Code, structure: orm.StructureData, protocol: str | None = None,
                                  overrides: dict | None = None, **_):
        """A builder with the inputs of ``protocol`` (``fast``, ``moderate``, ``precise``) merged with ``overrides``."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        cp2k = inputs["cp2k"]
        builder = cls.get_builder()
        builder.cp2k.code = code
        builder.cp2k.structure = structure
        builder.cp2k.parameters = orm.Dict(cp2k["parameters"])
        for key in ("basis_set", "pseudopotential"):
            value = cp2k[key]
            builder.cp2k[key] = orm.Dict(value) if isinstance(value, dict) else orm.Str(value)
        builder.cp2k.metadata = cp2k["metadata"]
        if "settings" in cp2k:
            builder.cp2k.settings = orm.Dict(cp2k["settings"])
        builder.kpoints_distance = orm.Float(inputs["kpoints_distance"])
        builder.max_iterations = orm.Int(inputs["max_iterations"])
        builder.clean_workdir = orm.Bool(inputs["clean_workdir"])
        return builder

    def _update_parameters(self, update: dict) -> None:
        current = self.ctx.inputs.parameters.get_dict() if "parameters" in self.ctx.inputs else {}
        self.ctx.inputs.parameters = orm.Dict(recursive_merge(current, update))

    @process_handler(priority=500, exit_codes=[DeepHCp2kCalculation.exit_codes.ERROR_SCF_NOT_CONVERGED])
    def handle_scf_not_converged(self, node):
        """Continue from the last wavefunction with twice the SCF steps and gentler mixing."""
        scf = self.ctx.inputs.parameters.get_dict().get("FORCE_EVAL", {}).get("DFT", {}).get("SCF", {})
        max_scf = 2 * int(scf.get("MAX_SCF", 50))
        alpha = max(MIN_MIXING_ALPHA, MIXING_DAMPING * float(scf.get("MIXING", {}).get("ALPHA", 0.4)))
        self._update_parameters({"FORCE_EVAL": {"DFT": {"SCF": {"MAX_SCF": max_scf, "MIXING": {"ALPHA": alpha}}}}})
        restart = self._restart_from(node)
        self.report(f"{node.process_label}<{node.pk}>: SCF not converged; restarting with MAX_SCF {max_scf}, "
                    f"mixing ALPHA {alpha:.3g}" + (f" from {restart}" if restart else ""))
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=510, exit_codes=[DeepHCp2kCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_out_of_walltime(self, node):
        """More wall time, and continue from the last wavefunction when CP2K left one."""
        walltime = self.more_walltime()
        restart = self._restart_from(node)
        self.report(f"{node.process_label}<{node.pk}>: out of walltime; restarting with {walltime} s"
                    + (f" from {restart}" if restart else ""))
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=400, exit_codes=[DeepHCp2kCalculation.exit_codes.ERROR_OUTPUT_INCOMPLETE])
    def handle_cut_short(self, node):
        """The run was cut short from outside (cancelled, killed, node failure): run it again, from its wavefunction."""
        restart = self._restart_from(node)
        self.report(f"{node.process_label}<{node.pk}>: output cut short (job cancelled or killed); restarting"
                    + (f" from {restart}" if restart else ""))
        return ProcessHandlerReport(do_break=True)

    def _restart_from(self, node) -> str | None:
        """Point the next run at the wavefunction file ``node`` left, if any; returns its name."""
        try:
            names = node.outputs.remote_folder.listdir()
        except (OSError, AttributeError):  # no remote folder, or it is gone: start from scratch
            return None
        restart = next((name for name in WAVEFUNCTION_FILES if name in names), None)
        if restart:
            self.ctx.inputs.parent_calc_folder = node.outputs.remote_folder
            self._update_parameters({"FORCE_EVAL": {"DFT": {
                "WFN_RESTART_FILE_NAME": f"{DeepHCp2kCalculation._DEFAULT_PARENT_CALC_FLDR_NAME}{restart}",
                "SCF": {"SCF_GUESS": "RESTART"}}}})
        return restart

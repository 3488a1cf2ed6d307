"""``deeph.training``: ``deeph.train`` under a restart loop that never loses an epoch.

- walltime reached (the engine stops itself before the scheduler would, from ``max_wallclock_seconds``) or the job
  killed / cancelled mid-epoch: resume from the run's ``checkpoints/latest.pt``;
- a non-finite loss: halve the learning rate and resume from the last finite checkpoint;
- ``budget_seconds``: the training wall time of all runs together; when it is spent, the best model so far is the
  result (the WorkChain reports it).
"""

from __future__ import annotations

import json
import math

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, CalcJob, ProcessHandlerReport, process_handler, while_

from aiida_deeph.calculations.train import OUTPUTS, TrainCalculation
from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.workflows.protocols import ProtocolMixin, recursive_merge
from aiida_deeph.workflows.restart import StopOnUnknownFailure

WALLTIME_MARGIN = 0.9  # the engine stops before this fraction of max_wallclock_seconds (checkpoint and retrieval)
MIN_RUN_SECONDS = 60  # a budget remainder below this is not worth another job
LEARNING_RATE_FACTOR = 0.5
CUTOFF_MARGIN = 0.5  # Å beyond the longest pair, so that no pair sits where the radial envelope vanishes


def dataset_cutoff(dataset: DatasetData) -> float:
    """The model cutoff a dataset needs: its longest atom pair (any element pair) plus the margin, rounded up."""
    meta = json.loads(dataset.base.repository.get_object_content("dataset.json"))
    return float(math.ceil(max(meta["pair_cutoffs"].values()) + CUTOFF_MARGIN))


class TrainingWorkChain(ProtocolMixin, StopOnUnknownFailure, BaseRestartWorkChain):
    """Train a DeepH model, resuming from checkpoints through walltime, kills and NaN losses."""

    _process_class = TrainCalculation
    _protocol_file = "training"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(TrainCalculation, namespace="train")
        spec.input("budget_seconds", valid_type=orm.Int, required=False,
                   help="Total training wall time over all runs; the best model so far is returned when spent.")
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.prepare_run, cls.run_process, cls.inspect_process),
            cls.results,
        )
        spec.expose_outputs(TrainCalculation)

    @classmethod
    def get_builder_from_protocol(cls, code: orm.Code, dataset=None, protocol: str | None = None,
                                  overrides: dict | None = None, **_):
        """Protocol ``test``, ``fast``, ``moderate`` or ``precise`` (model size and epochs), with ``overrides``."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.train.code = code
        if dataset is not None:
            builder.train.dataset = dataset
        builder.train.parameters = orm.Dict(inputs["train"]["parameters"])
        builder.train.metadata = inputs["train"]["metadata"]
        if "settings" in inputs["train"]:
            builder.train.settings = orm.Dict(inputs["train"]["settings"])
        builder.max_iterations = orm.Int(inputs["max_iterations"])
        if inputs.get("budget_seconds"):
            builder.budget_seconds = orm.Int(inputs["budget_seconds"])
        return builder

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(TrainCalculation, "train"))
        self.ctx.spent_seconds = 0.0
        if "cutoff" not in self.ctx.inputs.parameters.get_dict().get("model", {}):
            cutoff = dataset_cutoff(self.ctx.inputs.dataset)
            self.ctx.inputs.parameters = orm.Dict(recursive_merge(self.ctx.inputs.parameters.get_dict(),
                                                                  {"model": {"cutoff": cutoff}}))
            self.report(f"model cutoff {cutoff} Å: the dataset's longest atom pair + {CUTOFF_MARGIN} Å")

    def prepare_run(self):
        """Let the engine stop itself before the job's wall time or the remaining budget runs out."""
        options = self.ctx.inputs.metadata.get("options", {})
        limits = [WALLTIME_MARGIN * options["max_wallclock_seconds"]] if options.get("max_wallclock_seconds") else []
        if "budget_seconds" in self.inputs:
            limits.append(self.inputs.budget_seconds.value - self.ctx.spent_seconds)
        if self.ctx.get("walltime_s") is None:  # the user's own per-run limit, read once
            self.ctx.walltime_s = self._train_parameters().get("walltime_s") or 0.0
        if self.ctx.walltime_s:
            limits.append(self.ctx.walltime_s)
        if limits:
            self._update_train({"walltime_s": float(min(limits))})

    def _train_parameters(self) -> dict:
        return self.ctx.inputs.parameters.get_dict().get("process", {}).get("train", {})

    def _update_train(self, update: dict) -> None:
        parameters = self.ctx.inputs.parameters.get_dict()
        self.ctx.inputs.parameters = orm.Dict(recursive_merge(parameters, {"process": {"train": update}}))

    def _resume_from(self, node) -> bool:
        """Point the next run at ``node``'s checkpoints; False when it left none."""
        try:
            names = node.outputs.remote_folder.listdir(f"{OUTPUTS}/checkpoints")
        except (OSError, AttributeError, KeyError):
            return False
        if "latest.pt" not in names:
            return False
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        return True

    def _spend(self, node) -> None:
        parameters = node.outputs.output_parameters.get_dict() if "output_parameters" in node.outputs else {}
        self.ctx.spent_seconds += float(parameters.get("wall_time_s") or 0.0)

    def _budget_spent(self) -> bool:
        return ("budget_seconds" in self.inputs
                and self.inputs.budget_seconds.value - self.ctx.spent_seconds < MIN_RUN_SECONDS)

    @process_handler(priority=600, exit_codes=[TrainCalculation.exit_codes.ERROR_OUT_OF_WALLTIME])
    def handle_walltime(self, node):
        """Resume from latest.pt; or, with the budget spent, finish with the best model so far."""
        self._spend(node)
        if self._budget_spent() and "model" in node.outputs:
            self.report(f"{node.process_label}<{node.pk}>: training budget of {self.inputs.budget_seconds.value} s "
                        "spent; the best model so far is the result")
            self.ctx.is_finished = True
            return ProcessHandlerReport(do_break=True)
        self._resume_from(node)
        self.report(f"{node.process_label}<{node.pk}>: walltime reached at epoch "
                    f"{node.outputs.output_parameters['epochs']}; resuming from its checkpoint")
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=590, exit_codes=[TrainCalculation.exit_codes.ERROR_NAN_LOSS])
    def handle_nan(self, node):
        """Halve the learning rate and resume from the last finite checkpoint."""
        self._spend(node)
        rate = LEARNING_RATE_FACTOR * self._train_parameters().get("learning_rate", 1e-3)
        self._update_train({"learning_rate": rate})
        resumed = self._resume_from(node)
        self.report(f"{node.process_label}<{node.pk}>: non-finite loss; learning rate {rate:.3g}, "
                    + ("resuming from the last finite checkpoint" if resumed else "restarting"))
        return ProcessHandlerReport(do_break=True)

    @process_handler(priority=580, exit_codes=[
        TrainCalculation.exit_codes.ERROR_ENGINE_FAILED, TrainCalculation.exit_codes.ERROR_OUTPUT_FILES_MISSING,
        TrainCalculation.exit_codes.ERROR_OUTPUT_STDOUT_MISSING, CalcJob.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME,
        CalcJob.exit_codes.ERROR_SCHEDULER_NODE_FAILURE])
    def handle_interrupted(self, node):
        """Killed, cancelled or cut short by the scheduler: resume from latest.pt when the run left one."""
        status = node.outputs.output_parameters.get("status") if "output_parameters" in node.outputs else None
        if status not in (None, "running") or not self._resume_from(node):
            return None  # a real engine error: the unknown-failure handler stops
        self._spend(node)
        self.report(f"{node.process_label}<{node.pk}>: interrupted (exit status {node.exit_status}); "
                    "resuming from its last checkpoint")
        return ProcessHandlerReport(do_break=True)

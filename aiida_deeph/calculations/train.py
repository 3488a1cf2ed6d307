"""``deeph.train``: train a DeepH-2 / DeepH-E3 model on a ``deeph.dataset`` (CPU, one GPU, or torchrun)."""

from __future__ import annotations

from aiida import orm

from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.model import ModelData

from .ml_base import MLCalculation, copy_folder_node, toml_dumps

CONFIG, DATASET, OUTPUTS, PARENT_MODEL = "config.toml", "dataset", "outputs", "parent_model"
RESUMED_OUTPUTS = ("checkpoints", "model", "curve.csv", "log")  # what a resumed run continues
PLUGIN_KEYS = {("data", "dataset_dir"), ("data", "outputs_dir"), ("process", "train", "resume"),
               ("process", "train", "init_model")}


def validate_parameters(parameters: orm.Dict, _ctx) -> str | None:
    """Catch unknown keys before submission with the engine's own config validation."""
    from aiida_deeph.ml.config import ConfigError, config_from_dict

    values = parameters.get_dict()
    for path in PLUGIN_KEYS:
        table = values
        for key in path[:-1]:
            table = table.get(key, {})
        if path[-1] in table:
            return f"{'.'.join(path)} is set by the plugin; remove it from parameters"
    try:
        config_from_dict({**values, "data": {**values.get("data", {}), "dataset_dir": "."}})
    except ConfigError as exc:
        return str(exc)
    return None


class TrainCalculation(MLCalculation):
    """``parameters`` is the training TOML as a dictionary (sections ``system``, ``data``, ``model``,
    ``process.train``); the dataset and output folders are set by the plugin. ``parent_folder`` (the remote folder
    of an earlier run) continues from its ``checkpoints/latest.pt``. ``parent_model`` fine-tunes a trained model: its
architecture, weights and target normalisation start the run (``[model]`` empty or equal to its config; its basis
must cover the dataset's); ``parent_folder`` takes precedence over it. ``settings``: ``torchrun`` =
    ``{"nproc_per_node": G, "nnodes": N, "rdzv_endpoint": "host:port"}`` for data-parallel training (with
    ``nnodes > 1`` the computer's MPI launcher starts one torchrun per node: one MPI process per machine)."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("dataset", valid_type=DatasetData)
        spec.input("parameters", valid_type=orm.Dict, validator=validate_parameters)
        spec.input("parent_folder", valid_type=orm.RemoteData, required=False,
                   help="Remote folder of an earlier deeph.train: resume from its latest checkpoint.")
        spec.input("parent_model", valid_type=ModelData, required=False,
                   help="A trained model to fine-tune: its architecture and weights initialise the run.")
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.train")
        spec.output("model", valid_type=ModelData)
        spec.output("output_parameters", valid_type=orm.Dict)
        spec.output("training_curve", valid_type=orm.XyData)
        spec.exit_code(400, "ERROR_OUT_OF_WALLTIME",
                       message="Training reached its walltime; latest.pt was saved: resume from the remote folder.")
        spec.exit_code(410, "ERROR_NAN_LOSS",
                       message="A non-finite loss or gradient stopped training: lower the learning rate and resume.")

    def _launcher(self) -> list[str]:
        torchrun = (self.inputs.settings.get_dict() if "settings" in self.inputs else {}).get("torchrun")
        if not torchrun:
            return []
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(torchrun.get("nproc_per_node", 1)),
                    "--nnodes", str(torchrun.get("nnodes", 1))]
        if torchrun.get("rdzv_endpoint"):
            return launcher + ["--rdzv_backend", "c10d", "--rdzv_endpoint", torchrun["rdzv_endpoint"]]
        return launcher + ["--standalone"]

    def prepare_for_submission(self, folder):
        values = self.inputs.parameters.get_dict()
        values.setdefault("data", {}).update({"dataset_dir": DATASET, "outputs_dir": OUTPUTS})
        copies = copy_folder_node(self.inputs.dataset, DATASET)
        if "parent_model" in self.inputs:
            values.setdefault("process", {}).setdefault("train", {})["init_model"] = PARENT_MODEL
            copies += copy_folder_node(self.inputs.parent_model, PARENT_MODEL)
        with folder.open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(toml_dumps(values))
        folder.get_subfolder(OUTPUTS, create=True)  # the parent's checkpoints are copied into it
        arguments = ["train", CONFIG] + (["--resume"] if "parent_folder" in self.inputs else [])
        codeinfo = self.codeinfo(arguments, self._launcher())
        calcinfo = self.calcinfo(
            [codeinfo],
            copies,
            retrieve=[f"{OUTPUTS}/metrics.json", f"{OUTPUTS}/curve.csv", f"{OUTPUTS}/log"],
            retrieve_temporary=[f"{OUTPUTS}/model"],
        )
        if "parent_folder" in self.inputs:
            parent = self.inputs.parent_folder
            # the checkpoints to resume from, and the curve, log and best model so far: the run continues them
            calcinfo.remote_copy_list = [
                (parent.computer.uuid, f"{parent.get_remote_path()}/{OUTPUTS}/{name}", f"{OUTPUTS}/{name}")
                for name in RESUMED_OUTPUTS
            ]
        return calcinfo

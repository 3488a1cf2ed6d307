"""``deeph.deeph``: from a material to the bands of a large structure — dataset → training → inference.

DFT on perturbed supercells (``deeph.dataset``), a DeepH-2 model trained on them (``deeph.training``), and its
prediction of a larger target with bands and an optional validation against direct DFT (``deeph.inference``); each
sub-WorkChain's inputs are exposed in its namespace, so anything a protocol sets can be overridden.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain

from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.model import ModelData

from .dataset import DatasetWorkChain
from .engines import ENGINES
from .inference import InferenceWorkChain
from .restart import failure_message
from .training import TrainingWorkChain

STEPS = ("dataset", "training", "inference")


def plain(node: orm.Str | orm.Dict | None) -> str | dict | None:
    """The value of a Str or Dict input (a name, or names per element)."""
    if node is None:
        return None
    return node.get_dict() if isinstance(node, orm.Dict) else node.value


class DeepHWorkChain(WorkChain):
    """A DeepH model from DFT on perturbed supercells, applied to a larger structure, every step with provenance."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(DatasetWorkChain, namespace="dataset")
        spec.expose_inputs(TrainingWorkChain, namespace="training", exclude=("train.dataset",))
        spec.expose_inputs(InferenceWorkChain, namespace="inference", exclude=("model",))
        spec.outline(cls.run_dataset, cls.run_training, cls.run_inference, cls.results)
        spec.output("dataset", valid_type=DatasetData)
        spec.output("model", valid_type=ModelData)
        spec.expose_outputs(TrainingWorkChain, namespace="training", exclude=("model",))
        spec.expose_outputs(InferenceWorkChain, namespace="inference")
        spec.output("output_parameters", valid_type=orm.Dict,
                    help="Samples, held-out MAE, and the validation's H and band errors (meV).")
        spec.exit_code(410, "ERROR_DATASET_FAILED", message="deeph.dataset failed: {message}")
        spec.exit_code(420, "ERROR_TRAINING_FAILED", message="deeph.training failed: {message}")
        spec.exit_code(430, "ERROR_INFERENCE_FAILED", message="deeph.inference failed: {message}")

    @classmethod
    def get_builder_from_protocol(cls, dft_code: orm.Code, python_code: orm.Code, structure: orm.StructureData,
                                  target: orm.StructureData, protocol: str | None = None,
                                  overrides: dict | None = None, *, validation_structure: orm.StructureData | None = None,
                                  engine: str = "cp2k", overlap_code: orm.Code | None = None, **engine_kwargs):
        """The three protocols of the same name; ``overrides`` has one dict per step (``dataset``, ``training``,
        ``inference``). The target's overlap is analytic in the dataset's Gaussian basis (cp2k) or an overlap-only
        run of the engine on ``overlap_code`` (openmx, abacus; default ``dft_code``: OpenMX needs its overlap-only
        build there, see ``deeph.openmx``)."""
        overrides = overrides or {}
        unknown = sorted(set(overrides) - set(STEPS))
        if unknown:
            raise ValueError(f"overrides: unknown step(s) {', '.join(unknown)}; valid: {', '.join(STEPS)}")
        dataset = DatasetWorkChain.get_builder_from_protocol(dft_code, python_code, structure, protocol,
                                                             overrides.get("dataset"), engine=engine, **engine_kwargs)
        dft = dataset[engine][ENGINES[engine]._namespace]
        basis, pseudopotential = dft.get("basis_set"), dft.get("pseudopotential")
        training = TrainingWorkChain.get_builder_from_protocol(python_code, None, protocol, overrides.get("training"))
        dft_protocol = DatasetWorkChain.get_protocol_inputs(protocol, overrides.get("dataset"))["dft_protocol"]
        inference = InferenceWorkChain.get_builder_from_protocol(
            python_code, None, target, plain(basis), protocol, overrides.get("inference"),
            validation_structure=validation_structure, dft_code=dft_code, engine=engine, dft_protocol=dft_protocol,
            pseudopotential=plain(pseudopotential), overlap_code=overlap_code, **engine_kwargs)
        builder = cls.get_builder()
        for step, sub in zip(STEPS, (dataset, training, inference)):
            builder[step] = sub._inputs(prune=True)  # without the empty namespaces of the engines not used
        return builder

    def run_dataset(self):
        inputs = self.exposed_inputs(DatasetWorkChain, namespace="dataset")
        inputs["metadata"] = {"call_link_label": "dataset"}
        return ToContext(dataset=self.submit(DatasetWorkChain, **inputs))

    def run_training(self):
        node = self.ctx.dataset
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_DATASET_FAILED.format(message=failure_message(node))
        self.out("dataset", node.outputs.dataset)
        inputs = self.exposed_inputs(TrainingWorkChain, namespace="training")
        inputs["train"]["dataset"] = node.outputs.dataset
        inputs["metadata"] = {"call_link_label": "training"}
        return ToContext(training=self.submit(TrainingWorkChain, **inputs))

    def run_inference(self):
        node = self.ctx.training
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_TRAINING_FAILED.format(message=failure_message(node))
        self.out("model", node.outputs.model)
        self.out_many(self.exposed_outputs(node, TrainingWorkChain, namespace="training"))
        inputs = self.exposed_inputs(InferenceWorkChain, namespace="inference")
        inputs.update(model=node.outputs.model, metadata={"call_link_label": "inference"})
        return ToContext(inference=self.submit(InferenceWorkChain, **inputs))

    def results(self):
        node = self.ctx.inference
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_INFERENCE_FAILED.format(message=failure_message(node))
        self.out_many(self.exposed_outputs(node, InferenceWorkChain, namespace="inference"))
        dataset = self.ctx.dataset.outputs.output_parameters.get_dict()
        training = self.ctx.training.outputs.output_parameters.get_dict()
        summary = {
            "samples": dataset["samples"], "failed_samples": len(dataset["failed"]),
            "epochs": training["epochs"], "val_mae_meV": training["val_mae_meV"],
            "test_mae_meV": training["test_mae_meV"], "training_wall_time_s": training.get("wall_time_s"),
            **node.outputs.output_parameters.get_dict(),
        }
        self.out("output_parameters", orm.Dict(summary).store())
        return None

"""``deeph.inference``: a trained model on a (large) target: overlap → ``deeph.infer`` → ``deeph.bands``.

Optional validation on a cell DFT can afford: a direct DFT run of ``validation.structure`` (any engine), the model's
prediction of the same cell on the DFT's own atom pairs and overlap, and ``deeph.bands`` of the prediction against
the DFT: ``validation.output_parameters`` holds the H error and the band error within ±2 eV of the DFT Fermi level,
``validation.band_plot`` the two band structures overlaid.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, if_

from aiida_deeph.calculations.bands import BandsCalculation
from aiida_deeph.calculations.infer import InferCalculation
from aiida_deeph.calculations.overlap import OverlapCalculation
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.model import ModelData

from .engines import ENGINES, engine_builder, engine_error, engine_inputs, expose_engines, given_engines
from .protocols import ProtocolMixin, recursive_merge
from .restart import failure_message

def as_node(value: str | dict) -> orm.Str | orm.Dict:
    """A basis or pseudopotential name for every element (Str), or one per element (Dict)."""
    return orm.Dict(value) if isinstance(value, dict) else orm.Str(value)


VALIDATION_PREFIXES = ("band_", "hamiltonian_", "blocks_", "dft_")  # the error keys deeph.bands adds with a reference


def validate_inputs(inputs, _ctx) -> str | None:
    if bool(inputs.get("overlap")) == bool(given_engines(inputs, "overlap_dft")):
        return ("give the target's overlap source: `overlap` (analytic, Gaussian basis) or one engine under "
                "`overlap_dft` (an overlap-only OpenMX/ABACUS run)")
    validation = inputs.get("validation", {})
    if not validation:
        return None
    if "structure" not in validation:
        return "validation needs `validation.structure` (the cell to run DFT on)"
    if not inputs.get("bands"):
        return "validation compares band structures: give the `bands` inputs too"
    return engine_error(inputs, "validation")


class InferenceWorkChain(ProtocolMixin, WorkChain):
    """Predict H(R) of ``structure`` with ``model``, its bands, and optionally validate against direct DFT."""

    _protocol_file = "inference"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=orm.StructureData, help="The target structure.")
        spec.input("model", valid_type=ModelData)
        spec.expose_inputs(OverlapCalculation, namespace="overlap", exclude=("structure",),
                           namespace_options={"required": False, "populate_defaults": False,
                                              "help": "Analytic S(R) in the training data's Gaussian basis."})
        expose_engines(spec, "overlap_dft")  # or an overlap-only run of a numerical-orbital code (settings)
        spec.expose_inputs(InferCalculation, namespace="infer", exclude=("model", "structure", "overlap"))
        spec.expose_inputs(BandsCalculation, namespace="bands", exclude=("hamiltonian", "reference"),
                           namespace_options={"required": False, "populate_defaults": False,
                                              "help": "Band structure (and DOS) of the prediction; skipped if empty."})
        spec.input_namespace("validation", required=False, populate_defaults=False,
                             help="A direct DFT of a small cell to compare the model's prediction with.")
        spec.input("validation.structure", valid_type=orm.StructureData, required=False)
        expose_engines(spec, "validation")
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.run_overlap,
            cls.run_infer,
            if_(cls.has_bands)(cls.run_bands),
            cls.results,
        )
        spec.output("hamiltonian", valid_type=HamiltonianData, required=False, help="The predicted H(R) with the S(R) used (DeepH format).")
        spec.output("output_parameters", valid_type=orm.Dict)
        spec.expose_outputs(BandsCalculation, namespace="bands", namespace_options={"required": False})
        spec.expose_outputs(BandsCalculation, namespace="validation", namespace_options={"required": False})
        spec.exit_code(403, "ERROR_OVERLAP_FAILED", message="The overlap job failed: {message}")
        spec.exit_code(404, "ERROR_VALIDATION_DFT_FAILED", message="The validation DFT failed: {message}")
        spec.exit_code(405, "ERROR_INFER_FAILED", message="deeph.infer failed: {message}")
        spec.exit_code(406, "ERROR_BANDS_FAILED", message="deeph.bands failed: {message}")

    @classmethod
    def get_builder_from_protocol(cls, python_code: orm.Code, model: ModelData | None, structure: orm.StructureData,
                                  basis_set: str | dict | None, protocol: str | None = None,
                                  overrides: dict | None = None, *,
                                  validation_structure: orm.StructureData | None = None,
                                  dft_code: orm.Code | None = None, engine: str = "cp2k",
                                  dft_protocol: str | None = None, pseudopotential: str | dict | None = None,
                                  overlap_code: orm.Code | None = None, **engine_kwargs):
        """``basis_set``: the training data's Gaussian basis, for the analytic overlap (with its GTH
        ``pseudopotential`` the electron count, hence the prediction's Fermi level, comes along); None for a
        numerical-orbital engine (openmx, abacus), whose overlap-only run on ``overlap_code`` (default ``dft_code``;
        OpenMX needs its overlap-only build) gives S instead. With
        ``validation_structure`` a direct DFT of that cell with the engine's ``dft_protocol`` validates the model."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.structure = structure
        if model is not None:
            builder.model = model
        if basis_set is not None:
            builder.overlap.code = python_code
            builder.overlap.basis_set = as_node(basis_set)
            if pseudopotential is not None:
                builder.overlap.pseudopotential = as_node(pseudopotential)
            builder.overlap.metadata = inputs["overlap"]["metadata"]
        elif dft_code is None:
            raise ValueError("give basis_set (analytic overlap) or dft_code (an overlap-only run of the engine)")
        else:
            only = {ENGINES[engine]._namespace: {"settings": {"overlap_only": True}}}
            builder.overlap_dft[engine] = engine_builder(engine, overlap_code or dft_code, structure, dft_protocol,
                                                         recursive_merge(inputs.get(engine) or {}, only),
                                                         **engine_kwargs)
        builder.infer.code = python_code
        for namespace in ("infer", "bands"):
            builder[namespace].metadata = inputs[namespace]["metadata"]
        builder.infer.parameters = orm.Dict(inputs["infer"]["parameters"])
        if "settings" in inputs["infer"]:  # e.g. keep_remote for targets too large to retrieve
            builder.infer.settings = orm.Dict(inputs["infer"]["settings"])
        builder.bands.code = python_code
        builder.bands.parameters = orm.Dict(inputs["bands"]["parameters"])
        if validation_structure is not None:
            if dft_code is None:
                raise ValueError("validation needs dft_code")
            builder.validation.structure = validation_structure
            builder.validation[engine] = engine_builder(engine, dft_code, validation_structure, dft_protocol,
                                                        inputs.get(engine), **engine_kwargs)
        return builder

    def run_overlap(self):
        if self.inputs.get("overlap"):
            inputs = self.exposed_inputs(OverlapCalculation, namespace="overlap")
            inputs.update(structure=self.inputs.structure, metadata={**inputs.get("metadata", {}),
                                                                      "call_link_label": "overlap"})
            running = {"overlap": self.submit(OverlapCalculation, **inputs)}
        else:
            engine = given_engines(self.inputs, "overlap_dft")[0]
            inputs = engine_inputs(self, engine, "overlap_dft", self.inputs.structure)
            inputs.metadata = {"call_link_label": "overlap"}
            running = {"overlap": self.submit(ENGINES[engine], **inputs)}
        if "validation" in self.inputs and "structure" in self.inputs.validation:
            engine = given_engines(self.inputs, "validation")[0]
            dft = engine_inputs(self, engine, "validation", self.inputs.validation.structure)
            dft.metadata = {"call_link_label": "validation_dft"}
            running["validation_dft"] = self.submit(ENGINES[engine], **dft)
            self.report(f"overlap of the {len(self.inputs.structure.sites)}-atom target and a direct {engine} DFT of "
                        f"the {len(self.inputs.validation.structure.sites)}-atom validation cell")
        return ToContext(**running)

    def run_infer(self):
        overlap = self.ctx.overlap
        outputs = overlap.outputs
        if not overlap.is_finished_ok or not ("overlap" in outputs or "hamiltonian" in outputs):
            return self.exit_codes.ERROR_OVERLAP_FAILED.format(message=failure_message(overlap))
        source = outputs.overlap if "overlap" in outputs else outputs.hamiltonian  # analytic, or overlap-only DFT
        running = {"infer": self._infer(self.inputs.structure, source, "infer")}
        if "validation_dft" in self.ctx:
            dft = self.ctx.validation_dft
            if not dft.is_finished_ok or "hamiltonian" not in dft.outputs:
                return self.exit_codes.ERROR_VALIDATION_DFT_FAILED.format(message=failure_message(dft))
            running["validation_infer"] = self._infer(self.inputs.validation.structure, dft.outputs.hamiltonian,
                                                      "validation_infer")
        return ToContext(**running)

    def _infer(self, structure: orm.StructureData, overlap, label: str):
        inputs = self.exposed_inputs(InferCalculation, namespace="infer")
        inputs.update(model=self.inputs.model, structure=structure, overlap=overlap,
                      metadata={**inputs.get("metadata", {}), "call_link_label": label})
        return self.submit(InferCalculation, **inputs)

    def has_bands(self) -> bool:
        return bool(self.inputs.get("bands"))

    def run_bands(self):
        for name in ("infer", "validation_infer"):
            node = self.ctx.get(name)
            if node is not None and not node.is_finished_ok:
                return self.exit_codes.ERROR_INFER_FAILED.format(message=failure_message(node))
        if "hamiltonian" not in self.ctx.infer.outputs:
            return None  # kept on the remote (settings.keep_remote): too large to retrieve, no bands here
        running = {"bands": self._bands(self.ctx.infer.outputs.hamiltonian, "bands")}
        if "validation_infer" in self.ctx:
            running["validation_bands"] = self._bands(self.ctx.validation_infer.outputs.hamiltonian,
                                                      "validation_bands",
                                                      reference=self.ctx.validation_dft.outputs.hamiltonian)
        return ToContext(**running)

    def _bands(self, hamiltonian, label: str, **extra):
        inputs = self.exposed_inputs(BandsCalculation, namespace="bands")
        inputs.update(hamiltonian=hamiltonian, metadata={**inputs.get("metadata", {}), "call_link_label": label},
                      **extra)
        return self.submit(BandsCalculation, **inputs)

    def results(self):
        infer = self.ctx.infer
        if not infer.is_finished_ok:
            return self.exit_codes.ERROR_INFER_FAILED.format(message=failure_message(infer))
        summary = {"natoms": len(self.inputs.structure.sites)}
        if "hamiltonian" in infer.outputs:
            predicted = infer.outputs.hamiltonian
            self.out("hamiltonian", predicted)
            summary.update(npairs=predicted.npairs, norbitals=predicted.base.attributes.get("norbitals"))
        for name, namespace in (("bands", "bands"), ("validation_bands", "validation")):
            node = self.ctx.get(name)
            if node is None:
                continue
            if not node.is_finished_ok:
                return self.exit_codes.ERROR_BANDS_FAILED.format(message=failure_message(node))
            self.out_many(self.exposed_outputs(node, BandsCalculation, namespace=namespace))
        if "validation_bands" in self.ctx:
            errors = self.ctx.validation_bands.outputs.output_parameters.get_dict()
            summary["validation"] = {key: errors[key] for key in errors if key.startswith(VALIDATION_PREFIXES)}
            self.report(f"validation: H MAE {errors['hamiltonian_mae_meV']:.2f} meV, band error "
                        f"{errors['band_mae_meV']:.2f} meV within ±{errors['band_window_eV']} eV of E_F "
                        f"({errors['band_mae_without_offset_meV']:.2f} meV without its rigid offset)")
        self.out("output_parameters", orm.Dict(summary).store())
        return None

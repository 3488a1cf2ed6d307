"""``deeph.dataset``: perturbed supercells → DFT (any engine, concurrently, bounded) → ``deeph.preprocess`` → dataset.

The samples are made by one calcfunction, so each is in the provenance graph with the base structure and the
perturbation spec that made it. DFT runs go through the engine's restart WorkChain; a sample that still fails is
reported, listed in ``output_parameters`` and left out of the dataset. With caching enabled for the DFT CalcJobs
(``aiida-deeph setup`` does it), a rerun with the same inputs reuses every finished DFT job.
"""

from __future__ import annotations

from aiida import orm
from aiida.engine import ToContext, WorkChain, calcfunction, while_

from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.structures import interlayer_shift_grid, perturbed_supercells

from .engines import ENGINES, engine_builder, engine_error, engine_inputs, expose_engines, given_engines
from .protocols import ProtocolMixin

PERTURBATION_DEFAULTS = {"supercell": [1, 1, 1], "samples": 10, "displacement": 0.1, "distribution": "uniform",
                         "strain": None, "shifts": None, "seed": 0, "min_distance": None}


def check_perturbation(spec: dict) -> str | None:
    """A message naming what is wrong with a perturbation spec (unknown keys list the valid ones), else None."""
    unknown = sorted(set(spec) - set(PERTURBATION_DEFAULTS))
    if unknown:
        return f"perturbation: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(PERTURBATION_DEFAULTS)}"
    shifts = spec.get("shifts")
    if shifts is not None and (len(shifts) != 2 or min(shifts) < 1):
        return f"perturbation: shifts must be [n1, n2] with n1, n2 >= 1, got {shifts}"
    if int(spec.get("samples", 1)) < 1:
        return f"perturbation: samples must be >= 1, got {spec['samples']}"
    return None


@calcfunction
def perturbed_structures(structure: orm.StructureData, perturbation: orm.Dict) -> dict[str, orm.StructureData]:
    """The training samples of ``structure``: random supercells or an interlayer-shift grid, seeded."""
    spec = {**PERTURBATION_DEFAULTS, **perturbation.get_dict()}
    atoms = structure.get_ase()
    common = {"displacement": spec["displacement"], "distribution": spec["distribution"], "seed": spec["seed"],
              "min_distance": spec["min_distance"]}
    if spec["shifts"] is not None:  # `samples` perturbed copies of every shift, each copy with its own seed
        supercell = perturbed_supercells(atoms, spec["supercell"], 1, displacement=0.0)[0]
        samples = [sample for copy in range(int(spec["samples"]))
                   for sample in interlayer_shift_grid(supercell, *spec["shifts"],
                                                       **{**common, "seed": int(spec["seed"]) + copy})]
    else:
        strain = tuple(spec["strain"]) if spec["strain"] is not None else None
        samples = perturbed_supercells(atoms, spec["supercell"], int(spec["samples"]), strain=strain, **common)
    return {f"sample_{index:04d}": orm.StructureData(ase=sample) for index, sample in enumerate(samples)}


class DatasetWorkChain(ProtocolMixin, WorkChain):
    """A DeepH training dataset from DFT on perturbed copies of one structure."""

    _protocol_file = "dataset"

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=orm.StructureData, help="The base (primitive or conventional) cell.")
        spec.input("perturbation", valid_type=orm.Dict, validator=lambda value, _: check_perturbation(value.get_dict()),
                   help="supercell, samples, displacement (Å), distribution, strain ([min, max]), seed, "
                        "min_distance (Å), shifts ([n1, n2]: an interlayer-shift grid, `samples` copies of each).")
        spec.input("max_concurrent", valid_type=orm.Int, default=lambda: orm.Int(4),
                   help="At most this many DFT WorkChains run at once.")
        spec.input("max_failed_fraction", valid_type=orm.Float, default=lambda: orm.Float(0.2),
                   help="Fail the WorkChain when more samples than this fraction fail their DFT.")
        expose_engines(spec)
        spec.expose_inputs(PreprocessCalculation, namespace="preprocess", exclude=("structures", "dft_folders"))
        spec.inputs.validator = lambda inputs, _: engine_error(inputs)
        spec.outline(
            cls.make_structures,
            while_(cls.has_pending)(cls.run_dft, cls.inspect_dft),
            cls.check_failures,
            cls.run_preprocess,
            cls.results,
        )
        spec.output("dataset", valid_type=DatasetData)
        spec.output("output_parameters", valid_type=orm.Dict,
                    help="engine, samples, succeeded, and each failed sample with its WorkChain pk and exit status.")
        spec.exit_code(401, "ERROR_TOO_MANY_DFT_FAILURES", message="{failed} of {samples} DFT samples failed.")
        spec.exit_code(402, "ERROR_PREPROCESS_FAILED", message="deeph.preprocess failed: {message}")

    @classmethod
    def get_builder_from_protocol(cls, dft_code: orm.Code, python_code: orm.Code, structure: orm.StructureData,
                                  protocol: str | None = None, overrides: dict | None = None, *,
                                  engine: str = "cp2k", **engine_kwargs):
        """Protocol ``test``, ``fast``, ``moderate`` or ``precise``; ``engine_kwargs`` go to the engine's builder
        (e.g. ``pseudo_family``, ``orbital_family`` for OpenMX and ABACUS)."""
        inputs = cls.get_protocol_inputs(protocol, overrides)
        builder = cls.get_builder()
        builder.structure = structure
        builder.perturbation = orm.Dict(inputs["perturbation"])
        builder.max_concurrent = orm.Int(inputs["max_concurrent"])
        builder.max_failed_fraction = orm.Float(inputs["max_failed_fraction"])
        builder[engine] = engine_builder(engine, dft_code, structure, inputs["dft_protocol"],
                                         inputs.get(engine), **engine_kwargs)
        builder.preprocess.code = python_code
        builder.preprocess.parameters = orm.Dict(inputs["preprocess"]["parameters"])
        builder.preprocess.metadata = inputs["preprocess"]["metadata"]
        return builder

    def make_structures(self):
        self.ctx.engine = given_engines(self.inputs)[0]
        samples = perturbed_structures(self.inputs.structure, self.inputs.perturbation)
        self.ctx.pending = sorted(samples.items())
        self.ctx.samples = len(samples)
        self.ctx.hamiltonians, self.ctx.failed = {}, {}
        self.report(f"{len(samples)} perturbed structures of {self.inputs.structure.get_formula()}; "
                    f"DFT with {self.ctx.engine}, at most {self.inputs.max_concurrent.value} at once")

    def has_pending(self) -> bool:
        return bool(self.ctx.pending)

    def run_dft(self):
        batch, self.ctx.pending = (self.ctx.pending[:self.inputs.max_concurrent.value],
                                   self.ctx.pending[self.inputs.max_concurrent.value:])
        running = {}
        for label, structure in batch:
            inputs = engine_inputs(self, self.ctx.engine, "", structure)
            inputs.metadata = {"call_link_label": label}
            running[label] = self.submit(ENGINES[self.ctx.engine], **inputs)
        self.ctx.batch = list(running)
        return ToContext(**{f"dft_{label}": node for label, node in running.items()})

    def inspect_dft(self):
        for label in self.ctx.batch:
            node = self.ctx[f"dft_{label}"]
            if node.is_finished_ok and "hamiltonian" in node.outputs:
                self.ctx.hamiltonians[label] = node.outputs.hamiltonian
            elif node.is_finished_ok and "remote_folder" in node.outputs:  # matrices kept on the remote
                self.ctx.hamiltonians[label] = node.outputs.remote_folder
            else:
                self.ctx.failed[label] = {"pk": node.pk, "exit_status": node.exit_status,
                                          "exit_message": node.exit_message}
                self.report(f"{label}: {node.process_label}<{node.pk}> failed with exit status {node.exit_status}; "
                            "excluded from the dataset")
        done = len(self.ctx.hamiltonians) + len(self.ctx.failed)
        self.report(f"DFT {done}/{self.ctx.samples} done ({len(self.ctx.failed)} failed)")

    def check_failures(self):
        failed = len(self.ctx.failed)
        if not self.ctx.hamiltonians or failed > self.inputs.max_failed_fraction.value * self.ctx.samples:
            self.out("output_parameters", self._summary().store())
            return self.exit_codes.ERROR_TOO_MANY_DFT_FAILURES.format(failed=failed, samples=self.ctx.samples)
        return None

    def run_preprocess(self):
        inputs = self.exposed_inputs(PreprocessCalculation, namespace="preprocess")
        inputs["structures"] = {k: v for k, v in self.ctx.hamiltonians.items() if isinstance(v, orm.Data)
                                and not isinstance(v, orm.RemoteData)}
        inputs["dft_folders"] = {k: v for k, v in self.ctx.hamiltonians.items() if isinstance(v, orm.RemoteData)}
        inputs["metadata"] = {**inputs.get("metadata", {}), "call_link_label": "preprocess"}
        return ToContext(preprocess=self.submit(PreprocessCalculation, **inputs))

    def results(self):
        node = self.ctx.preprocess
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_PREPROCESS_FAILED.format(message=node.exit_message or str(node.exit_status))
        self.out("dataset", node.outputs.dataset)
        self.out("output_parameters", self._summary().store())
        self.report(f"dataset {node.outputs.dataset.pk}: {len(self.ctx.hamiltonians)} structures")
        return None

    def _summary(self) -> orm.Dict:
        return orm.Dict({"engine": self.ctx.engine, "samples": self.ctx.samples,
                         "succeeded": len(self.ctx.hamiltonians), "failed": self.ctx.failed})

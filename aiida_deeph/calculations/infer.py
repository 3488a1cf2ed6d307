"""``deeph.infer``: a trained model predicts H(R) of a (large) structure, in the DeepH format."""

from __future__ import annotations

from aiida import orm

from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.model import ModelData
from aiida_deeph.io.deeph_format import format_poscar

from .ml_base import MLCalculation, copy_folder_node

MODEL, OVERLAP, POSCAR, PREDICTION = "model", "overlap", "POSCAR", "prediction"


def validate_inputs(inputs, _ctx) -> str | None:
    model, structure = inputs.get("model"), inputs.get("structure")
    if model is None or structure is None:
        return None
    elements = list(dict.fromkeys(structure.get_ase().get_chemical_symbols()))
    missing = model.missing_elements(elements)
    if missing:
        return (f"the model's basis covers {', '.join(sorted(model.elements_orbital_map))} but the structure also "
                f"has {', '.join(missing)}")
    overlap = inputs.get("overlap")
    if overlap is not None:
        if not overlap.base.attributes.get("has_overlap"):
            return "the overlap input holds no overlap matrix"
        if overlap.natoms != len(structure.sites):
            return f"the overlap is of {overlap.natoms} atoms but the structure has {len(structure.sites)}"
    return None


class InferCalculation(MLCalculation):
    """Predict ``hamiltonian`` (HamiltonianData with the predicted H and the overlap used) for ``structure``.

    With ``overlap`` (a HamiltonianData holding S of the same structure, e.g. from an overlap-only DFT job) its
    atom pairs are the graph; without, pairs within the training data's longest pair per element pair.
    ``parameters``: ``max_edges_per_chunk`` (bounds memory), ``device``. ``settings``: ``keep_remote: True``
    leaves the prediction on the remote (structures too large to retrieve): only ``remote_folder`` then.
    """

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("model", valid_type=ModelData)
        spec.input("structure", valid_type=orm.StructureData)
        spec.input("overlap", valid_type=HamiltonianData, required=False)
        spec.input("parameters", valid_type=orm.Dict, required=False)
        spec.inputs.validator = validate_inputs
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.infer")
        spec.output("hamiltonian", valid_type=HamiltonianData, required=False)

    def prepare_for_submission(self, folder):
        atoms = self.inputs.structure.get_ase()
        with folder.open(POSCAR, "w", encoding="utf-8") as handle:
            handle.write(format_poscar(atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions))
        params = self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}
        arguments = ["infer", "--model", MODEL, "--structure", POSCAR, "--out", PREDICTION]
        copies = copy_folder_node(self.inputs.model, MODEL)
        if "overlap" in self.inputs:
            copies += copy_folder_node(self.inputs.overlap, OVERLAP)
            arguments += ["--overlap", OVERLAP]
        for key in ("max_edges_per_chunk", "device"):
            if key in params:
                arguments += [f"--{key.replace('_', '-')}", str(params[key])]
        settings = self.inputs.settings.get_dict() if "settings" in self.inputs else {}
        retrieve = [] if settings.get("keep_remote") else [PREDICTION]
        return self.calcinfo([self.codeinfo(arguments)], copies, retrieve_temporary=retrieve)

"""The ML CalcJobs chained on real CP2K data: preprocess → train → infer (unseen structure) → bands."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_deeph.calculations.bands import BandsCalculation
from aiida_deeph.calculations.infer import InferCalculation
from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.calculations.train import TrainCalculation
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.io import DeepHStructure
from aiida_deeph.io.overlap import analytic_overlap

from .test_cp2k import perturbed_graphene

pytestmark = pytest.mark.cp2k

TRAINING = {
    "system": {"device": "cpu", "seed": 0, "num_threads": 1},
    "model": {"model": "deeph2", "channels": 8, "num_blocks": 1, "num_heads": 1, "num_radial": 8,
              "radial_hidden": 16},
    "process": {"train": {"max_epochs": 3, "learning_rate": 2e-3, "progress": False}},
}
OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}


@pytest.fixture(scope="module")
def trained(python_code, cp2k_graphene):
    structures = {f"s{n}": HamiltonianData(folder=folder) for n, folder in enumerate(cp2k_graphene(4))}
    results, node = run_get_node(PreprocessCalculation, code=python_code, structures=structures,
                                 parameters=orm.Dict({"split": [0.5, 0.25, 0.25], "seed": 1}),
                                 metadata={"options": OPTIONS})
    assert node.is_finished_ok, node.exit_status
    dataset = results["dataset"]
    results, node = run_get_node(TrainCalculation, code=python_code, dataset=dataset,
                                 parameters=orm.Dict(TRAINING), metadata={"options": OPTIONS})
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return dataset, results


def test_dataset_node(trained):
    dataset, _ = trained
    assert dataset.num_structures == 4 and dataset.elements == ["C"]
    assert dataset.base.attributes.get("elements_orbital_map") == {"C": [0, 1]}
    assert dataset.base.attributes.get("split") == {"train": 2, "val": 1, "test": 1}


def test_train_outputs(trained):
    _, results = trained
    params = results["output_parameters"].get_dict()
    assert params["status"] == "completed" and params["epochs"] == 3
    assert np.isfinite(params["val_mae_meV"])
    assert len(results["training_curve"].get_x()[1]) == 3
    model = results["model"]
    assert model.architecture == "deeph2" and model.elements_orbital_map == {"C": [0, 1]}
    assert sum(p.numel() for p in model.load().parameters()) == params["num_parameters"]


def test_train_refuses_unknown_keys(python_code, trained):
    dataset, _ = trained
    bad = {**TRAINING, "process": {"train": {"max_epoch": 3}}}
    with pytest.raises(ValueError, match="max_epoch"):
        run_get_node(TrainCalculation, code=python_code, dataset=dataset, parameters=orm.Dict(bad),
                     metadata={"options": OPTIONS})


def test_infer_and_bands_on_unseen_structure(python_code, trained):
    _, results = trained
    structure = perturbed_graphene(2, seed=99)
    atoms = structure.get_ase()
    overlap = analytic_overlap(atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions, "SZV-MOLOPT-SR-GTH")
    target = HamiltonianData(structure=DeepHStructure(atoms.cell.array, atoms.get_chemical_symbols(),
                                                      atoms.positions, {"C": [0, 1]}, overlap=overlap))
    predicted, node = run_get_node(InferCalculation, code=python_code, model=results["model"], structure=structure,
                                   overlap=target, metadata={"options": OPTIONS})
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    hamiltonian = predicted["hamiltonian"].get_deeph()
    assert len(hamiltonian.hamiltonian) == len(overlap)
    assert hamiltonian.hamiltonian.hermiticity_error() == 0.0

    bands, node = run_get_node(BandsCalculation, code=python_code, hamiltonian=predicted["hamiltonian"],
                               parameters=orm.Dict({"npoints": 20, "dos": True, "width": 0.2}),
                               metadata={"options": OPTIONS})
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    energies = bands["bands"].get_bands()
    assert energies.shape[1] == 32 and 15 <= energies.shape[0] <= 21  # ~npoints along Γ–M–K–Γ
    assert [label for _, label in bands["bands"].labels] == ["Γ", "M", "K", "Γ"]
    assert bands["band_plot"].get_content(mode="rb")[:4] == b"\x89PNG"
    assert "dos" in bands and bands["output_parameters"]["number_of_bands"] == 32
    assert bands["output_parameters"]["dos_resolution"] == 0.2  # Gaussians of the width asked


def test_infer_refuses_elements_outside_the_basis(python_code, trained):
    _, results = trained
    from ase import Atoms

    structure = orm.StructureData(ase=Atoms("BN", positions=[[0, 0, 0], [1.4, 0, 0]], cell=[6, 6, 6], pbc=True))
    with pytest.raises(ValueError, match="basis covers C"):
        run_get_node(InferCalculation, code=python_code, model=results["model"], structure=structure,
                     metadata={"options": OPTIONS})


def test_fine_tune_a_trained_model(python_code, trained):
    """``parent_model`` starts a new training from the trained model: its architecture, not the default one."""
    dataset, results = trained
    parameters = {"system": TRAINING["system"], "process": {"train": {**TRAINING["process"]["train"], "max_epochs": 2}}}
    tuned, node = run_get_node(TrainCalculation, code=python_code, dataset=dataset, parent_model=results["model"],
                               parameters=orm.Dict(parameters), metadata={"options": OPTIONS})
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert tuned["output_parameters"]["epochs"] == 2
    assert tuned["model"].architecture == results["model"].architecture
    assert tuned["model"].base.attributes.get("model") == results["model"].base.attributes.get("model")
    assert "initialised from" in node.outputs.retrieved.get_object_content("outputs/log")
    user_set = {**parameters, "process": {"train": {"init_model": "elsewhere"}}}
    with pytest.raises(ValueError, match="process.train.init_model is set by the plugin"):
        run_get_node(TrainCalculation, code=python_code, dataset=dataset, parent_model=results["model"],
                     parameters=orm.Dict(user_set), metadata={"options": OPTIONS})

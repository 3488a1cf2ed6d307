"""End to end on the embedded engine: ``deeph.deeph`` with the ``test`` protocol (CP2K → dataset → DeepH-2 →
prediction of a larger unseen cell → bands, validated against a direct CP2K run), then its provenance."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from ase.build import graphene

from aiida_deeph.tools.launch import deeph_summary
from aiida_deeph.workflows.dataset import DatasetWorkChain
from aiida_deeph.workflows.deeph import DeepHWorkChain

pytestmark = [pytest.mark.cp2k, pytest.mark.slow]


def graphene_cell(repeat: int = 1, rattle: float = 0.0, seed: int = 0) -> orm.StructureData:
    atoms = graphene(a=2.46, vacuum=6.0).repeat((repeat, repeat, 1))
    if rattle:
        atoms.rattle(rattle, seed=seed)
    atoms.pbc = (True, True, False)
    return orm.StructureData(ase=atoms)


@pytest.fixture(scope="module")
def e2e(cp2k_code, python_code):
    builder = DeepHWorkChain.get_builder_from_protocol(
        cp2k_code, python_code, graphene_cell(), graphene_cell(3, 0.05, seed=7), "test",
        validation_structure=graphene_cell(2, 0.05, seed=11))
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return results, node


def test_chain_outputs(e2e):
    results, _ = e2e
    summary = results["output_parameters"].get_dict()
    assert summary["samples"] == 4 and summary["failed_samples"] == 0
    assert results["dataset"].num_structures == 4
    assert results["model"].architecture == "deeph2" and results["model"].elements_orbital_map == {"C": [0, 1]}
    assert summary["epochs"] == 15 and np.isfinite(summary["test_mae_meV"])
    predicted = results["inference"]["hamiltonian"]
    assert predicted.natoms == 18 and predicted.get_deeph().hamiltonian.hermiticity_error() == 0.0
    assert results["inference"]["bands"]["band_plot"].get_content(mode="rb")[:4] == b"\x89PNG"
    validation = summary["validation"]
    assert validation["band_window_eV"] == 2.0 and validation["band_values_compared"] > 0
    assert 0 < validation["band_mae_meV"] <= validation["band_max_error_meV"]
    assert abs(validation["band_offset_meV"]) <= validation["band_mae_meV"] and validation["band_mae_without_offset_meV"] > 0
    assert 0 < validation["hamiltonian_mae_meV"] and validation["blocks_missing"] == 0
    # the target's Fermi level comes from its electron count (GTH-PBE: 4 per C), not from the overlap's info.json
    target_fermi = results["inference"]["bands"]["output_parameters"]["fermi_energy"]
    assert target_fermi != 0.0 and abs(target_fermi - validation["dft_fermi_energy_eV"]) < 1.5
    print(f"e2e test protocol: held-out MAE {summary['test_mae_meV']:.1f} meV, band error "
          f"{validation['band_mae_meV']:.1f} meV, H MAE {validation['hamiltonian_mae_meV']:.1f} meV")


def test_summary_printed_by_the_workflow_scripts(e2e, tmp_path):
    _, node = e2e
    lines = deeph_summary(node, tmp_path)
    assert lines[0].startswith("held-out MAE of H (test split): ") and "meV" in lines[0]
    assert "without the rigid offset" in lines[2] and f"verdi process show {node.pk}" in lines[3]
    for plot in ("target_bands.png", "validation_bands.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"


def test_every_step_in_the_provenance(e2e):
    results, node = e2e
    called = {sub.base.links.get_incoming(link_type=LinkType.CALL_WORK).one().link_label
              for sub in node.called}
    assert called == {"dataset", "training", "inference"}
    # the prediction goes back to the CP2K runs through infer ← model ← train ← dataset ← preprocess ← DFT
    infer = results["inference"]["hamiltonian"].creator
    model = infer.inputs.model
    train = model.creator
    dataset = train.inputs.dataset
    preprocess = dataset.creator
    hamiltonians = [link.node for link in preprocess.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()
                    if link.link_label.startswith("structures__")]
    assert len(hamiltonians) == 4
    assert all(isinstance(h.creator, orm.CalcJobNode) and h.creator.process_type == "aiida.calculations:deeph.cp2k"
               for h in hamiltonians)
    # every sample structure was made by the perturbation calcfunction from the base structure
    samples = {h.creator.inputs.structure.creator for h in hamiltonians}
    assert len(samples) == 1 and samples.pop().process_label == "perturbed_structures"


def test_dataset_rerun_reuses_the_dft(e2e):
    _, node = e2e
    dataset_node = next(sub for sub in node.called if sub.process_label == "DatasetWorkChain")
    builder = dataset_node.get_builder_restart()
    with enable_caching(identifier="aiida.calculations:deeph.*"):
        results, rerun = run_get_node(builder)
    assert rerun.is_finished_ok
    dft = [calc for calc in rerun.called_descendants if calc.process_type == "aiida.calculations:deeph.cp2k"]
    assert len(dft) == 4 and all(calc.base.caching.is_created_from_cache for calc in dft)
    assert results["dataset"].base.attributes.get("checksum") == dataset_node.outputs.dataset.base.attributes.get(
        "checksum")


def test_bad_perturbation_refused_before_anything_runs(cp2k_code, python_code):
    builder = DatasetWorkChain.get_builder_from_protocol(cp2k_code, python_code, graphene_cell(), "test")
    with pytest.raises(ValueError, match="unknown key.*amplitude.*valid keys: supercell"):
        builder.perturbation = orm.Dict({"samples": 2, "amplitude": 0.1})
    with pytest.raises(ValueError, match="unknown key.*amplitude.*valid keys: supercell"):
        DatasetWorkChain.get_builder_from_protocol(cp2k_code, python_code, graphene_cell(), "test",
                                                   {"perturbation": {"amplitude": 0.1}})


def test_provenance_queries_on_the_e2e_database(e2e):
    from aiida_deeph.tools import queries

    results, _ = e2e
    model, dataset = results["model"], results["dataset"]
    assert model.uuid in {m.uuid for m in queries.models_trained_on_element("C")}
    assert model.uuid not in {m.uuid for m in queries.models_trained_on_element("Mo")}
    predictions = {p.uuid for p in queries.predictions_of_model(model)}
    assert results["inference"]["hamiltonian"].uuid in predictions and len(predictions) == 2  # target + validation
    runs = queries.dft_behind_model(model)
    assert len(runs) == 4 and {run["engine"] for run in runs} == {"cp2k"}
    assert all(run["version"] and run["basis"] == "SZV-MOLOPT-SR-GTH" and run["cutoff_Ry"] == 250 for run in runs)
    assert dataset.uuid in {d.uuid for d in queries.datasets_by("C", "cp2k")}
    assert dataset.uuid not in {d.uuid for d in queries.datasets_by("C", "abacus")}

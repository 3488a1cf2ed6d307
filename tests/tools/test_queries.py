"""Provenance queries on a real CP2K → deeph.preprocess → deeph.train → deeph.infer chain, and on a dataset that
deeph.preprocess made from a remote OpenMX folder."""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_deeph.data.model import ModelData
from aiida_deeph.tools.queries import (
    all_models,
    datasets_by,
    dft_behind_model,
    dft_calculations,
    dft_summary,
    material_elements,
    models_trained_on_element,
    predictions_of_model,
    training_dataset,
)

pytestmark = pytest.mark.cp2k


def test_models_trained_on_element(ml_chain):
    assert ml_chain.model in models_trained_on_element("C")
    assert ml_chain.model not in models_trained_on_element("N")
    assert ml_chain.model in all_models()


def test_dataset_and_predictions_of_model(ml_chain):
    assert training_dataset(ml_chain.model) == ml_chain.dataset
    assert predictions_of_model(ml_chain.model) == [ml_chain.prediction]


def test_model_stored_by_hand_has_no_provenance(ml_chain, tmp_path):
    copy = ModelData(ml_chain.model.export(tmp_path / "model")).store()
    assert training_dataset(copy) is None and predictions_of_model(copy) == [] and dft_behind_model(copy) == []
    assert copy in all_models() and copy not in models_trained_on_element("C")


def test_dft_behind_model(ml_chain):
    summaries = dft_behind_model(ml_chain.model)
    assert [summary["pk"] for summary in summaries] == [calc.pk for calc in ml_chain.dft]
    for summary, calc in zip(summaries, ml_chain.dft):
        assert summary["process_type"] == "aiida.calculations:deeph.cp2k" and summary["engine"] == "cp2k"
        assert summary["exit_status"] == 0 and summary["code"] == "cp2k@localhost-deeph"
        assert summary["version"] == calc.outputs.output_parameters["cp2k_version"]
        assert summary["version"].startswith("CP2K version")
        assert summary["structure"] == "C8"
        assert summary["basis"] == "SZV-MOLOPT-SR-GTH" and summary["pseudopotential"] == "GTH-PBE"
        assert summary["parameters"] == calc.inputs.parameters.get_dict()
        assert summary["cutoff_Ry"] == summary["parameters"]["FORCE_EVAL"]["DFT"]["MGRID"]["CUTOFF"] == 250


def test_datasets_by_material_and_engine(ml_chain):
    dataset = ml_chain.dataset
    for kwargs in ({}, {"material": "C"}, {"material": "C8"}, {"engine": "cp2k"}, {"material": "C", "engine": "cp2k"}):
        assert dataset in datasets_by(**kwargs), kwargs
    for kwargs in ({"material": "BN"}, {"material": "C-N"}, {"engine": "openmx"},
                   {"material": "C", "engine": "abacus"}):
        assert dataset not in datasets_by(**kwargs), kwargs
    with pytest.raises(ValueError, match="unknown DFT engine 'vasp'"):
        datasets_by(engine="vasp")


@pytest.mark.parametrize("material, elements", [("MoS2", ["Mo", "S"]), ("Mo-S", ["Mo", "S"]), ("S, Mo", ["Mo", "S"]),
                                                ("C8", ["C"])])
def test_material_elements(material, elements):
    assert material_elements(material) == elements


@pytest.mark.parametrize("material", ["graphene", "Xx2", ""])
def test_material_that_is_no_formula_is_refused(material):
    with pytest.raises(ValueError, match="not a chemical formula"):
        material_elements(material)


def test_dft_behind_dataset_of_remote_openmx_folder(openmx_dataset):
    calcs = dft_calculations(openmx_dataset)
    assert [calc.process_type for calc in calcs] == ["aiida.calculations:deeph.openmx"]
    assert isinstance(calcs[0].outputs.remote_folder, orm.RemoteData) and "hamiltonian" not in calcs[0].outputs
    summary = dft_summary(calcs[0])
    assert summary["engine"] == "openmx" and summary["version"] == "3.9.9" and summary["structure"] == "Fe2"
    assert summary["basis"] == {"Fe": "Fe6.0S-s2p2d1"} and summary["pseudopotential"] == {"Fe": "Fe_PBE19S.vps"}
    assert summary["parameters"]["scf_XcType"] == "GGA-PBE" and summary["cutoff_Ry"] == 150.0
    assert openmx_dataset in datasets_by(material="Fe", engine="openmx")
    assert openmx_dataset not in datasets_by(engine="cp2k") and openmx_dataset not in datasets_by(material="C")

"""The new WorkChains' protocols and the perturbation calcfunction (no DFT needed)."""

from __future__ import annotations

import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from ase.build import graphene

from aiida_deeph.structures import default_distance, primitive_layer
from aiida_deeph.workflows.dataset import DatasetWorkChain, check_perturbation, perturbed_structures
from aiida_deeph.workflows.inference import InferenceWorkChain
from aiida_deeph.workflows.training import TrainingWorkChain

PROTOCOLS = {"test", "fast", "moderate", "precise"}


@pytest.mark.parametrize("workchain", [DatasetWorkChain, TrainingWorkChain, InferenceWorkChain])
def test_every_workchain_has_the_four_protocols(workchain):
    assert set(workchain.get_available_protocols()) == PROTOCOLS
    assert workchain.get_default_protocol() == "moderate"
    with pytest.raises(ValueError, match="unknown protocol 'ultra'"):
        workchain.get_protocol_inputs("ultra")


def test_protocols_grow_from_test_to_precise():
    samples = [DatasetWorkChain.get_protocol_inputs(p)["perturbation"]["samples"] for p in
               ("test", "fast", "moderate", "precise")]
    channels = [TrainingWorkChain.get_protocol_inputs(p)["train"]["parameters"]["model"]["channels"] for p in
                ("test", "fast", "moderate", "precise")]
    assert samples == sorted(samples) and channels == sorted(channels)
    # sub-meV training data never takes the fast DFT shortcut
    assert [DatasetWorkChain.get_protocol_inputs(p)["dft_protocol"] for p in ("moderate", "precise")] == \
        ["moderate", "precise"]


def test_perturbation_spec_is_checked():
    assert check_perturbation({"samples": 3, "displacement": 0.1}) is None
    assert "unknown key(s) amplitude; valid keys: supercell" in check_perturbation({"amplitude": 0.1})
    assert "shifts must be [n1, n2]" in check_perturbation({"shifts": [3]})
    assert "samples must be >= 1" in check_perturbation({"samples": 0})


def test_samples_are_made_by_a_calcfunction(aiida_profile):
    layer = graphene(a=2.46, vacuum=6.0)
    layer.pbc = (True, True, False)
    base = orm.StructureData(ase=layer)
    samples = perturbed_structures(base, orm.Dict({"supercell": [2, 2, 1], "samples": 3, "displacement": 0.05,
                                                   "seed": 4}))
    assert sorted(samples) == ["sample_0000", "sample_0001", "sample_0002"]
    for sample in samples.values():
        assert len(sample.sites) == 8
        assert sample.creator.base.links.get_incoming(link_type=LinkType.INPUT_CALC).get_node_by_label(
            "structure").uuid == base.uuid
    again = perturbed_structures(base, orm.Dict({"supercell": [2, 2, 1], "samples": 3, "displacement": 0.05,
                                                 "seed": 4}))
    assert np.allclose(again["sample_0001"].get_ase().positions, samples["sample_0001"].get_ase().positions)


def test_shift_grid_with_copies(aiida_profile):
    bottom = primitive_layer("graphene")
    top = bottom.copy()
    top.positions[:, 2] += default_distance("graphene")
    bilayer = bottom + top
    bilayer.center(vacuum=7.5, axis=2)
    bilayer.pbc = (True, True, False)
    samples = perturbed_structures(orm.StructureData(ase=bilayer),
                                   orm.Dict({"shifts": [2, 2], "samples": 2, "displacement": 0.02, "seed": 1}))
    assert len(samples) == 8  # 2 perturbed copies of each of the 2×2 shifts
    first, fifth = samples["sample_0000"].get_ase(), samples["sample_0004"].get_ase()
    assert not np.allclose(first.positions, fifth.positions)  # same shift, another seed

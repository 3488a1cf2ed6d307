"""A real DFT → deeph.preprocess → deeph.train → deeph.infer → deeph.bands chain, for the provenance tests.

``ml_chain`` is imported by the conftests of tests/tools and tests/cli; pytest keeps one session fixture per
conftest, so the chain is memoised here to run once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_deeph.calculations.bands import BandsCalculation
from aiida_deeph.calculations.infer import InferCalculation
from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.calculations.train import TrainCalculation
from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.folder_data import sha256_of
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.model import ModelData
from aiida_deeph.tools.queries import process_type

from .calculations.test_ml_chain import OPTIONS, TRAINING

EPOCHS = 2


@dataclass(frozen=True)
class MlChain:
    dft: list[orm.CalcJobNode]  # the deeph.cp2k runs
    hamiltonians: list[HamiltonianData]  # their outputs, the inputs of deeph.preprocess
    dataset: DatasetData
    train: orm.CalcJobNode
    model: ModelData
    infer: orm.CalcJobNode
    prediction: HamiltonianData
    bands: orm.CalcJobNode


def run_ok(process, **inputs) -> tuple[dict, orm.CalcJobNode]:
    """Run a CalcJob (one serial process unless ``metadata`` says otherwise) and insist that it succeeds."""
    inputs.setdefault("metadata", {"options": OPTIONS})
    results, node = run_get_node(process, **inputs)
    assert node.is_finished_ok, (process.__name__, node.exit_status, node.exit_message)
    return results, node


def dft_hamiltonians(folders: list[Path]) -> list[HamiltonianData]:
    """The stored deeph.cp2k outputs that ``cp2k_graphene`` exported to ``folders`` (matched by sha256)."""
    query = orm.QueryBuilder().append(orm.CalcJobNode, filters={"process_type": process_type("deeph.cp2k")}, tag="dft")
    query.append(HamiltonianData, with_incoming="dft", project="*")
    by_checksums = {tuple(sorted(node.checksums.items())): node for node in query.all(flat=True)}
    return [by_checksums[tuple(sorted((p.name, sha256_of(p)) for p in folder.iterdir()))] for folder in folders]


def build_chain(python_code: orm.Code, folders: list[Path]) -> MlChain:
    hamiltonians = dft_hamiltonians(folders)
    results, _ = run_ok(PreprocessCalculation, code=python_code,
                        structures={f"s{n}": node for n, node in enumerate(hamiltonians)},
                        parameters=orm.Dict({"split": [0.5, 0.0, 0.5], "seed": 1}))  # test split for the parity plot
    dataset = results["dataset"]
    config = {**TRAINING, "process": {"train": {**TRAINING["process"]["train"], "max_epochs": EPOCHS}}}
    results, train = run_ok(TrainCalculation, code=python_code, dataset=dataset, parameters=orm.Dict(config))
    model = results["model"]
    target = hamiltonians[0]  # a training structure: its DFT overlap gives the pairs and the bands' S(k)
    results, infer = run_ok(InferCalculation, code=python_code, model=model, structure=target.creator.inputs.structure,
                            overlap=target)
    prediction = results["hamiltonian"]
    _, bands = run_ok(BandsCalculation, code=python_code, hamiltonian=prediction,
                      parameters=orm.Dict({"npoints": 20}))
    return MlChain([h.creator for h in hamiltonians], hamiltonians, dataset, train, model, infer, prediction, bands)


_BUILT: list[MlChain] = []


@pytest.fixture(scope="session")
def ml_chain(python_code, cp2k_graphene) -> MlChain:
    """The chain on two real CP2K runs of perturbed graphene; a 2-epoch tiny DeepH-2 model."""
    if not _BUILT:
        _BUILT.append(build_chain(python_code, cp2k_graphene(2)))
    return _BUILT[0]

"""Provenance queries over the DeepH chain: DFT → ``deeph.preprocess`` → ``deeph.train`` → ``deeph.infer``.

Every query follows CalcJob links only — CREATE out of a CalcJob, INPUT_CALC into one — so it finds the same nodes
whether the CalcJobs ran on their own or were called by a WorkChain.
"""

from __future__ import annotations

from typing import Any

from aiida import orm
from aiida.common.links import LinkType
from ase.data import chemical_symbols
from ase.formula import Formula

from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.data.model import ModelData

DFT_ENGINES = ("cp2k", "openmx", "abacus")
VERSION_KEY = {"cp2k": "cp2k_version", "openmx": "version", "abacus": "version"}  # in output_parameters
CUTOFF_PATH = {  # plane-wave / real-space grid cutoff (Ry) in the engine's parameters; keys match case-insensitively
    "cp2k": ("FORCE_EVAL", "DFT", "MGRID", "CUTOFF"),
    "openmx": ("scf_energycutoff",),
    "abacus": ("ecutwfc",),
}
CREATE = {"type": LinkType.CREATE.value}
INPUT = {"type": LinkType.INPUT_CALC.value}


def process_type(entry_point: str) -> str:
    """The ``process_type`` AiiDA stores for a CalcJob of ``entry_point`` (``deeph.train``)."""
    return f"aiida.calculations:{entry_point}"


def _calcjob(*entry_points: str) -> dict:
    return {"process_type": {"in": [process_type(name) for name in entry_points]}}


def _nodes(query: orm.QueryBuilder, tag: str) -> list:
    """The distinct nodes of ``tag``, oldest first."""
    query.add_projection(tag, "*")
    return query.distinct().order_by({tag: {"ctime": "asc"}}).all(flat=True)


def _from(node: orm.Node, tag: str) -> orm.QueryBuilder:
    return orm.QueryBuilder().append(type(node), filters={"id": node.pk}, tag=tag)


def _append_dft_behind(query: orm.QueryBuilder, dataset_tag: str, engines: tuple[str, ...] = DFT_ENGINES) -> None:
    """dataset ← deeph.preprocess ← source ← DFT CalcJob; the sources are the HamiltonianData of ``structures``
    and the RemoteData of ``dft_folders``."""
    query.append(orm.CalcJobNode, with_outgoing=dataset_tag, edge_filters=CREATE,
                 filters=_calcjob("deeph.preprocess"), tag="preprocess")
    query.append(orm.Data, with_outgoing="preprocess", edge_filters=INPUT, tag="source")
    query.append(orm.CalcJobNode, with_outgoing="source", edge_filters=CREATE,
                 filters=_calcjob(*(f"deeph.{engine}" for engine in engines)), tag="dft")


# --- models -----------------------------------------------------------------------------------------------------------
def all_models() -> list[ModelData]:
    """Every stored model, oldest first."""
    return _nodes(orm.QueryBuilder().append(ModelData, tag="model"), "model")


def models_trained_on_element(element: str) -> list[ModelData]:
    """Models whose training dataset (the ``dataset`` input of the ``deeph.train`` that made them) holds ``element``."""
    query = orm.QueryBuilder().append(DatasetData, filters={"attributes.elements": {"contains": [element]}},
                                      tag="dataset")
    query.append(orm.CalcJobNode, with_incoming="dataset", edge_filters=INPUT, filters=_calcjob("deeph.train"),
                 tag="train")
    query.append(ModelData, with_incoming="train", edge_filters=CREATE, tag="model")
    return _nodes(query, "model")


def training_dataset(model: ModelData) -> DatasetData | None:
    """The dataset the model was trained on; None for a model stored by hand."""
    query = _from(model, "model")
    query.append(orm.CalcJobNode, with_outgoing="model", edge_filters=CREATE, filters=_calcjob("deeph.train"),
                 tag="train")
    query.append(DatasetData, with_outgoing="train", edge_filters=INPUT, tag="dataset")
    found = _nodes(query, "dataset")
    return found[0] if found else None


def predictions_of_model(model: ModelData) -> list[HamiltonianData]:
    """Every Hamiltonian a ``deeph.infer`` predicted with ``model``."""
    query = _from(model, "model")
    query.append(orm.CalcJobNode, with_incoming="model", edge_filters=INPUT, filters=_calcjob("deeph.infer"),
                 tag="infer")
    query.append(HamiltonianData, with_incoming="infer", edge_filters=CREATE, tag="prediction")
    return _nodes(query, "prediction")


# --- DFT behind data --------------------------------------------------------------------------------------------------
def dft_calculations(dataset: DatasetData) -> list[orm.CalcJobNode]:
    """The DFT CalcJobs whose Hamiltonians or remote folders ``deeph.preprocess`` made ``dataset`` from."""
    query = _from(dataset, "dataset")
    _append_dft_behind(query, "dataset")
    return _nodes(query, "dft")


def dft_behind_model(model: ModelData) -> list[dict[str, Any]]:
    """:func:`dft_summary` of each DFT calculation behind the model's training dataset."""
    dataset = training_dataset(model)
    return [dft_summary(calc) for calc in dft_calculations(dataset)] if dataset else []


def dft_summary(calc: orm.CalcJobNode) -> dict[str, Any]:
    """What a DFT CalcJob ran: engine, code and its version, parameters, basis, pseudopotentials, cutoff (Ry)."""
    engine = calc.process_type.rpartition(".")[2]
    inputs = calc.base.links.get_incoming(link_type=LinkType.INPUT_CALC).nested()
    outputs = calc.base.links.get_outgoing(link_type=LinkType.CREATE).nested()
    parameters = inputs["parameters"].get_dict() if "parameters" in inputs else {}
    output_parameters = outputs["output_parameters"].get_dict() if "output_parameters" in outputs else {}
    if engine == "cp2k":
        basis, pseudopotential = _names(inputs["basis_set"]), _names(inputs["pseudopotential"])
    else:
        basis = {el: node.base.attributes.get("basis_name", node.filename) for el, node in inputs["orbitals"].items()}
        pseudopotential = {el: node.filename for el, node in inputs["pseudos"].items()}
    return {
        "pk": calc.pk,
        "process_type": calc.process_type,
        "engine": engine,
        "exit_status": calc.exit_status,
        "code": inputs["code"].full_label,
        "version": output_parameters.get(VERSION_KEY[engine]),
        "structure": inputs["structure"].get_formula(),
        "parameters": parameters,
        "basis": basis,
        "pseudopotential": pseudopotential,
        "cutoff_Ry": _lookup(parameters, CUTOFF_PATH[engine]),
    }


def _names(node: orm.Str | orm.Dict) -> str | dict[str, str]:
    return node.value if isinstance(node, orm.Str) else node.get_dict()


def _lookup(values: dict, path: tuple[str, ...]) -> Any:
    """``values[path[0]][path[1]]...`` with keys compared case-insensitively and ``.`` as ``_``; None if absent."""
    for key in path:
        if not isinstance(values, dict):
            return None
        values = {str(k).lower().replace(".", "_"): v for k, v in values.items()}.get(key.lower())
    return values


# --- datasets ---------------------------------------------------------------------------------------------------------
def datasets_by(material: str | None = None, engine: str | None = None) -> list[DatasetData]:
    """Datasets of ``material`` made from DFT runs of ``engine`` (either may be None: no filter).

    ``material`` is a chemical formula (``MoS2``, ``C8``) or an element set (``Mo-S``, ``Mo,S``): a dataset matches
    when its elements are exactly those. ``engine`` is one of :data:`DFT_ENGINES`.
    """
    query = orm.QueryBuilder().append(DatasetData, filters=_element_set_filter(material), tag="dataset")
    if engine is not None:
        if engine not in DFT_ENGINES:
            raise ValueError(f"unknown DFT engine {engine!r}; choose from {', '.join(DFT_ENGINES)}")
        _append_dft_behind(query, "dataset", (engine,))
    return _nodes(query, "dataset")


def material_elements(material: str) -> list[str]:
    """Sorted elements of a formula or element set; ValueError for anything else."""
    try:
        counts = Formula(material.replace("-", "").replace(",", "").replace(" ", "")).count()
    except ValueError:
        counts = {}
    if not counts or any(el not in chemical_symbols[1:] for el in counts):
        raise ValueError(f"{material!r} is not a chemical formula (MoS2) or element set (Mo-S)")
    return sorted(counts)


def _element_set_filter(material: str | None) -> dict:
    if material is None:
        return {}
    elements = material_elements(material)
    return {"and": [{"attributes.elements": {"contains": elements}},
                    {"attributes.elements": {"of_length": len(elements)}}]}

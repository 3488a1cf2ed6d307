"""The DFT engines a WorkChain can run for data: one exposed namespace per engine, exactly one of them given.

``expose_engines(spec, "dataset")`` gives ``dataset.cp2k``, ``dataset.openmx`` and ``dataset.abacus``, each the
inputs of that engine's restart WorkChain without the structure (the WorkChain sets it per sample). The engine
of a run is the namespace the caller filled in.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiida import orm
from aiida.common import AttributeDict
from aiida.engine import ProcessBuilder, WorkChain

from .abacus_base import AbacusBaseWorkChain
from .cp2k_base import Cp2kBaseWorkChain
from .dft_base import DftBaseWorkChain
from .openmx_base import OpenmxBaseWorkChain

ENGINES: dict[str, type[DftBaseWorkChain]] = {
    "cp2k": Cp2kBaseWorkChain,
    "openmx": OpenmxBaseWorkChain,
    "abacus": AbacusBaseWorkChain,
}


def _path(namespace: str, engine: str) -> str:
    return f"{namespace}.{engine}" if namespace else engine


def expose_engines(spec, namespace: str = "") -> None:
    """Expose every engine's restart WorkChain, structure excluded, as optional namespaces under ``namespace``."""
    for engine, workchain in ENGINES.items():
        spec.expose_inputs(workchain, namespace=_path(namespace, engine),
                           exclude=(f"{workchain._namespace}.structure",),
                           namespace_options={"required": False, "populate_defaults": False,
                                              "help": f"Inputs of {workchain.__name__} when {engine} is the engine."})


def given_engines(inputs: Mapping, namespace: str = "") -> list[str]:
    """The engines whose namespace under ``namespace`` holds inputs."""
    scope = inputs.get(namespace, {}) if namespace else inputs
    return [engine for engine in ENGINES if scope.get(engine)]


def engine_error(inputs: Mapping, namespace: str = "") -> str | None:
    """A validator message unless exactly one engine namespace is filled in."""
    given = given_engines(inputs, namespace)
    if len(given) != 1:
        where = f"{namespace}." if namespace else ""
        return (f"give the inputs of exactly one DFT engine ({', '.join(where + e for e in ENGINES)}); "
                f"got {', '.join(where + e for e in given) or 'none'}")
    return None


def engine_inputs(process: WorkChain, engine: str, namespace: str, structure: orm.StructureData) -> AttributeDict:
    """The exposed inputs of ``engine`` under ``namespace`` with ``structure`` put in place."""
    workchain = ENGINES[engine]
    inputs = AttributeDict(process.exposed_inputs(workchain, namespace=_path(namespace, engine)))
    inputs[workchain._namespace] = AttributeDict({**inputs[workchain._namespace], "structure": structure})
    return inputs


def engine_builder(engine: str, code: orm.Code, structure: orm.StructureData, protocol: str | None,
                   overrides: dict | None = None, **kwargs) -> ProcessBuilder:
    """The engine's protocol builder for ``structure``, with the structure taken out again (set per sample)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    workchain = ENGINES[engine]
    builder = workchain.get_builder_from_protocol(code, structure, protocol, overrides=overrides, **kwargs)
    builder[workchain._namespace].pop("structure")
    return builder

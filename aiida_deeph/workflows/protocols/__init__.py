"""Protocols: YAML files of default inputs with named partial overrides (fast, moderate, precise, test).

Merge order: ``default_inputs`` ← the named protocol ← the caller's ``overrides``.
"""

from __future__ import annotations

import copy
from importlib import resources

import yaml


def recursive_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in, dictionaries merged key by key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = recursive_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class ProtocolMixin:
    """Gives a WorkChain ``get_protocol_inputs`` from ``protocols/<_protocol_file>.yaml``."""

    _protocol_file: str

    @classmethod
    def _load_protocol_file(cls) -> dict:
        text = resources.files(__package__).joinpath(f"{cls._protocol_file}.yaml").read_text()
        return yaml.safe_load(text)

    @classmethod
    def get_available_protocols(cls) -> dict[str, str]:
        data = cls._load_protocol_file()
        return {name: spec.get("description", "") for name, spec in data["protocols"].items()}

    @classmethod
    def get_default_protocol(cls) -> str:
        return cls._load_protocol_file()["default_protocol"]

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: dict | None = None) -> dict:
        data = cls._load_protocol_file()
        protocol = protocol or data["default_protocol"]
        if protocol not in data["protocols"]:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(data['protocols'])}")
        named = {k: v for k, v in data["protocols"][protocol].items() if k != "description"}
        return recursive_merge(recursive_merge(data["default_inputs"], named), overrides or {})

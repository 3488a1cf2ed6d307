"""Hamiltonian models and the factory that builds them from a flat config.

Every model maps a :class:`~aiida_deeph.ml.graph.CrystalGraph` to its Hermitian blocks, ``model(graph) -> (E, B, B)``,
packed exactly like ``graph.target`` (complex with spin–orbit coupling); ``model.config`` is the full config it was
built from (store it with the weights and the basis to rebuild the model).

Config keys (flat dict; any other key is a ``ValueError`` listing the valid ones):

==================  ========================  ==========================================================================
key                 default                   meaning
==================  ========================  ==========================================================================
``model``           ``"deeph2"``              ``"deeph2"`` (ELCT, SO(2) convolutions) or ``"deephe3"`` (e3nn TPs)
``lmax``            basis' required L         feature L_max; at least 2·l_max of the basis (+1 with spin–orbit)
``channels``        32 (deeph2), 16 (deephe3) channels per l (and per parity for deephe3)
``num_blocks``      3                         interaction blocks
``cutoff``          8.0                       Å, range of the Gaussian distance basis (not the graph's cutoff)
``num_radial``      32                        Gaussians in the distance basis
``radial_hidden``   64                        hidden width of the radial MLPs
``num_heads``       2                         deeph2: attention heads (must divide ``channels``)
``ffn_hidden``      2·channels                deeph2: hidden channels of the gated feed-forward
``mmax``            lmax                      deeph2: largest |m| kept by the SO(2) convolutions
``sh_lmax``         min(lmax, 4)              deephe3: L of the edge spherical harmonics
``parity``          True                      deephe3: track parity (O(3)); deeph2 is SO(3) only
==================  ========================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ..basis import OrbitalBasis
from .deeph2 import DeepH2
from .deephe3 import DeepHE3

_COMMON = {"lmax": None, "num_blocks": 3, "cutoff": 8.0, "num_radial": 32, "radial_hidden": 64}
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "deeph2": {**_COMMON, "channels": 32, "num_heads": 2, "ffn_hidden": None, "mmax": None},
    "deephe3": {**_COMMON, "channels": 16, "sh_lmax": None, "parity": True},
}
_MODELS: dict[str, type[nn.Module]] = {"deeph2": DeepH2, "deephe3": DeepHE3}


def build_model(config: Mapping[str, Any], basis: OrbitalBasis) -> nn.Module:
    """Model named by ``config["model"]`` (default ``"deeph2"``) for ``basis``; see the module docstring for keys."""
    config = dict(config)
    name = config.pop("model", "deeph2")
    if name not in MODEL_DEFAULTS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_DEFAULTS)}")
    unknown = sorted(set(config) - set(MODEL_DEFAULTS[name]))
    if unknown:
        valid = ", ".join(["model", *MODEL_DEFAULTS[name]])
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} for model {name!r}; valid keys: {valid}")
    settings = {**MODEL_DEFAULTS[name], **config}
    model = _MODELS[name](basis, **settings)
    model.config = {"model": name, **settings}
    return model


__all__ = ["MODEL_DEFAULTS", "DeepH2", "DeepHE3", "build_model"]

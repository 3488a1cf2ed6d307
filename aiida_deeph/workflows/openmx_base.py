"""``deeph.openmx.base``: ``deeph.openmx`` under aiida-core's BaseRestartWorkChain, with protocols."""

from __future__ import annotations

from aiida_deeph.calculations.openmx import DeepHOpenmxCalculation
from aiida_deeph.workflows.lcao_base import LcaoBaseWorkChain


class OpenmxBaseWorkChain(LcaoBaseWorkChain):
    """Run ``deeph.openmx`` until it succeeds (inputs in the ``openmx`` namespace).

    Pseudopotentials come from an aiida-pseudo family of ``pseudo.vps`` files, orbitals from a ``deeph.orbital.family``
    of ``.pao`` files with their basis selection.
    """

    _process_class = DeepHOpenmxCalculation
    _namespace = "openmx"
    _protocol_file = "openmx"
    _scf_steps = ("scf.maxIter", 40)
    _mixing_weights = (("scf.Init.Mixing.Weight", 0.3), ("scf.Max.Mixing.Weight", 0.4))

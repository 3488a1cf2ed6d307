"""``deeph.abacus.base``: ``deeph.abacus`` under aiida-core's BaseRestartWorkChain, with protocols."""

from __future__ import annotations

from aiida import orm

from aiida_deeph.calculations.abacus import DeepHAbacusCalculation
from aiida_deeph.workflows.lcao_base import LcaoBaseWorkChain


class AbacusBaseWorkChain(LcaoBaseWorkChain):
    """Run ``deeph.abacus`` until it succeeds (inputs in the ``abacus`` namespace).

    Pseudopotentials come from an aiida-pseudo family of ``pseudo.upf`` files, orbitals from a
    ``deeph.orbital.family`` of ``.orb`` files.
    """

    _process_class = DeepHAbacusCalculation
    _namespace = "abacus"
    _protocol_file = "abacus"
    _scf_steps = ("scf_nmax", 100)
    _mixing_weights = (("mixing_beta", 0.8),)

    def _fewer_k_groups(self) -> None:
        """One k-point group: every process holds a share of one k-point's matrices instead of whole k-points."""
        parameters = self.ctx.inputs.parameters.get_dict() if "parameters" in self.ctx.inputs else {}
        self.ctx.inputs.parameters = orm.Dict({**parameters, "kpar": 1})

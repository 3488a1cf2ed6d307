"""Parser of ``deeph.infer``: the predicted DeepH folder → HamiltonianData (unless kept on the remote)."""

from __future__ import annotations

from aiida_deeph.calculations.infer import PREDICTION
from aiida_deeph.data.hamiltonian import HamiltonianData

from .ml_base import MLParser


class InferParser(MLParser):
    command = "infer"

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        failure = self.engine_failure()
        if failure:
            return failure
        settings = self.node.inputs.settings.get_dict() if "settings" in self.node.inputs else {}
        if settings.get("keep_remote"):
            return None
        return self.folder_output(retrieved_temporary_folder, PREDICTION, "hamiltonian.h5", "hamiltonian",
                                  lambda folder: HamiltonianData(folder=folder))

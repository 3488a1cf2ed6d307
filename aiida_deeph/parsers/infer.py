"""Parser of ``deeph.infer``: the predicted DeepH folder → HamiltonianData (unless kept on the remote)."""

from __future__ import annotations

from pathlib import Path

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
        folder = Path(retrieved_temporary_folder or "") / PREDICTION
        if not (folder / "hamiltonian.h5").is_file():
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{PREDICTION}/hamiltonian.h5")
        self.out("hamiltonian", HamiltonianData(folder=folder))
        return None

"""Parser of ``deeph.overlap``: the DeepH folder with overlap.h5 → HamiltonianData (S only)."""

from __future__ import annotations

from aiida_deeph.calculations.overlap import OVERLAP
from aiida_deeph.data.hamiltonian import HamiltonianData

from .ml_base import MLParser


class OverlapParser(MLParser):
    command = "overlap"

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        return self.engine_failure() or self.folder_output(retrieved_temporary_folder, OVERLAP, "overlap.h5",
                                                           "overlap", lambda folder: HamiltonianData(folder=folder))

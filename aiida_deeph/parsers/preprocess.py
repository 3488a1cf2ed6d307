"""Parser of ``deeph.preprocess``: the dataset directory → ``deeph.dataset``."""

from __future__ import annotations

from aiida_deeph.calculations.preprocess import DATASET
from aiida_deeph.data.dataset import DatasetData

from .ml_base import MLParser


class PreprocessParser(MLParser):
    command = "preprocess"

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        return self.engine_failure() or self.folder_output(retrieved_temporary_folder, DATASET, "dataset.json",
                                                           "dataset", DatasetData)

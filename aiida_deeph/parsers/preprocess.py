"""Parser of ``deeph.preprocess``: the dataset directory → ``deeph.dataset``."""

from __future__ import annotations

from pathlib import Path

from aiida_deeph.calculations.preprocess import DATASET
from aiida_deeph.data.dataset import DatasetData

from .ml_base import MLParser


class PreprocessParser(MLParser):
    command = "preprocess"

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        failure = self.engine_failure()
        if failure:
            return failure
        folder = Path(retrieved_temporary_folder or "") / DATASET
        if not (folder / "dataset.json").is_file():
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{DATASET}/dataset.json")
        self.out("dataset", DatasetData(folder))
        return None

"""``deeph.dataset``: a preprocessed DeepH training set (``python -m aiida_deeph.ml preprocess``) in the repository."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .folder_data import ChecksummedFolderData


class DatasetData(ChecksummedFolderData):
    """The dataset directory: ``dataset.json`` (structures, union basis, edges, checksum), ``split.json`` and the
    cached graphs. Attributes summarise it for queries (elements, basis, number of structures and edges, split)."""

    def __init__(self, folder: str | os.PathLike, **kwargs):
        super().__init__(**kwargs)
        folder = Path(folder)
        try:
            meta = json.loads((folder / "dataset.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{folder} is not a finished dataset directory ({exc})") from exc
        self._store_folder(folder)
        basis = meta["basis"]["elements_orbital_map"]
        self.base.attributes.set_many({
            "num_structures": len(meta["structures"]),
            "elements": sorted(basis),
            "elements_orbital_map": basis,
            "spinful": bool(meta["basis"].get("spinful", False)),
            "num_edges": meta["num_edges"],
            "split": meta["split"],
            "checksum": meta["checksum"],
        })

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    @property
    def num_structures(self) -> int:
        return self.base.attributes.get("num_structures")

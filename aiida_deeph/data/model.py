"""``deeph.model``: a trained model folder (config, weights, basis, metrics), sha256-checked whenever it is used."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .folder_data import ChecksummedFolderData


class ModelData(ChecksummedFolderData):
    """The ``model/`` folder a training run writes: ``config.json``, ``weights.pt``, ``basis.json``, ``metrics.json``.

    ``load()`` rebuilds the torch module; every file is checked against the sha256 recorded when the node was made,
    and the weights load with ``torch.load(weights_only=True)``.
    """

    def __init__(self, folder: str | os.PathLike, **kwargs):
        super().__init__(**kwargs)
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            basis = json.loads((folder / "basis.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{folder} is not a model folder ({exc})") from exc
        metrics_path = folder / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        self._store_folder(folder)
        self.base.attributes.set_many({
            "model": config["model"],
            "architecture": config["model"].get("model"),
            "elements_orbital_map": basis.get("elements_orbital_map", {}),
            "elements": sorted(basis.get("elements_orbital_map", {})),
            "spinful": bool(basis.get("spinful", False)),
            "metrics": metrics,
        })

    @property
    def elements_orbital_map(self) -> dict[str, list[int]]:
        return self.base.attributes.get("elements_orbital_map")

    @property
    def architecture(self) -> str:
        return self.base.attributes.get("architecture")

    def missing_elements(self, elements: list[str]) -> list[str]:
        """Elements of a target structure that this model's basis does not cover."""
        return sorted(set(elements) - set(self.elements_orbital_map))

    def load(self, device: str = "cpu"):
        """The torch model, rebuilt from the verified files."""
        from aiida_deeph.ml.checkpoint import load_model

        with tempfile.TemporaryDirectory() as tmp:
            return load_model(self.export(tmp), device=device)

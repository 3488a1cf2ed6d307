"""Parser of ``deeph.train``: metrics, training curve and the trained model (also after a walltime stop)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from aiida import orm

from aiida_deeph.calculations.train import OUTPUTS
from aiida_deeph.data.model import ModelData

from .ml_base import MLParser

CURVE_COLUMNS = ("train_mae_meV", "val_mae_meV", "train_loss", "val_loss", "lr")


class TrainParser(MLParser):
    command = "train"

    def parse(self, retrieved_temporary_folder: str | None = None, **kwargs):
        metrics_text = self.read_log(f"{OUTPUTS}/metrics.json")
        if not metrics_text:
            return self.engine_failure() or self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(
                message=f"{OUTPUTS}/metrics.json")
        try:
            metrics = json.loads(metrics_text)
            summary, curve = self._summary(metrics), self._curve()
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # garbled JSON or CSV
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(
                message=f"{OUTPUTS}/metrics.json or curve.csv is unreadable ({type(exc).__name__}: {exc})")
        if curve is not None:
            self.out("training_curve", curve)
            summary["wall_time_s"] = float(curve.base.attributes.get("wall_time_s"))
        self.out("output_parameters", orm.Dict(summary))
        model_dir = Path(retrieved_temporary_folder or "") / OUTPUTS / "model"
        if (model_dir / "config.json").is_file():
            message = self._model_error(model_dir)
            if message:
                return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=message)
            self.out("model", ModelData(model_dir))
        status = metrics.get("status")
        if status == "nan":
            return self.exit_codes.ERROR_NAN_LOSS
        if status == "walltime":
            return self.exit_codes.ERROR_OUT_OF_WALLTIME
        if status != "completed":
            return self.engine_failure() or self.exit_codes.ERROR_ENGINE_FAILED.format(
                message=f"training ended with status {status!r}")
        if "model" not in self.outputs:
            return self.exit_codes.ERROR_OUTPUT_FILES_MISSING.format(message=f"{OUTPUTS}/model")
        return None

    @staticmethod
    def _model_error(model_dir: Path) -> str | None:
        """Why the retrieved model folder cannot be used (its weights fail their sha256, a file is garbled)."""
        from aiida_deeph.ml.checkpoint import CorruptedFileError, read_model_files  # torch: only when there is a model

        try:
            read_model_files(model_dir)
        except (CorruptedFileError, FileNotFoundError) as exc:
            return f"{OUTPUTS}/model is corrupted: {exc}"
        return None

    @staticmethod
    def _summary(metrics: dict) -> dict:
        best = metrics.get("best") or {}
        return {
            "status": metrics.get("status"),
            "epochs": metrics.get("epoch"),
            "best_epoch": metrics.get("best_epoch"),
            "train_mae_meV": best.get("train", {}).get("mae_meV"),
            "val_mae_meV": best.get("val", {}).get("mae_meV"),
            "test_mae_meV": (metrics.get("test") or {}).get("mae_meV"),
            "epoch_time_s": metrics.get("epoch_time_s"),
            "num_parameters": metrics.get("num_parameters"),
            "world_size": metrics.get("world_size"),
            "device": metrics.get("device"),
        }

    def _curve(self) -> orm.XyData | None:
        text = self.read_log(f"{OUTPUTS}/curve.csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            return None
        def column(name: str) -> np.ndarray:
            return np.array([float(row[name]) if row.get(name) not in (None, "") else np.nan for row in rows])
        curve = orm.XyData()
        curve.base.attributes.set("wall_time_s", float(column("elapsed_s")[-1]))
        curve.set_x(column("epoch"), "epoch", "")
        curve.set_y([column(name) for name in CURVE_COLUMNS], list(CURVE_COLUMNS),
                    ["meV", "meV", "eV^2", "eV^2", ""])
        return curve

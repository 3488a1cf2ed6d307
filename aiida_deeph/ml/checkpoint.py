"""Training checkpoints and exported models, read back with ``torch.load(weights_only=True)`` only.

* ``checkpoints/latest.pt`` and ``checkpoints/best.pt``: one dict of plain values and tensors — ``epoch``, ``step``,
  ``model``, ``optimizer``, ``scheduler`` and ``ema`` state dicts, ``rng`` (python, numpy and torch states as
  lists and tensors, so that no pickled object is needed), ``metrics`` — plus ``digest``.
* A model folder (the ``state_dict`` holds the head's target normalisation buffers too): ``config.json`` (``{"model": <build_model config>, "weights_digest": ...}``), ``weights.pt``
  (the ``state_dict``), ``basis.json`` (``elements_orbital_map``, ``spinful`` and the ``pair_cutoffs`` in Å that
  inference uses to find atom pairs without an overlap) and ``metrics.json``.

torch's zip container does not check the tensor bytes (a flipped byte in a weight loads silently), so every file
carries a sha256 of its content (:func:`content_digest`) that loading verifies: a corrupted or edited file raises
:class:`CorruptedFileError`. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.atomic_write import atomic_path, write_text
from .basis import OrbitalBasis
from .config import default_dtype
from .models import build_model

FORMAT = 1


class CorruptedFileError(RuntimeError):
    """A checkpoint, model or dataset file is unreadable or does not match its sha256."""


def content_digest(tree: Any) -> str:
    """sha256 of nested dicts/lists/tuples of tensors and plain values: the content, not the file bytes."""
    digest = hashlib.sha256()

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(item, Mapping):
            digest.update(f"D{len(item)}".encode())
            for key in sorted(item, key=repr):
                digest.update(repr(key).encode())
                walk(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(f"L{len(item)}".encode())
            for value in item:
                walk(value)
        else:
            digest.update(f"V{item!r}".encode())

    walk(tree)
    return digest.hexdigest()


def _save(path: Path, content: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def _load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle and unicode errors all mean the same thing here
        raise CorruptedFileError(f"{path}: unreadable, truncated or corrupted ({type(exc).__name__}: {exc})") from exc


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    _save(Path(path), {**state, "format": FORMAT, "digest": content_digest(state)})


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`, after checking its digest."""
    path = Path(path)
    content = _load(path, map_location)
    if not isinstance(content, dict) or "digest" not in content:
        raise CorruptedFileError(f"{path}: not an aiida-deeph checkpoint")
    digest = content.pop("digest")
    content.pop("format", None)
    if content_digest(content) != digest:
        raise CorruptedFileError(f"{path}: content does not match its sha256: the file was modified or corrupted")
    return content


# --- RNG states as weights_only-loadable values ----------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        # the current GPU only: touching every device would create a context on each from every rank
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0].cpu())


# --- model folders --------------------------------------------------------------------------------------------------
def basis_to_dict(basis: OrbitalBasis) -> dict[str, Any]:
    return {"elements_orbital_map": {el: list(ls) for el, ls in basis.shells.items()}, "spinful": basis.spinful}


def basis_from_dict(values: Mapping[str, Any]) -> OrbitalBasis:
    return OrbitalBasis(values["elements_orbital_map"], spinful=values["spinful"])


def export_model(model: nn.Module, directory: str | os.PathLike, pair_cutoffs: Mapping[str, float],
                 metrics: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a model folder; ``state_dict`` overrides the model's own weights (e.g. the EMA average)."""
    directory = Path(directory)
    weights = {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()}
    _save(directory / "weights.pt", weights)
    write_text(directory / "basis.json", json.dumps({**basis_to_dict(model.basis), "pair_cutoffs": dict(pair_cutoffs)}, indent=1))
    write_text(directory / "metrics.json", json.dumps(dict(metrics), indent=1))
    # config.json last: a folder with it is complete
    write_text(directory / "config.json", json.dumps({"model": model.config, "weights_digest": content_digest(weights)}, indent=1))
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a model folder written by training")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: invalid JSON or UTF-8
        raise CorruptedFileError(f"{path}: unreadable or corrupted JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise CorruptedFileError(f"{path}: corrupted: not a JSON object")
    return content


def read_model_info(directory: str | os.PathLike) -> tuple[dict[str, Any], OrbitalBasis, dict[str, float]]:
    """(build_model config, basis, pair_cutoffs) of a model folder."""
    directory = Path(directory)
    config, basis = _read_json(directory / "config.json"), _read_json(directory / "basis.json")
    try:
        cutoffs = {str(k): float(v) for k, v in basis["pair_cutoffs"].items()}
        model_config, orbital_basis = dict(config["model"]), basis_from_dict(basis)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptedFileError(f"{directory}: corrupted config.json or basis.json ({type(exc).__name__}: {exc})") \
            from exc
    if not all(np.isfinite(c) and c >= 0 for c in cutoffs.values()):
        raise CorruptedFileError(f"{directory / 'basis.json'}: corrupted: pair cutoffs must be finite and ≥ 0")
    return model_config, orbital_basis, cutoffs


def read_model_files(directory: str | os.PathLike) -> tuple[dict[str, Any], OrbitalBasis, dict[str, torch.Tensor]]:
    """(build_model config, basis, weights) of a model folder, the weights checked against config.json's sha256."""
    directory = Path(directory)
    model_config, basis, _ = read_model_info(directory)
    weights = _load(directory / "weights.pt")
    if content_digest(weights) != _read_json(directory / "config.json").get("weights_digest"):
        raise CorruptedFileError(f"{directory / 'weights.pt'}: content does not match its sha256 in config.json")
    return model_config, basis, weights


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Rebuild the model of a folder written by :func:`export_model`, in eval mode, weights checked."""
    directory = Path(directory)
    model_config, basis, weights = read_model_files(directory)
    try:
        with default_dtype(dtype):
            model = build_model(model_config, basis)
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:  # a config that does not build
        raise CorruptedFileError(f"{directory}: corrupted model folder: config.json, basis.json and weights.pt do not "
                                 f"fit together ({type(exc).__name__}: {exc})") from exc
    # folders from before the target normalisation lack its buffers: their defaults are the identity
    missing = [key for key in missing if not key.startswith("head.normalization.")]
    if missing or unexpected:
        raise CorruptedFileError(f"{directory / 'weights.pt'}: corrupted: weights do not fit the model (missing "
                                 f"{missing}, unexpected {unexpected})")
    return model.to(device).eval()

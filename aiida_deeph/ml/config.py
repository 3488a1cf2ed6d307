"""The TOML configuration of training and inference: one flat, documented dataclass per section.

Sections follow DeepH-pack's names; every key is optional except those marked *required*::

    [system]                      # SystemConfig: device, precision, seed, threads
    [data]                        # DataConfig: the preprocessed dataset, the outputs folder, the batch budget
    [model]                       # build_model's flat config (see aiida_deeph.ml.models), e.g. model = "deeph2";
                                  # only the keys given are kept: build_model fills in the defaults
    [process.train]               # TrainConfig: loss, optimiser, schedule, EMA, checkpoints, walltime
    [process.infer]               # InferConfig: model folder, structure, overlap, output, chunk size

Unknown sections or keys and wrongly typed values raise :class:`ConfigError` naming the valid ones. Relative
paths are relative to the TOML file. Precision: ``auto`` is fp32 on CPU and tf32 matmuls on GPU; ``bf16`` adds
bf16 autocast (fastest on GPU, but its 8-bit mantissa limits H to about meV accuracy, so it is opt-in).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import torch

from .models import MODEL_DEFAULTS

PRECISIONS = ("auto", "fp32", "fp64", "tf32", "bf16")
LOSSES = ("mse", "mae", "huber")
SCHEDULES = ("plateau", "cosine")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type or value out of range."""


@dataclass
class SystemConfig:
    """``[system]``: where and how to compute."""

    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; torchrun ranks use their GPU
    precision: str = "auto"  # one of PRECISIONS: fp32 / fp64 parameters; tf32 and bf16 only change GPU matmuls
    seed: int = 0  # model initialisation and the per-epoch shuffles
    num_threads: int = 0  # torch intra-op threads per process; 0 keeps torch's default


@dataclass
class DataConfig:
    """``[data]``: what to train on and where results go."""

    dataset_dir: str = ""  # required for training: a folder written by ``python -m aiida_deeph.ml preprocess``
    outputs_dir: str = "outputs"  # log, curve.csv, metrics.json, checkpoints/ and model/
    edges_per_batch: int = 50_000  # edge budget of one optimiser step (all ranks together); big structures go alone


@dataclass
class TrainConfig:
    """``[process.train]``: the optimisation."""

    max_epochs: int = 1000
    loss: str = "mse"  # one of LOSSES, on the masked H entries (eV)
    huber_delta: float = 0.01  # eV, where the Huber loss turns from quadratic to linear
    learning_rate: float = 1e-3  # AdamW
    weight_decay: float = 0.0  # AdamW (decoupled)
    beta2: float = 0.999  # AdamW's second-moment decay; ≈ 0.95 follows the shrinking gradients of long fits faster
    warmup_steps: int = 0  # optimiser steps of linear learning-rate warm-up from 0
    schedule: str = "plateau"  # one of SCHEDULES: plateau (plateau_* keys) or cosine (to min_learning_rate at the end)
    plateau_factor: float = 0.5  # ReduceLROnPlateau on the validation loss, after the warm-up
    plateau_patience: int = 10  # epochs without a relative improvement of plateau_threshold
    plateau_threshold: float = 1e-3
    plateau_cooldown: int = 0  # epochs to wait after a reduction
    min_learning_rate: float = 1e-6  # floor of the reductions; the end of the cosine
    grad_clip: float = 4.2  # max global gradient norm (DeepH-1's value); 0 disables clipping
    ema_decay: float = 0.0  # exponential moving average of the weights (e.g. 0.999); 0 disables it
    checkpoint_every: int = 1  # epochs between latest.pt saves (also saved at the end and on walltime)
    walltime_s: float = 0.0  # stop with exit status 4 when the next epoch would pass it; 0 = no limit
    resume: bool = False  # continue from checkpoints/latest.pt when it exists (takes precedence over init_model)
    init_model: str = ""  # fine-tune: a model/ folder whose architecture, weights and target normalisation start the
    # run ([model] must then be empty or agree with it; its basis must cover the dataset's); the optimiser starts anew
    progress: bool = True  # in-epoch progress (tqdm on a terminal, else a line every 10 %)


@dataclass
class InferConfig:
    """``[process.infer]``: predict H for one structure."""

    model_dir: str = ""  # required: the model/ folder of a training run
    structure: str = ""  # required: a POSCAR file
    overlap_dir: str = ""  # DeepH folder with overlap.h5, whose atom_pairs become the edges; "" = neighbour search
    output_dir: str = ""  # required: where the DeepH folder with hamiltonian.h5 is written
    max_edges_per_chunk: int = 200_000  # bounds memory: edges (with their receptive field) per forward pass


@dataclass
class Config:
    system: SystemConfig = field(default_factory=SystemConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        """The TOML layout as a dict (``process.train``, ``process.infer`` nested)."""
        return {
            "system": dataclasses.asdict(self.system),
            "data": dataclasses.asdict(self.data),
            "model": dict(self.model),
            "process": {"train": dataclasses.asdict(self.train), "infer": dataclasses.asdict(self.infer)},
        }


_PATHS = {"dataset_dir", "outputs_dir", "init_model", "model_dir", "structure", "overlap_dir", "output_dir"}


def _has_type(value: Any, expected: type) -> bool:
    if isinstance(value, bool) or expected is bool:  # bool is an int in Python: keep flags and numbers apart
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)


def _section(cls: type, values: Mapping[str, Any], name: str, base: Path | None) -> Any:
    """``cls(**values)`` with unknown keys, wrong types and relative paths handled."""
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"[{name}]: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(hints)}")
    checked = {}
    for key, value in values.items():
        expected = hints[key]
        if not _has_type(value, expected):
            raise ConfigError(f"[{name}] {key} must be {expected.__name__}, not {value!r}")
        if key in _PATHS and value and base is not None:
            value = str((base / os.path.expanduser(value)).resolve())
        checked[key] = float(value) if expected is float else value
    return cls(**checked)


def _check_model(values: Mapping[str, Any]) -> dict[str, Any]:
    name = values.get("model", "deeph2")
    if name not in MODEL_DEFAULTS:
        raise ConfigError(f"[model] model must be one of {', '.join(MODEL_DEFAULTS)}, not {name!r}")
    unknown = sorted(set(values) - {"model", *MODEL_DEFAULTS[name]})
    if unknown:
        valid = ", ".join(["model", *MODEL_DEFAULTS[name]])
        raise ConfigError(f"[model]: unknown key(s) {', '.join(unknown)} for model {name!r}; valid keys: {valid}")
    return dict(values)  # as given: an empty section stays empty, which fine-tuning tells apart from a restated one


def _validate(config: Config) -> None:
    if config.system.precision not in PRECISIONS:
        raise ConfigError(f"[system] precision must be one of {', '.join(PRECISIONS)}")
    device = config.system.device
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"[system] device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if config.train.loss not in LOSSES:
        raise ConfigError(f"[process.train] loss must be one of {', '.join(LOSSES)}")
    if config.train.schedule not in SCHEDULES:
        raise ConfigError(f"[process.train] schedule must be one of {', '.join(SCHEDULES)}")
    positive = {"[data] edges_per_batch": config.data.edges_per_batch,
                "[process.train] learning_rate": config.train.learning_rate,
                "[process.train] checkpoint_every": config.train.checkpoint_every,
                "[process.infer] max_edges_per_chunk": config.infer.max_edges_per_chunk}
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be positive, not {value}")
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise ConfigError("[process.train] ema_decay must be in [0, 1)")
    if not 0.0 < config.train.beta2 < 1.0:
        raise ConfigError("[process.train] beta2 must be in (0, 1)")
    if not 0.0 < config.train.plateau_factor < 1.0:
        raise ConfigError("[process.train] plateau_factor must be in (0, 1)")


def config_from_dict(values: Mapping[str, Any], base: str | os.PathLike | None = None) -> Config:
    """Build and validate a :class:`Config` from the TOML layout; ``base`` anchors relative paths."""
    base = Path(base) if base is not None else None
    values = dict(values)
    process = values.pop("process", {})
    unknown = sorted(set(values) - {"system", "data", "model"}) + [f"process.{k}" for k in sorted(set(process) - {"train", "infer"})]
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; valid sections: system, data, model, "
                          "process.train, process.infer")
    config = Config(
        system=_section(SystemConfig, values.get("system", {}), "system", base),
        data=_section(DataConfig, values.get("data", {}), "data", base),
        model=_check_model(values.get("model", {})),
        train=_section(TrainConfig, process.get("train", {}), "process.train", base),
        infer=_section(InferConfig, process.get("infer", {}), "process.infer", base),
    )
    _validate(config)
    return config


def load_config(path: str | os.PathLike) -> Config:
    """Read a TOML file (see the module docstring for its sections)."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    return config_from_dict(values, base=path.parent.resolve())


# --- devices and precision -----------------------------------------------------------------------------------------
def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → the rank's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


@dataclass(frozen=True)
class Precision:
    """What a precision name means on a device: parameter dtype, autocast dtype (or None), TF32 matmuls."""

    dtype: torch.dtype
    autocast: torch.dtype | None
    tf32: bool

    @classmethod
    def resolve(cls, name: str, device: torch.device) -> "Precision":
        gpu = device.type == "cuda"
        if name == "auto":
            name = "tf32" if gpu else "fp32"
        if name == "fp64":
            return cls(torch.float64, None, False)
        # bf16 autocast runs on CPU too (slowly): the same code path is testable without a GPU
        return cls(torch.float32, torch.bfloat16 if name == "bf16" else None, gpu and name in ("tf32", "bf16"))

    def autocast_context(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default float dtype: graphs and models take theirs from it when built."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)

"""The training engine: masked losses on H blocks, AdamW, warm-up + plateau or cosine schedule, EMA, checkpoints,
torchrun.

Before the first epoch the model head's target normalisation (per pair type, on-/off-site and output irrep: shift,
scale and distance decay, :func:`.wigner_eckart.fit_output_normalization`) is fitted to the training targets; it
is part of the ``state_dict``, so checkpoints and the exported model carry it.

Fine-tuning (``[process.train] init_model``, a ``model/`` folder of an earlier run): the parent's architecture,
weights and target normalisation (kept, not refitted) start the run; the optimiser, schedule and EMA start anew.
``[model]`` must be empty or agree with the parent's config, and the parent's basis must cover the dataset's (same
shells for each of its elements): the graphs are then read in the parent's basis, whose element and pair-type
indices the weights were trained with. A resume from ``latest.pt`` takes precedence over ``init_model``.

One optimiser step is one batch of structures (an edge budget, :mod:`.dataset`); the loss is the sum over the
masked H entries of the batch divided by their count (MSE, MAE or Huber, eV). Under ``torchrun`` every rank
takes its share of each batch and the gradients of the per-rank sums over the *global* count are all-reduced
(summed): a step is the same whatever the number of processes, up to the order of floating-point sums. Rank 0
writes every file. After every epoch the validation split is evaluated (with the EMA weights when enabled); it
drives the plateau schedule and picks the best epoch. Without a validation split the training structures stand in.

``[data] outputs_dir`` receives::

    config.json          the resolved configuration
    dataset_split.json   the dataset, its checksum and the structure names of each split
    log                  one line per epoch (also printed)
    curve.csv            epoch, step, lr, train/val loss, MAE and RMSE (meV), epoch time
    metrics.json         status (running, completed, nan, walltime), last and best metrics, test metrics of
                         the best weights (at the end of every run)
    checkpoints/latest.pt, best.pt     full state (:mod:`.checkpoint`); best = lowest validation loss
    model/               the best weights (EMA average when enabled) for inference (:func:`.checkpoint.load_model`)

Resuming from ``latest.pt`` continues bit for bit: the shuffles depend only on (seed, epoch) and every state,
the RNGs included, is restored. :func:`train` returns a :class:`TrainResult` whose ``exit_code`` is
:data:`EXIT_OK`, :data:`EXIT_NAN` (a non-finite loss or gradient: stopped, ``latest.pt`` is the last finite state)
or :data:`EXIT_WALLTIME` (the next epoch would pass ``walltime_s``: ``latest.pt`` saved, resume to continue).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import csv
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..io.atomic_write import write_text
from .basis import OrbitalBasis
from .checkpoint import (
    export_model,
    load_checkpoint,
    load_model,
    read_model_info,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import Config, ConfigError, Precision, default_dtype, resolve_device
from .dataset import DatasetError, GraphDataset
from .graph import CrystalGraph
from .models import MODEL_DEFAULTS, build_model
from .wigner_eckart import fit_output_normalization

EXIT_OK, EXIT_NAN, EXIT_WALLTIME = 0, 3, 4
CURVE_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_mae_meV", "train_rmse_meV", "val_loss", "val_mae_meV",
                 "val_rmse_meV", "epoch_time_s", "elapsed_s")


@dataclass
class TrainResult:
    status: str  # "completed", "nan" or "walltime"
    exit_code: int
    metrics: dict[str, Any]


# --- losses and metrics ------------------------------------------------------------------------------------------------
def loss_terms(pred: torch.Tensor, graph: CrystalGraph, kind: str, delta: float) -> torch.Tensor:
    """[loss sum, |error| sum, error² sum] over the masked entries (eV); complex errors count by modulus."""
    error = (pred.to(graph.target.dtype) - graph.target)[graph.mask].abs()
    squared = error.square()
    if kind == "mse":
        loss = squared.sum()
    elif kind == "mae":
        loss = error.sum()
    else:  # huber
        loss = torch.where(error < delta, 0.5 * squared, delta * (error - 0.5 * delta)).sum()
    return torch.stack([loss, error.sum().detach(), squared.sum().detach()])


@dataclass
class Stats:
    loss: float
    mae_meV: float
    rmse_meV: float

    @classmethod
    def from_sums(cls, sums: torch.Tensor) -> "Stats":
        """From all-reduced [loss sum, |error| sum, error² sum, count]; NaN without entries."""
        loss, absolute, squared, count = sums.tolist()
        if count == 0:
            return cls(math.nan, math.nan, math.nan)
        return cls(loss / count, 1000 * absolute / count, 1000 * math.sqrt(squared / count))

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "mae_meV": self.mae_meV, "rmse_meV": self.rmse_meV}


# --- schedule and EMA ---------------------------------------------------------------------------------------------------
class WarmupSchedule(abc.ABC):
    """lr = max(base · scale, min_lr) · ramp: the ramp rises linearly over the first ``warmup_steps`` optimiser
    steps; subclasses set ``scale`` after each epoch. One object so that a single plain state dict restores it."""

    STATE: tuple[str, ...] = ("steps", "scale")

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, min_lr: float) -> None:
        self.optimizer, self.base_lr, self.warmup_steps, self.min_lr = optimizer, base_lr, warmup_steps, min_lr
        self.steps, self.scale = 0, 1.0
        self._apply()

    @property
    def lr(self) -> float:
        ramp = min(1.0, (self.steps + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return max(self.base_lr * self.scale, self.min_lr) * ramp

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def step_batch(self) -> None:
        self.steps += 1
        self._apply()

    @abc.abstractmethod
    def step_epoch(self, loss: float) -> None:
        """After each epoch, with the monitored (validation) loss."""

    def state_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._apply()


class WarmupPlateau(WarmupSchedule):
    """After the warm-up, ``scale`` is multiplied by ``factor`` when the monitored loss has not improved by a
    relative ``threshold`` for more than ``patience`` epochs, then waits ``cooldown`` epochs (torch's
    ReduceLROnPlateau rule)."""

    STATE = ("steps", "scale", "best", "bad_epochs", "cooldown_left")

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, factor: float,
                 patience: int, threshold: float, cooldown: int, min_lr: float) -> None:
        self.factor, self.patience, self.threshold, self.cooldown = factor, patience, threshold, cooldown
        self.best, self.bad_epochs, self.cooldown_left = math.inf, 0, 0
        super().__init__(optimizer, base_lr, warmup_steps, min_lr)

    def step_epoch(self, loss: float) -> None:
        if self.steps < self.warmup_steps:
            return
        if loss < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.cooldown_left, self.bad_epochs = self.cooldown, 0
            self._apply()


class WarmupCosine(WarmupSchedule):
    """After epoch e of ``epochs``, lr = min_lr + ½ (base − min_lr)(1 + cos(π e / epochs)): a smooth decay to
    ``min_lr`` at the last epoch, whatever the losses (long memorisation runs, where plateaus are rare and noisy)."""

    STATE = ("steps", "scale", "epochs_done")

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup_steps: int, epochs: int,
                 min_lr: float) -> None:
        self.epochs, self.epochs_done = epochs, 0
        super().__init__(optimizer, base_lr, warmup_steps, min_lr)

    def step_epoch(self, loss: float) -> None:
        self.epochs_done += 1
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(self.epochs_done, self.epochs) / self.epochs))
        self.scale = (self.min_lr + (self.base_lr - self.min_lr) * cosine) / self.base_lr
        self._apply()


class EMA:
    """Exponential moving average of the floating-point weights, updated after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)


@contextlib.contextmanager
def swapped_weights(model: nn.Module, weights: Mapping[str, torch.Tensor] | None) -> Iterator[None]:
    """Evaluate with ``weights`` (e.g. the EMA average), then put the training weights back."""
    if weights is None:
        yield
        return
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights, strict=False)
    try:
        yield
    finally:
        model.load_state_dict(saved)


# --- processes ---------------------------------------------------------------------------------------------------------
@dataclass
class Processes:
    """This process' place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def start(cls, device_name: str) -> "Processes":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if world_size > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world_size, device)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def close(self) -> None:
        if self.world_size > 1:
            dist.destroy_process_group()


def _progress(items: Sequence, label: str, enabled: bool) -> Iterable:
    """tqdm on a terminal when installed; otherwise a line every 10 % for epochs of at least 10 batches."""
    if not enabled or len(items) < 10:
        return items
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(items, desc=label, leave=False)
        except ImportError:
            pass

    def lines() -> Iterator:
        every = max(1, len(items) // 10)
        for n, item in enumerate(items, 1):
            yield item
            if n % every == 0 or n == len(items):
                print(f"  {label}: {n}/{len(items)} batches", flush=True)

    return lines()


# --- fine-tuning ------------------------------------------------------------------------------------------------------
def check_parent_architecture(section: Mapping[str, Any], parent: Mapping[str, Any], path: str) -> None:
    """``[model]`` must be empty or agree with the parent's config in every key it sets (it cannot change it)."""
    resolved = {**MODEL_DEFAULTS[parent["model"]], **parent}
    differ = {key: value for key, value in section.items() if resolved.get(key) != value}
    if differ:
        given = ", ".join(f"{key} = {value!r} (parent: {resolved.get(key)!r})" for key, value in differ.items())
        raise ConfigError(f"[process.train] init_model = {path} fixes the architecture: leave [model] empty or "
                          f"equal to the parent's; it sets {given}")


def check_parent_basis(parent: OrbitalBasis, basis: OrbitalBasis, path: str) -> None:
    """The parent's basis must hold every element of the dataset with the same shells (and the same spin)."""
    covered = parent.spinful == basis.spinful and all(parent.shells.get(el) == ls for el, ls in basis.shells.items())
    if not covered:
        raise ConfigError(f"[process.train] init_model = {path}: its basis {parent} does not cover the dataset's "
                          f"{basis}; fine-tuning needs the same shells for every element of the dataset")


# --- the engine ------------------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config: Config, processes: Processes) -> None:
        self.config, self.procs = config, processes
        self.started = time.monotonic()
        system, train = config.system, config.train
        if system.num_threads:
            torch.set_num_threads(system.num_threads)
        self.device = processes.device
        self.precision = Precision.resolve(system.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.precision.tf32
            torch.backends.cudnn.allow_tf32 = self.precision.tf32
        random.seed(system.seed)
        np.random.seed(system.seed)
        torch.manual_seed(system.seed)
        if not config.data.dataset_dir:
            raise ConfigError("[data] dataset_dir is required for training")
        self.dataset = GraphDataset(config.data.dataset_dir, self.precision.dtype, self.device)
        self.train_set, self.val_set, self.test_set = (self.dataset.split(s) for s in ("train", "val", "test"))
        if not self.train_set:
            raise DatasetError(f"{config.data.dataset_dir}: the training split is empty")
        self.pair_cutoffs = dict(self.dataset.pair_cutoffs)  # of every element pair the exported model knows
        self.model = self._initial_model()
        resuming = train.resume and (Path(config.data.outputs_dir) / "checkpoints" / "latest.pt").is_file()
        if processes.rank == 0 and not resuming and not train.init_model:  # else restored with the weights
            fit_output_normalization(self.model.head, lambda: (self.dataset[i] for i in self.train_set))
        if processes.world_size > 1:  # identical starting weights on every rank, whatever each RNG did
            for tensor in self.model.state_dict().values():
                dist.broadcast(tensor, 0)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        for p in self.params:  # zero (not absent) gradients: AdamW treats all parameters alike on every rank
            p.grad = torch.zeros_like(p)
        self.optimizer = torch.optim.AdamW(self.params, lr=train.learning_rate, betas=(0.9, train.beta2),
                                           weight_decay=train.weight_decay)
        self.scheduler = self._schedule()
        self.ema = EMA(self.model, train.ema_decay) if train.ema_decay else None
        self.epoch, self.step = 0, 0
        self.best: dict[str, Any] | None = None  # snapshot of the best epoch's state, flushed with latest.pt
        self.best_saved = True
        self.saved_epoch = 0  # the epoch in latest.pt
        self.out = Path(config.data.outputs_dir)
        self.checkpoints = self.out / "checkpoints"
        self.epoch_times: list[float] = []
        if train.resume and (self.checkpoints / "latest.pt").is_file():
            self._restore()

    def _initial_model(self) -> nn.Module:
        """A new model for the dataset's basis, or the parent of ``init_model`` (module docstring)."""
        config, path = self.config, self.config.train.init_model
        if not path:
            with default_dtype(self.precision.dtype):
                return build_model(config.model, self.dataset.basis).to(self.device)
        parent_config, parent_basis, parent_cutoffs = read_model_info(path)
        check_parent_architecture(config.model, parent_config, path)
        check_parent_basis(parent_basis, self.dataset.basis, path)
        self.dataset.basis = parent_basis  # graph files are basis-independent: no graph has been read yet
        for pair, cutoff in parent_cutoffs.items():
            self.pair_cutoffs[pair] = max(cutoff, self.pair_cutoffs.get(pair, 0.0))
        return load_model(path, self.device, self.precision.dtype)

    def _schedule(self) -> WarmupSchedule:
        train = self.config.train
        if train.schedule == "cosine":
            return WarmupCosine(self.optimizer, train.learning_rate, train.warmup_steps, train.max_epochs,
                                train.min_learning_rate)
        return WarmupPlateau(self.optimizer, train.learning_rate, train.warmup_steps, train.plateau_factor,
                             train.plateau_patience, train.plateau_threshold, train.plateau_cooldown,
                             train.min_learning_rate)

    # --- state ---
    @property
    def is_main(self) -> bool:
        return self.procs.rank == 0

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        return None if self.ema is None else self.ema.state_dict()

    def state(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "rng": rng_state(),
            "metrics": dict(metrics),
        }

    def _restore(self) -> None:
        state = load_checkpoint(self.checkpoints / "latest.pt", self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:  # EMA switched on at a resume starts from here
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.saved_epoch = self.epoch
        if (self.checkpoints / "best.pt").is_file():
            self.best = load_checkpoint(self.checkpoints / "best.pt", self.device)
        self.log(f"resumed from {self.checkpoints / 'latest.pt'} at epoch {self.epoch}")
        if self.is_main:
            _truncate_curve(self.out / "curve.csv", self.epoch)

    # --- files (rank 0) ---
    def log(self, line: str) -> None:
        if self.is_main:
            print(line, flush=True)
            with open(self.out / "log", "a") as handle:
                handle.write(line + "\n")

    def write_metrics(self, status: str, extra: Mapping[str, Any] = ()) -> dict[str, Any]:
        best = self.best["metrics"] if self.best else {}
        metrics = {
            "status": status,
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best["epoch"] if self.best else None,
            "best": best,
            "epoch_time_s": float(np.mean(self.epoch_times)) if self.epoch_times else None,
            "num_parameters": sum(p.numel() for p in self.params),
            "world_size": self.procs.world_size,
            "device": str(self.device),
            "precision": self.config.system.precision,
            **dict(extra),
        }
        if self.is_main:
            write_text(self.out / "metrics.json", json.dumps(metrics, indent=1))
        return metrics

    def save(self, metrics: Mapping[str, Any]) -> None:
        """latest.pt, and the best epoch when it is not on disk yet."""
        if self.is_main:
            save_checkpoint(self.checkpoints / "latest.pt", self.state(metrics))
        self.saved_epoch = self.epoch
        self.save_best()

    def save_best(self) -> None:
        """best.pt and model/ from the in-memory snapshot of the best epoch."""
        if self.is_main and self.best is not None and not self.best_saved:
            save_checkpoint(self.checkpoints / "best.pt", self.best)
            self.export(self.best)
        self.best_saved = True

    def export(self, best: Mapping[str, Any], extra: Mapping[str, Any] = ()) -> None:
        weights = best["ema"] if best["ema"] is not None else best["model"]
        export_model(self.model, self.out / "model", self.pair_cutoffs,
                     {"epoch": best["epoch"], **best["metrics"], **dict(extra)}, state_dict=weights)

    def _write_run_info(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "config.json", json.dumps(self.config.to_dict(), indent=1))
        names = {s: [self.dataset.structures[i]["name"] for i in self.dataset.split(s)] for s in ("train", "val", "test")}
        write_text(self.out / "dataset_split.json", json.dumps(
            {"dataset_dir": str(self.dataset.directory), "checksum": self.dataset.meta["checksum"], **names}, indent=1))

    # --- epochs ---
    def _batch_sums(self, graph: CrystalGraph) -> torch.Tensor:
        with self.precision.autocast_context(self.device):
            pred = self.model(graph)
        return loss_terms(pred, graph, self.config.train.loss, self.config.train.huber_delta)

    def train_epoch(self, epoch: int) -> Stats | None:
        """One pass over the training split; None when a loss or gradient is not finite."""
        cfg = self.config
        self.model.train()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        batches = list(self.dataset.batches(self.train_set, cfg.data.edges_per_batch, epoch, cfg.system.seed,
                                            self.procs.rank, self.procs.world_size))
        for batch in _progress(batches, f"epoch {epoch}", cfg.train.progress and self.is_main):
            self.optimizer.zero_grad(set_to_none=False)
            if batch.graph is not None:
                terms = self._batch_sums(batch.graph)
                (terms[0] / batch.num_targets).backward()
                sums[:3] += terms.detach().double()
                sums[3] += int(batch.graph.mask.sum())
            if self.procs.world_size > 1:
                flat = self.procs.sum(torch.cat([p.grad.reshape(-1) for p in self.params]))
                offset = 0
                for p in self.params:
                    p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            if not torch.isfinite(norm):  # identical on every rank: the gradients were summed first
                return None
            self.optimizer.step()
            self.scheduler.step_batch()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
        return Stats.from_sums(self.procs.sum(sums))

    @torch.no_grad()
    def evaluate(self, indices: Sequence[int], weights: Mapping[str, torch.Tensor] | None) -> Stats:
        self.model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        with swapped_weights(self.model, weights):
            for batch in self.dataset.batches(indices, self.config.data.edges_per_batch, None, 0,
                                              self.procs.rank, self.procs.world_size):
                if batch.graph is not None:
                    sums[:3] += self._batch_sums(batch.graph).double()
                    sums[3] += int(batch.graph.mask.sum())
        return Stats.from_sums(self.procs.sum(sums))

    def _walltime_reached(self) -> bool:
        limit = self.config.train.walltime_s
        if not limit:
            return False
        # the next epoch, with a margin for its checkpoint, must end before the limit on every rank
        late = time.monotonic() - self.started + 1.2 * max(self.epoch_times) > limit
        return bool(self.procs.sum(torch.tensor([float(late)], device=self.device)).item())

    def run(self) -> TrainResult:
        cfg = self.config
        if self.is_main:
            self._write_run_info()
        self.write_metrics("running")
        parent = f", initialised from {cfg.train.init_model}" if cfg.train.init_model and not self.epoch else ""
        self.log(f"{self.model.config['model']}: {sum(p.numel() for p in self.params)} parameters{parent}, "
                 f"{len(self.train_set)}/{len(self.val_set)}/{len(self.test_set)} train/val/test structures, "
                 f"{self.procs.world_size} process(es) on {self.device}, precision {cfg.system.precision}")
        while self.epoch < cfg.train.max_epochs:
            epoch = self.epoch + 1
            tick = time.monotonic()
            lr = self.scheduler.lr
            train_stats = self.train_epoch(epoch)
            if train_stats is None or not math.isfinite(train_stats.loss):
                return self.stop("nan", EXIT_NAN, f"epoch {epoch}: non-finite loss or gradient; stopped "
                                 f"(latest.pt holds epoch {self.saved_epoch}); lower the learning rate")
            # without a validation split the training structures stand in (after the step, with the EMA weights)
            val_stats = self.evaluate(self.val_set or self.train_set, self.eval_weights())
            if not math.isfinite(val_stats.loss):
                return self.stop("nan", EXIT_NAN, f"epoch {epoch}: non-finite validation loss; stopped")
            self.scheduler.step_epoch(val_stats.loss)
            self.epoch = epoch
            self.epoch_times.append(time.monotonic() - tick)
            metrics = {"train": train_stats.as_dict(), "val": val_stats.as_dict()}
            if self.best is None or val_stats.loss < self.best["metrics"]["val"]["loss"]:
                self.best, self.best_saved = copy.deepcopy(self.state(metrics)), False
            self._record(epoch, lr, train_stats, val_stats)
            walltime = epoch < cfg.train.max_epochs and self._walltime_reached()
            if walltime or epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.max_epochs:
                self.save(metrics)
            if walltime:
                return self.stop("walltime", EXIT_WALLTIME, f"epoch {epoch}: the next epoch would pass "
                                 f"walltime_s = {cfg.train.walltime_s}; latest.pt saved, resume to continue")
        return self.finish()

    def _record(self, epoch: int, lr: float, train: Stats, val: Stats) -> None:
        elapsed = time.monotonic() - self.started
        self.log(f"epoch {epoch:5d}  lr {lr:.2e}  train loss {train.loss:.4e} MAE {train.mae_meV:.4f} meV  "
                 f"val loss {val.loss:.4e} MAE {val.mae_meV:.4f} meV  {self.epoch_times[-1]:.2f} s")
        if self.is_main:
            path = self.out / "curve.csv"
            new = not path.exists()
            with open(path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(CURVE_COLUMNS)
                writer.writerow([epoch, self.step, lr, train.loss, train.mae_meV, train.rmse_meV, val.loss,
                                 val.mae_meV, val.rmse_meV, self.epoch_times[-1], elapsed])

    def stop(self, status: str, code: int, message: str) -> TrainResult:
        self.save_best()  # a finite state worth keeping, whatever happened after it
        self.log(message)
        return TrainResult(status, code, self.write_metrics(status, self.test_metrics()))

    def test_metrics(self) -> dict[str, Any]:
        """Test metrics of the best weights so far, also written to model/metrics.json. Every run ends with them:
        a walltime stop may be the last one (a training budget spent), and its model is then the result."""
        if self.best is None or not self.test_set:
            return {}
        best_weights = self.best["ema"] if self.best["ema"] is not None else self.best["model"]
        extra = {"test": self.evaluate(self.test_set, best_weights).as_dict()}
        if self.is_main:
            self.export(self.best, extra)
        return extra

    def finish(self) -> TrainResult:
        extra = self.test_metrics()
        metrics = self.write_metrics("completed", extra)
        if self.best is not None:
            self.log(f"done: best epoch {self.best['epoch']}, val MAE {self.best['metrics']['val']['mae_meV']:.4f} meV"
                     + (f", test MAE {extra['test']['mae_meV']:.4f} meV" if "test" in extra else ""))
        return TrainResult("completed", EXIT_OK, metrics)


def _truncate_curve(path: Path, epoch: int) -> None:
    """Drop the rows after ``epoch``: they were written after the checkpoint the run resumes from."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if int(row[0]) <= epoch]
    write_text(path, "".join(",".join(row) + "\n" for row in kept))


def train(config: Config) -> TrainResult:
    """Train as configured; under torchrun, every rank calls this (see the module docstring)."""
    processes = Processes.start(config.system.device)
    try:
        return Trainer(config, processes).run()
    finally:
        processes.close()


def evaluate(model_dir: str | os.PathLike, dataset_dir: str | os.PathLike, split: str = "test",
             edges_per_batch: int = 50_000, device: str = "cpu") -> Stats:
    """MSE loss, MAE and RMSE of a trained model on one split of a dataset (one process)."""
    model = load_model(model_dir, device)
    dataset = GraphDataset(dataset_dir, torch.float32, device)
    if dataset.basis != model.basis:
        raise DatasetError(f"the dataset's basis {dataset.basis} is not the model's {model.basis}")
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for batch in dataset.batches(dataset.split(split), edges_per_batch):
            sums[:3] += loss_terms(model(batch.graph), batch.graph, "mse", 0.0).double().cpu()
            sums[3] += int(batch.graph.mask.sum())
    return Stats.from_sums(sums)

"""torchrun with 2 gloo processes on CPU trains like 1 process: each step sums the per-rank gradients of the
per-rank error sums over the global count, so only the order of floating-point sums differs (float64 here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aiida_deeph.io import DeepHStructure
from aiida_deeph.ml.checkpoint import load_checkpoint
from aiida_deeph.ml.config import load_config
from aiida_deeph.ml.dataset import preprocess
from aiida_deeph.ml.train import EXIT_OK, train

from .test_dataset import perturbed

CONFIG = """
[system]
device = "cpu"
precision = "fp64"
seed = 3
num_threads = 1

[data]
dataset_dir = "{dataset}"
outputs_dir = "{out}"
edges_per_batch = 2100

[model]
model = "deeph2"
channels = 8
num_blocks = 1
cutoff = 10.5
num_radial = 8
radial_hidden = 16

[process.train]
max_epochs = 3
learning_rate = 3e-3
grad_clip = 1.0
ema_decay = 0.5
progress = false
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(cp2k_graphene, tmp_path_factory) -> Path:
    """Five structures (one real): train 3, val 1, test 1; with two structures per batch, the last training batch
    and the validation leave rank 1 without a structure, which it must still get through."""
    root = tmp_path_factory.mktemp("ddp_sources")
    real = cp2k_graphene(1)[0]
    structure = DeepHStructure.read(real)
    copies = [perturbed(structure, seed).write(root / f"copy_{seed}") for seed in range(4)]
    return preprocess([real, *copies], tmp_path_factory.mktemp("ddp") / "dataset", (0.6, 0.2, 0.2), seed=0)


def write_config(folder: Path, dataset: Path) -> Path:
    folder.mkdir()
    path = folder / "train.toml"
    path.write_text(CONFIG.format(dataset=dataset, out=folder / "out"))
    return path


def test_two_processes_match_one(dataset, tmp_path):
    single = write_config(tmp_path / "one", dataset)
    torch.set_num_threads(1)
    assert train(load_config(single)).exit_code == EXIT_OK

    double = write_config(tmp_path / "two", dataset)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "aiida_deeph.ml", "train", str(double)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == EXIT_OK, process.stdout + process.stderr

    metrics = [json.loads((tmp_path / run / "out" / "metrics.json").read_text()) for run in ("one", "two")]
    assert [m["world_size"] for m in metrics] == [1, 2] and [m["step"] for m in metrics] == [6, 6]
    curves = [np.genfromtxt(tmp_path / run / "out" / "curve.csv", delimiter=",", names=True) for run in ("one", "two")]
    for column in ("train_loss", "train_mae_meV", "val_loss", "val_mae_meV", "lr"):
        assert np.allclose(curves[0][column], curves[1][column], rtol=1e-10, atol=0), column
    assert metrics[0]["test"]["mae_meV"] == pytest.approx(metrics[1]["test"]["mae_meV"], rel=1e-10)
    states = [load_checkpoint(tmp_path / run / "out" / "checkpoints" / "latest.pt") for run in ("one", "two")]
    for key in ("model", "ema"):
        for name, value in states[0][key].items():
            assert torch.allclose(value, states[1][key][name], rtol=1e-9, atol=1e-12), (key, name)

"""Benchmark (not a test): DeepH-2 and DeepH-E3 trained for the same wall time on one dataset, side by side.

    python benchmarks/bench_learning.py DATASET_DIR [--seconds 300] [--out DIR] [--threads 2] [--device cpu]
                                        [--lr 5e-3] [--edges-per-batch 50000]

``DATASET_DIR`` is a folder from ``python -m aiida_deeph.ml preprocess``. Each model trains with
``walltime_s = --seconds`` (so the usual stop is exit status 4) and the same schedule; its best weights (lowest
validation loss) are then evaluated on the held-out test split (the validation split if the test split is empty).
Printed per model: parameters, epochs done, mean epoch time, best validation MAE and held-out MAE / RMSE (meV).
The Gaussian distance basis of both models spans the dataset's longest pair, so no pair falls outside it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from aiida_deeph.ml.config import config_from_dict
from aiida_deeph.ml.train import evaluate, train

# small versions of each model (5–10·10⁴ parameters for an s/p basis; deephe3 carries both parities per l)
MODELS = {
    "deeph2": {"model": "deeph2", "channels": 16, "num_blocks": 2, "num_heads": 2, "num_radial": 16, "radial_hidden": 32},
    "deephe3": {"model": "deephe3", "channels": 8, "num_blocks": 2, "num_radial": 16, "radial_hidden": 32},
}


def run(name: str, dataset: Path, out: Path, args: argparse.Namespace) -> dict:
    cutoffs = json.loads((dataset / "dataset.json").read_text())["pair_cutoffs"]
    config = config_from_dict({
        "system": {"device": args.device, "num_threads": args.threads, "seed": 0},
        "data": {"dataset_dir": str(dataset), "outputs_dir": str(out), "edges_per_batch": args.edges_per_batch},
        "model": {**MODELS[name], "cutoff": math.ceil(max(cutoffs.values()) + 0.5)},
        "process": {"train": {"max_epochs": 10**9, "walltime_s": float(args.seconds), "learning_rate": args.lr,
                              "plateau_patience": 20, "checkpoint_every": 50, "progress": False}},
    })
    result = train(config)
    split = "test" if json.loads((dataset / "split.json").read_text())["test"] else "val"
    held_out = evaluate(out / "model", dataset, split, args.edges_per_batch, args.device)
    metrics = result.metrics
    return {"model": name, "parameters": metrics["num_parameters"], "epochs": metrics["epoch"],
            "epoch_s": metrics["epoch_time_s"], "val_mae": metrics["best"]["val"]["mae_meV"], "split": split,
            "mae": held_out.mae_meV, "rmse": held_out.rmse_meV}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--seconds", type=float, default=300.0, help="training wall time per model")
    parser.add_argument("--out", type=Path, help="keep the training runs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--edges-per-batch", type=int, default=50_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        rows = [run(name, args.dataset.resolve(), root / name, args) for name in MODELS]
    print(f"\n{args.seconds:.0f} s of training each on {args.dataset} ({args.device}, {args.threads} threads)")
    print(f"{'model':<9} {'params':>8} {'epochs':>7} {'s/epoch':>8} {'best val MAE':>13} {'held-out MAE':>13} "
          f"{'RMSE':>9}  (meV)")
    for row in rows:
        print(f"{row['model']:<9} {row['parameters']:>8d} {row['epochs']:>7d} {row['epoch_s']:>8.3f} "
              f"{row['val_mae']:>13.3f} {row['mae']:>13.3f} {row['rmse']:>9.3f}  ({row['split']})")


if __name__ == "__main__":
    main()

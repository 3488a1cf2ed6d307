"""Benchmark (not a test): DeepH-2 inference time and peak memory versus atoms, on twisted graphene bilayers.

    python benchmarks/bench_inference_scaling.py [--basis szv|dzvp] [--n 10 20 31] [--large] [--threads 2]
                                                 [--max-edges 200000] [--compare-n 10] [--no-ase] [--log FILE]

Each size is a commensurate (n, n + 1) bilayer — n = 10, 20, 31 give 1,324, 5,044 and 11,908 atoms (31: 1.05°),
``--large`` adds n = 57 (39,676 atoms) — predicted by the engine's :func:`aiida_deeph.ml.infer.infer` (neighbour
search, graph, layer-wise DeepH-2 passes (``max_edges_per_chunk = --max-edges``, the engine's default; on the CPU
the engine cuts them to ~10⁴ edges, ``CPU_PASS_FEATURES``), ``hamiltonian.h5`` written) in a fresh
subprocess, so that its peak RSS (``ru_maxrss``, which sees torch's allocations, unlike tracemalloc) is its own.
The model is the default DeepH-2 (``build_model({"model": "deeph2"})``: 32 channels, 3 blocks, L = 2·l_max of the
basis) with seeded, untrained weights exported like training does; the cost does not depend on the weights. Pairs
are those within the C–C cutoff of the basis: 10.36 Å for SZV (the longest pair of the demo's CP2K data) and
11.32 Å for DZVP (analytic overlap ≥ 1e-10, :mod:`aiida_deeph.io.overlap`).

Printed per size: atoms, edges, seconds of each stage (wall and CPU), peak RSS; then the exponents of time and
memory against atoms (log-log fit) and the A-vs-B ratios: ASE's cell list vs our k-d tree for the neighbour search,
CPU passes of ~10⁴ edges vs of the whole ``--max-edges`` budget (first size, run again), and the edges the previous
receptive-field chunking would have to hold in one pass. Absolute times depend on the load of the machine; the
ratios are measured side by side. ``--log FILE`` keeps every size's figures (JSON lines): sizes already there for the
same settings are not run again, so a sweep can be split into runs of a few minutes and still be fitted as a whole.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

BASES = {"szv": ({"C": [0, 1]}, 10.36), "dzvp": ({"C": [0, 0, 1, 1, 2]}, 11.32)}
LARGE_N = 57


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


class Stopwatch:
    """Wall and CPU seconds spent in wrapped functions, by name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.results: dict[str, object] = {}

    def wrap(self, name: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            result = function(*args, **kwargs)
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
            self.results[name] = result
            return result

        return timed


def ase_pairs_seconds(lattice: np.ndarray, positions: np.ndarray, cutoff: float) -> float:
    """Wall seconds of the former neighbour search (ASE's cell list, same call as before)."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    start = time.perf_counter()
    neighbor_list("ijS", Atoms(positions=positions, cell=lattice, pbc=True), cutoff, self_interaction=False)
    return time.perf_counter() - start


def receptive_field_edges(graph, hops: int) -> int:
    """Edges one atom's pass would hold under the former receptive-field chunking (its error message says)."""
    from aiida_deeph.ml.infer import InferenceError, plan_chunks

    try:
        plan_chunks(graph, hops, 1)
    except InferenceError as error:
        return int(str(error).split(" has ")[1].split()[0])
    return 0


def worker(n: int, basis_name: str, threads: int, max_edges: int, ase: bool, whole_budget: bool) -> dict:
    """One size in this process: infer() with its stages timed; returns the figures. ``whole_budget``: CPU passes of
    ``max_edges`` edges, as before the engine cut them."""
    import torch

    import aiida_deeph.ml.infer as engine
    from aiida_deeph.io.deeph_format import format_poscar
    from aiida_deeph.ml import OrbitalBasis, build_model
    from aiida_deeph.ml.checkpoint import export_model
    from aiida_deeph.structures.twisted import twisted_bilayer

    torch.set_num_threads(threads)
    if whole_budget:
        engine.CPU_PASS_FEATURES = 1 << 62
    shells, cutoff = BASES[basis_name]
    atoms = twisted_bilayer("graphene", m=n, n=n + 1)
    lattice, positions = np.array(atoms.cell), atoms.positions
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "POSCAR").write_text(format_poscar(lattice, atoms.get_chemical_symbols(), positions))
        torch.manual_seed(0)
        model = build_model({"model": "deeph2"}, OrbitalBasis(shells))
        export_model(model, root / "model", {"C-C": cutoff}, {})
        del model
        baseline = peak_rss_gb()
        watch = Stopwatch()
        for name in ("neighbour_pairs", "build_graph", "predict"):
            setattr(engine, name, watch.wrap(name, getattr(engine, name)))
        wall, cpu = time.perf_counter(), time.process_time()
        engine.infer(root / "model", root / "POSCAR", root / "out", max_edges_per_chunk=max_edges)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = peak_rss_gb()
        graph = watch.results["build_graph"]
        row = {
            "n": n, "atoms": len(atoms), "edges": graph.num_edges, "twist": atoms.info["twist_angle"],
            "wall": wall, "cpu": cpu, "stage_wall": watch.wall, "stage_cpu": watch.cpu,
            "write_wall": wall - sum(watch.wall.values()), "peak_gb": peak, "baseline_gb": baseline,
            "receptive_edges": receptive_field_edges(graph, 3),
        }
    if ase:
        row["ase_pairs_wall"] = ase_pairs_seconds(lattice, positions, cutoff)
    return row


def run_size(n: int, args: argparse.Namespace, ase: bool, whole_budget: bool = False) -> dict:
    spec = json.dumps({"n": n, "basis_name": args.basis, "threads": args.threads, "max_edges": args.max_edges,
                       "ase": ase, "whole_budget": whole_budget})
    done = subprocess.run([sys.executable, __file__, "--worker", spec], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"n = {n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def settings(args: argparse.Namespace) -> dict:
    return {"basis": args.basis, "threads": args.threads, "max_edges": args.max_edges}


def logged_rows(path: Path | None, args: argparse.Namespace) -> dict[int, dict]:
    """Rows of earlier runs with the same settings, by n."""
    if path is None or not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["n"]: row for row in rows if row["settings"] == settings(args)}


def exponent(atoms: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(atoms), np.log(values), 1)[0])


def print_row(row: dict) -> None:
    wall, cpu = row["stage_wall"], row["stage_cpu"]
    print(f"{row['atoms']:>7,} {row['edges']:>11,} {wall['neighbour_pairs']:>8.1f} {wall['build_graph']:>7.1f} "
          f"{wall['predict']:>9.1f} ({cpu['predict']:>7.1f}) {row['write_wall']:>6.1f} {row['wall']:>8.1f} "
          f"({row['cpu']:>7.1f}) {row['peak_gb']:>7.2f} {1e6 * cpu['predict'] / row['edges']:>9.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--basis", choices=BASES, default="szv")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 31], help="twist indices (n, n + 1)")
    parser.add_argument("--large", action="store_true", help=f"add n = {LARGE_N} (39,676 atoms)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--max-edges", type=int, default=200_000, help="edges per pass (the engine's default)")
    parser.add_argument("--compare-n", type=int, default=10, help="size of the whole-budget B run; 0 skips it")
    parser.add_argument("--no-ase", action="store_true", help="skip timing ASE's neighbour search")
    parser.add_argument("--log", type=Path, help="JSON-lines file of figures, reused and extended")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    sizes = args.n + ([LARGE_N] if args.large else [])
    print(f"DeepH-2 default size, {args.basis.upper()} basis {BASES[args.basis][0]}, C–C pairs < "
          f"{BASES[args.basis][1]} Å, {args.threads} torch thread(s), max_edges_per_chunk = {args.max_edges:,}.\n"
          "Times in s, wall (CPU); on a shared, loaded 2-core box the wall times are inflated, the ratios are not.")
    print(f"{'atoms':>7} {'edges':>11} {'pairs s':>8} {'graph s':>7} {'model s':>9} {'(cpu)':>9} {'write':>6} "
          f"{'total s':>8} {'(cpu)':>9} {'peak GB':>7} {'cpu µs/e':>9}")
    done = logged_rows(args.log, args)
    for n in sizes:
        if n not in done:
            done[n] = {**run_size(n, args, ase=not args.no_ase and n <= 20), "settings": settings(args)}
            if args.log:
                with args.log.open("a") as handle:
                    handle.write(json.dumps(done[n]) + "\n")
        print_row(done[n])
    rows = [done[n] for n in sizes]
    compare = None
    if args.compare_n:
        compare = run_size(args.compare_n, args, ase=False, whole_budget=True)
        print_row(compare)
        print(f"  (last row: {compare['atoms']:,} atoms again, CPU passes of the whole {args.max_edges:,}-edge budget)")

    atoms = [r["atoms"] for r in rows]
    if len(rows) > 1:
        print(f"\nExponents (log-log fit over {atoms[0]:,}–{atoms[-1]:,} atoms): total wall "
              f"{exponent(atoms, [r['wall'] for r in rows]):.2f}, total CPU {exponent(atoms, [r['cpu'] for r in rows]):.2f}, "
              f"model CPU {exponent(atoms, [r['stage_cpu']['predict'] for r in rows]):.2f}, neighbour search "
              f"{exponent(atoms, [r['stage_wall']['neighbour_pairs'] for r in rows]):.2f}, peak RSS above the "
              f"baseline {exponent(atoms, [r['peak_gb'] - r['baseline_gb'] for r in rows]):.2f}")
    print("\nA vs B")
    print(f"{'atoms':>7} {'ASE pairs s':>12} {'k-d tree s':>11} {'ASE/ours':>9} {'1 atom receptive field':>23} "
          f"{'/ budget':>9}")
    for row in rows:
        ase = row.get("ase_pairs_wall")
        ours = row["stage_wall"]["neighbour_pairs"]
        ase_text = f"{ase:>12.1f} {ours:>11.2f} {ase / ours:>9.1f}" if ase else f"{'–':>12} {ours:>11.2f} {'–':>9}"
        print(f"{row['atoms']:>7,} {ase_text} {row['receptive_edges']:>17,} edges "
              f"{row['receptive_edges'] / args.max_edges:>8.1f}×")
    first = next((row for row in rows if compare and row["n"] == compare["n"]), None)
    if first:
        print(f"CPU passes of {args.max_edges:,} edges / of ~10⁴ (the engine's) at {first['atoms']:,} atoms: model CPU "
              f"×{compare['stage_cpu']['predict'] / first['stage_cpu']['predict']:.2f}, wall "
              f"×{compare['stage_wall']['predict'] / first['stage_wall']['predict']:.2f}, peak RSS "
              f"{compare['peak_gb']:.2f} vs {first['peak_gb']:.2f} GB")
    print("(the former receptive-field chunking needs passes that hold one atom's 3-block receptive field; above "
          "1× the budget it stopped with 'max_edges_per_chunk is too small')")


if __name__ == "__main__":
    main()

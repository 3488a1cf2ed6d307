"""Benchmark (not a test): the KPM density of states of twisted bilayer graphene in the 13-orbital DZVP basis.

    python benchmarks/bench_kpm_dos.py [--n 10 13 18] [--full [--full-tolerance 1e-5]] [--moments 64]
                                       [--target-moments 512] [--vectors R] [--threads 2] [--max-gb 18]
                                       [--variants paired plain no-S symmetry] [--workdir DIR]

The matrices are those of ``bench_tbg_bands.py`` (exact DZVP overlap, extended-Hückel H on its pairs, Γ). Each size
runs the engine's :func:`~aiida_deeph.ml.bands.compute_dos` (``method='kpm'``: S's Cholesky factor, 40 Lanczos steps
for the spectral bounds, then the Chebyshev moments of S⁻¹H with ``--vectors`` random vectors in one block, by
default the engine's :func:`~aiida_deeph.ml.dos.probe_count`) in a fresh subprocess, for each ``--variants``: the
moments two per product with S⁻¹H (``paired``, the engine's) or one per product (``plain``, as before), the DOS of
H alone (``no-S``, an orthogonal-basis approximation) as a reference, and ``symmetry``: the paired moments on Γ's
D3 irrep blocks one at a time (``compute_dos(symmetry=True)``). ``--full`` adds 11,908 atoms (1.05°), written
pruned to ``--full-tolerance`` (the whole S's factor does not fit 23 GB there); ``--workdir DIR`` keeps the written
folders (``tbg_N``, as ``bench_tbg_bands.py --workdir`` names them) for the next run. Each row also gives the
spectral half-width of S⁻¹H, the resolution that ``--target-moments`` reach over it, and the moments that 0.1 eV
would take (:func:`~aiida_deeph.ml.dos.moments_for`). The cost is linear in the
number of moments, so ``--moments`` are run and the time of ``--target-moments`` (compute_dos' default, 512) is
extrapolated; then everything to 11,908 atoms (1.05°) by log-log fits over the sizes. Absolute times are from a
shared, loaded 2-core box; the ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aiida_deeph.ml.dos import moments_for
from bench_tbg_bands import FULL_N, tbg

VARIANTS = ("paired", "plain", "no-S", "symmetry")


def job(folder: str, variant: str, moments: int, vectors: int | None, threads: int, max_gb: float) -> dict:
    """compute_dos(method='kpm') in this process with its stages timed."""
    resource.setrlimit(resource.RLIMIT_AS, (int(max_gb * 2**30),) * 2)
    from threadpoolctl import threadpool_limits

    import aiida_deeph.ml.dos as dos
    from aiida_deeph.io.deeph_format import DeepHStructure
    from aiida_deeph.ml.bands import compute_dos

    threadpool_limits(threads)
    structure = DeepHStructure.read(folder)
    stats = {"factor_s": 0.0, "solve_s": 0.0, "solves": 0, "block_solves": 0, "moments_s": 0.0}
    watch(dos, stats)
    if variant == "plain":  # the recursion as before: one product with S⁻¹H per moment
        dos._paired_moments = plain_moments(dos)
    if variant == "no-S":
        without_overlap(dos)
    wall, cpu = time.perf_counter(), time.process_time()
    result = compute_dos(structure, method="kpm", num_moments=moments, num_vectors=vectors,
                         symmetry=variant == "symmetry")
    return {**stats, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "N": structure.norbitals,
            "half_width_eV": result.resolution_eV * moments / np.pi}


def plain_moments(dos):
    """A stand-in for the engine's paired moments that runs the former one-product-per-moment recursion."""

    def moments(operator, center, half_width, start, left, count):
        return dos._moments(lambda x: (operator(x) - center * x) / half_width, start, left, count)

    return moments


def without_overlap(dos) -> None:
    """compute_dos' KPM of H alone (S treated as the identity)."""
    import aiida_deeph.ml.bands as bands

    expansion = dos.kpm_expansion

    def of_h(h, s, **options):
        return expansion(h, None, **options)

    bands.kpm_expansion = of_h


def watch(dos, stats: dict) -> None:
    """Time S's factorization, its solves and the moment loops, by wrapping the engine's functions."""
    factorize = dos.factorize
    for name in ("_moments", "_paired_moments"):
        setattr(dos, name, timed(getattr(dos, name), stats, "moments_s"))

    def timed_factorize(*args, **kwargs):
        start = time.perf_counter()
        factor = factorize(*args, **kwargs)
        stats["factor_s"] += time.perf_counter() - start
        solve = factor.solve

        def timed_solve(rhs):
            start = time.perf_counter()
            result = solve(rhs)
            stats["solve_s"] += time.perf_counter() - start
            stats["solves"] += 1
            stats["block_solves"] += int(np.ndim(rhs) == 2)  # the moments' (the Lanczos bounds solve vectors)
            return result

        factor.solve = timed_solve
        return factor

    dos.factorize = timed_factorize


def timed(function, stats: dict, key: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        stats[key] += time.perf_counter() - start
        return result

    return wrapper


def write(n: int, folder: str, tolerance: float | None) -> dict:
    structure = tbg(n)
    if tolerance:
        structure = structure.pruned(tolerance)
    structure.write(folder)
    return {"atoms": len(structure.species), "nnz_blocks": int(len(structure.overlap.entries))}


def run(kind: str, **spec) -> dict:
    done = subprocess.run([sys.executable, __file__, "--job", json.dumps({"kind": kind, **spec})],
                          capture_output=True, text=True, cwd=Path(__file__).parent)
    if done.returncode:
        return {"failed": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 13, 18])
    parser.add_argument("--full", action="store_true", help=f"add n = {FULL_N} (11,908 atoms)")
    parser.add_argument("--moments", type=int, default=64, help="moments run")
    parser.add_argument("--target-moments", type=int, default=512, help="moments the time is scaled to")
    parser.add_argument("--vectors", type=int, help="random vectors (default: the engine's probe_count)")
    parser.add_argument("--full-tolerance", type=float, default=1e-5)
    parser.add_argument("--workdir", help="keep the written folders here and reuse them")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--full-variants", nargs="+", default=["symmetry"], choices=VARIANTS,
                        help="variants at 11,908 atoms")
    parser.add_argument("--max-gb", type=float, default=18.0)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        spec = json.loads(args.job)
        print(json.dumps({"write": write, "dos": job}[spec.pop("kind")](**spec)))
        return
    print(f"KPM DOS of S⁻¹H at Γ, TBG in DZVP (13 orbitals per C), {args.moments} moments run (time scaled to "
          f"{args.target_moments}), {args.vectors or 'probe_count(N)'} random vectors, {args.threads} thread(s).\nShared, loaded 2-core "
          "box: absolute seconds are inflated; ratios come from the same run.")
    print(f"{'atoms':>7} {'N':>8} {'variant':>7} {'S chol s':>8} {'S⁻¹X':>5} {'solve s':>8} {'moments s':>9} "
          f"{'run s':>7} {'cpu s':>7} {f'{args.target_moments} mom. s':>11} {'peak GB':>7} {'half-width eV':>13} "
          f"{f'res. at {args.target_moments}':>11} {'mom. for 0.1 eV':>15}")
    sizes = args.n + ([FULL_N] if args.full else [])
    rows: dict[tuple[int, str], dict] = {}
    atoms: dict[int, int] = {}
    with tempfile.TemporaryDirectory() if args.workdir is None else contextlib.nullcontext(args.workdir) as tmp:
        for n in sizes:
            folder = f"{tmp}/tbg_{n}"
            if Path(folder).is_dir():
                atoms[n] = json.loads(Path(folder, "info.json").read_text())["atoms_quantity"]
            else:
                atoms[n] = run("write", n=n, folder=folder,
                               tolerance=args.full_tolerance if n == FULL_N else None)["atoms"]
            for variant in args.full_variants if n == FULL_N else args.variants:
                row = run("dos", folder=folder, variant=variant, moments=args.moments, vectors=args.vectors,
                          threads=args.threads, max_gb=args.max_gb)
                rows[n, variant] = row
                print_row(atoms[n], variant, row, args)
    summarize(rows, atoms, sizes, args)


def scaled_time(row: dict, args: argparse.Namespace) -> float:
    """The run's time with the moment loop scaled from --moments to --target-moments."""
    return row["wall_s"] + row["moments_s"] * (args.target_moments / args.moments - 1)


def print_row(atoms: int, variant: str, row: dict, args: argparse.Namespace) -> None:
    if "failed" in row:
        print(f"{atoms:>7,} {'':>8} {variant:>7}  failed: {row['failed'][:100]}", flush=True)
        return
    print(f"{atoms:>7,} {row['N']:>8,} {variant:>7} {row['factor_s']:>8.1f} {row['block_solves']:>5} "
          f"{row['solve_s']:>8.1f} {row['moments_s']:>9.1f} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} "
          f"{scaled_time(row, args):>11.0f} {row['peak_gb']:>7.2f} {row['half_width_eV']:>13.1f} "
          f"{np.pi * row['half_width_eV'] / args.target_moments:>9.2f} eV {moments_for(0.1, row['half_width_eV']):>15,}",
          flush=True)


def summarize(rows: dict, atoms: dict, sizes: list[int], args: argparse.Namespace) -> None:
    ok = {key: row for key, row in rows.items() if "failed" not in row}
    print(f"\nA vs B ({args.target_moments} moments)")
    for n in sizes:
        for a, b, label in (("plain", "paired", "one product per moment / two"),
                            ("paired", "no-S", "S⁻¹H / H alone"), ("paired", "symmetry", "whole / D3 blocks")):
            if (n, a) in ok and (n, b) in ok:
                ratio = scaled_time(ok[n, a], args) / scaled_time(ok[n, b], args)
                loops = ok[n, a]["moments_s"] / ok[n, b]["moments_s"]
                print(f"  {atoms[n]:>6,} atoms: {label:<30} ×{ratio:.2f} in all, ×{loops:.2f} in the moment loop")
    fitted = [n for n in sizes if n != FULL_N]
    target = 4 * (3 * FULL_N**2 + 3 * FULL_N + 1)
    if len(fitted) < 2:
        return
    print(f"\nExtrapolated to {target:,} atoms from {', '.join(str(atoms[n]) for n in fitted)} atoms [exponent]:")
    for variant in args.variants:
        if not all((n, variant) in ok for n in fitted):
            continue
        x = np.log([atoms[n] for n in fitted])
        fits = {name: np.polyfit(x, np.log([value(ok[n, variant]) for n in fitted]), 1)
                for name, value in (("time", lambda r: scaled_time(r, args)), ("memory", lambda r: r["peak_gb"]))}
        time_fit, memory_fit = fits["time"], fits["memory"]
        print(f"  {variant:>7}: {np.exp(np.polyval(time_fit, np.log(target))):.0f} s [{time_fit[0]:.2f}], peak "
              f"{np.exp(np.polyval(memory_fit, np.log(target))):.1f} GB [{memory_fit[0]:.2f}]")


if __name__ == "__main__":
    main()

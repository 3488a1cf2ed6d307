"""Benchmark (not a test): the 50 eigenvalues nearest E_F of twisted bilayer graphene in the 13-orbital DZVP basis.

    python benchmarks/bench_tbg_bands.py [--n 10 13 18] [--full [--full-solvers symmetry] [--full-tolerance 1e-5]
                                                [--full-k Γ k]]
                                         [--check-n 4] [--bands 50] [--threads 2] [--solvers pardiso single symmetry]
                                         [--tolerances 1e-6 1e-5] [--k Γ k] [--model-h] [--max-gb 18] [--log FILE]
                                         [--workdir DIR]

Matrices. S(R) is the exact overlap of CP2K's DZVP-MOLOPT-SR-GTH basis (:func:`aiida_deeph.io.overlap.
analytic_overlap`: every pair with |S| ≥ 1e-10, i.e. within 11.3 Å, ~283 neighbours per atom — the pairs a DeepH
prediction has). H(R) is an extended-Hückel stand-in on the same pairs, H_μν = 1.75 S_μν (ε_μ + ε_ν)/2 and
H_μμ = ε_μ with ε = −21.4 (s, s′), −11.4 (p, p′), +5 eV (d): real, with the sparsity, range and a physical spectrum
(σ and π bands, Dirac point), which is what the solvers' cost depends on. ``--model-h`` also solves the first sweep
size with the H that an untrained default DZVP DeepH-2 predicts there through the engine's infer() (on the overlap's
pairs), to compare. σ = E_F of the Hückel model (4 electrons per C; dense 6×6 k-mesh of the 28-atom (1, 2) cell).

Sizes: (n, n + 1) bilayers, n = 10, 13, 18 → 1,324, 2,188, 4,108 atoms, extrapolated to n = 31, 11,908 atoms
(1.05°, N = 154,804) by log-log fits over the sweep; ``--full`` also measures that size at ``--full-k`` with
``--full-solvers`` (the irrep blocks at Γ only), on a folder written already pruned to ``--full-tolerance`` (every pair does not fit 23 GB). k: Γ (real symmetric) and
a generic k (complex Hermitian).

Each (size, k, solver) runs the engine's :func:`~aiida_deeph.ml.eigensolvers.shift_invert_eigsh` (what
``compute_bands(solver='sparse')`` calls) in a fresh subprocess on a folder written once per size, so its peak RSS
(ru_maxrss) is its own, capped at ``--max-gb`` of address space so that a size that does not fit fails instead of
pushing the shared box into swap or the OOM killer. Solvers: 'pardiso' (MKL PARDISO LDLᴴ in double: the default),
'single' (PARDISO single-precision factor, every solve refined in double), and at Γ of the first sweep size only
'complex' (Γ handed over as a complex matrix: what real arithmetic at Γ saves) and 'ncv' (3·bands + 1 Lanczos
vectors instead of 2·bands + 1) and 'matching' (PARDISO with symmetric scaling and weighted matching, as the engine
called it before: MKL advises it for indefinite matrices), 'separate' (H(k) and H − σS kept beside the factor, as
the engine had them before :meth:`~aiida_deeph.ml.eigensolvers.ShiftInvert.at_k`, which the others use, as
``compute_bands`` does), 'symmetry' (Γ only: the irrep blocks of the cell's D3 — the 3-fold rotation and the
in-plane flip that swaps the layers —, one at a time, :mod:`aiida_deeph.ml.symmetry`, as
``compute_bands(symmetry=True)`` does), 'cyclic' (the same with the rotation alone: a real and a complex block);
``--tolerances`` runs the sweep's solvers again on the
structure pruned to the pairs with max |S| ≥ TOL (``bands --overlap-tolerance``) and reports the eigenvalue error
that costs against every pair; at the small ``--check-n`` size PARDISO (double, single), 'superlu' (scipy's splu)
and 'dense' (LAPACK, every eigenvalue), the reference for the eigenvalues. ``--log FILE`` keeps every result (JSON
lines) and skips what it already holds, so that the sweep can be run a few solvers or k-points at a time. With the
same log, ``--workdir DIR`` keeps the written folders for the next run (11,908 atoms take minutes to write). Absolute
times are from a shared, loaded 2-core box; ratios are taken in one run.
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

SHELLS = [0, 0, 1, 1, 2]
ONSITE = np.repeat([-21.4, -21.4, -11.4, -11.4, 5.0], [1, 1, 3, 3, 5])  # eV per orbital, s s' p p' d
WOLFSBERG_HELMHOLZ = 1.75
BASIS = "DZVP-MOLOPT-SR-GTH"
GENERIC_K = [0.1, 0.23, 0.0]
FULL_N = 31
SOLVERS = {  # name: shift_invert_eigsh keywords (None: dense)
    "pardiso": {"backend": "pardiso"},
    "single": {"backend": "pardiso", "precision": "single"},
    "complex": {"backend": "pardiso"},
    "ncv": {"backend": "pardiso"},
    "matching": {"backend": "pardiso"},
    "separate": {"backend": "pardiso"},
    "symmetry": {"backend": "pardiso"},
    "cyclic": {"backend": "pardiso"},
    "superlu": {"backend": "superlu"},
    "dense": None,
}
BLOCK_SOLVERS = ("symmetry", "cyclic")  # Γ in irrep blocks (D3, C3)


def huckel(overlap):
    """Extended-Hückel H(R) on the blocks of S(R) (all blocks 13 × 13)."""
    from aiida_deeph.io.deeph_format import BlockMatrix

    n = len(ONSITE)
    s = overlap.entries.reshape(-1, n, n)
    h = WOLFSBERG_HELMHOLZ * s * (ONSITE[:, None] + ONSITE[None, :]) / 2
    onsite = np.flatnonzero((overlap.atom_pairs[:, 3] == overlap.atom_pairs[:, 4]) & ~overlap.atom_pairs[:, :3].any(1))
    diagonal = np.arange(n)
    h[onsite[:, None], diagonal, diagonal] = ONSITE  # S_μμ = 1
    return BlockMatrix(overlap.atom_pairs, overlap.chunk_shapes, overlap.chunk_boundaries, h.reshape(-1))


def tbg(n: int, fermi: float = 0.0):
    """The stand-in DeepH structure of the (n, n + 1) bilayer."""
    from aiida_deeph.io.deeph_format import DeepHStructure
    from aiida_deeph.io.overlap import analytic_overlap
    from aiida_deeph.structures.twisted import twisted_bilayer

    atoms = twisted_bilayer("graphene", m=n, n=n + 1)
    lattice, species, positions = np.array(atoms.cell), atoms.get_chemical_symbols(), atoms.positions
    overlap = analytic_overlap(lattice, species, positions, BASIS)
    return DeepHStructure(lattice, species, positions, {"C": SHELLS}, fermi_energy_eV=fermi,
                          hamiltonian=huckel(overlap), overlap=overlap, occupation=4.0 * len(species))


def fermi_energy() -> float:
    """E_F of the Hückel model: 4 electrons per C on a 6×6 k-mesh of the 28-atom (1, 2) cell, dense."""
    from aiida_deeph.ml.bands import monkhorst_pack
    from aiida_deeph.ml.eigensolvers import dense_eigh, fermi_level
    from aiida_deeph.ml.sparse import BlochOperators

    structure = tbg(1)
    operators = BlochOperators(structure)
    eigenvalues = np.array([dense_eigh(*operators.at_k(k)) for k in monkhorst_pack((6, 6, 1))])
    return fermi_level(eigenvalues, structure.occupation)


# --- subprocess jobs ---------------------------------------------------------------------------------------------
def write_job(n: int, folder: str, fermi: float, model_h: bool, threads: int, tolerance: float | None = None) -> dict:
    """Write the size's stand-in folder (and its model-H twin), pruned to ``tolerance`` when given; returns sizes
    and build times."""
    start = time.perf_counter()
    structure = tbg(n, fermi)
    seconds = time.perf_counter() - start
    if tolerance:
        structure = structure.pruned(tolerance)
    structure.write(folder)
    row = {"atoms": len(structure.species), "pairs": len(structure.overlap), "overlap_s": seconds}
    if model_h:
        row["model_h_s"] = predict_model_h(folder, threads)
    return row


def predict_model_h(folder: str, threads: int) -> float:
    """An untrained default DZVP DeepH-2's H on the overlap's pairs, through the engine's infer(); its wall seconds."""
    import torch

    from aiida_deeph.ml import OrbitalBasis, build_model
    from aiida_deeph.ml.checkpoint import export_model
    from aiida_deeph.ml.infer import infer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model_dir = Path(folder + "_model")
    export_model(build_model({"model": "deeph2"}, OrbitalBasis({"C": SHELLS})), model_dir, {"C-C": 11.32}, {})
    start = time.perf_counter()
    infer(model_dir, Path(folder) / "POSCAR", folder + "_model_h", overlap_dir=folder)
    return time.perf_counter() - start


def solve_job(folder: str, kpoint: list[float], solver: str, bands: int, sigma: float, threads: int,
              max_gb: float) -> dict:
    """One shift-invert (or dense) solve in this process, timed; the eigenvalues come back too. ``solver`` is a
    name of SOLVERS, or ``name@TOL``: the structure pruned to the pairs with max |S| ≥ TOL first (what
    ``bands --overlap-tolerance TOL`` does)."""
    resource.setrlimit(resource.RLIMIT_AS, (int(max_gb * 2**30),) * 2)
    from threadpoolctl import threadpool_limits

    import aiida_deeph.ml.eigensolvers as eigensolvers
    from aiida_deeph.io.deeph_format import DeepHStructure
    from aiida_deeph.ml.sparse import BlochOperators

    threadpool_limits(threads)
    solver, _, tolerance = solver.partition("@")
    if solver == "matching":
        with_weighted_matching()
    start = time.perf_counter()
    structure = DeepHStructure.read(folder, overlap_tolerance=float(tolerance) if tolerance else None)
    kpoint = np.array(kpoint)
    if solver in BLOCK_SOLVERS:
        from aiida_deeph.ml.symmetry import GammaFolding

        if np.any(kpoint):
            raise ValueError("the symmetry blocks are for Γ")
        sizes = {"N": structure.norbitals, "nnz": 0, "pairs": len(structure.overlap), "dtype": "blocks"}
        folding = GammaFolding(structure, dihedral=solver == "symmetry")
        del structure  # the folding keeps the pairs of one atom per orbit
        return symmetry_job(folding, sizes, bands, sigma, start)
    operators = BlochOperators(structure)
    h, s = operators.at_k(kpoint)
    row = {"N": h.shape[0], "nnz": h.nnz, "pairs": len(structure.overlap), "dtype": str(h.dtype),
           "assembly_s": time.perf_counter() - start}
    if solver in ("pardiso", "single", "matching"):
        del h, s  # assembled again by ShiftInvert.at_k, as compute_bands does
    elif solver == "complex":
        h, s = h.astype(np.complex128), s.astype(np.complex128)
    row["before_gb"] = peak_rss_gb()
    stats = watch_factorizations(eigensolvers)
    wall, cpu = time.perf_counter(), time.process_time()
    if SOLVERS[solver] is None:
        values = eigensolvers.dense_eigh(h, s)
        values = eigensolvers.nearest(values, sigma, bands)
    else:
        options = dict(SOLVERS[solver])
        with eigensolvers.ShiftInvert(sigma, options.pop("backend"), options.pop("precision", "double")) as solve:
            if solver in ("pardiso", "single", "matching"):
                values = solve.at_k(operators, kpoint, bands)
            else:  # H(k) and H − σS beside the factor, as the engine had them before ShiftInvert.at_k
                values = solve(h, s, bands, ncv=3 * bands + 1 if solver == "ncv" else None)
    row.update(stats, wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, peak_gb=peak_rss_gb(),
               values=values.tolist())
    return row


def symmetry_job(folding, row: dict, bands: int, sigma: float, start: float) -> dict:
    """Γ through the irrep blocks of the cell's rotation (:mod:`aiida_deeph.ml.symmetry`), blocks one at a time."""
    import aiida_deeph.ml.eigensolvers as eigensolvers
    from aiida_deeph.ml.symmetry import gamma_eigenvalues

    row.update(assembly_s=time.perf_counter() - start, before_gb=peak_rss_gb(), order=folding.rotation.order,
               blocks={str(irrep): folding.block_size(irrep) for irrep in folding.irreps})
    stats = watch_factorizations(eigensolvers)
    wall, cpu = time.perf_counter(), time.process_time()
    with eigensolvers.ShiftInvert(sigma, backend="pardiso") as solver:
        values = gamma_eigenvalues(folding, bands, sigma, solver.taking)
    row.update(stats, wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, peak_gb=peak_rss_gb(),
               values=values.tolist())
    return row


def path_job(folder: str, points: int, bands: int, sigma: float, threads: int, max_gb: float) -> dict:
    """``points`` complex k-points on a line: a fresh factorization at each (analysis + numerical) vs one
    :class:`~aiida_deeph.ml.eigensolvers.ShiftInvert` that reuses the first k's analysis, as compute_bands does."""
    resource.setrlimit(resource.RLIMIT_AS, (int(max_gb * 2**30),) * 2)
    from threadpoolctl import threadpool_limits

    from aiida_deeph.io.deeph_format import DeepHStructure
    from aiida_deeph.ml.eigensolvers import ShiftInvert
    from aiida_deeph.ml.sparse import BlochOperators

    threadpool_limits(threads)
    operators = BlochOperators(DeepHStructure.read(folder))
    kpoints = [np.array(GENERIC_K) * (1 + 0.5 * n / points) for n in range(points)]
    row: dict = {"points": points}
    values = {}
    for mode in ("fresh", "reused"):
        start, analysis, numerical = time.perf_counter(), 0.0, 0.0
        with ShiftInvert(sigma) as solver:
            values[mode] = []
            for kpoint in kpoints:
                if mode == "fresh":
                    solver.close()
                values[mode].append(solver(*operators.at_k(kpoint), bands))
                analysis, numerical = (analysis + solver.factorization.analysis_seconds,
                                       numerical + solver.factorization.factor_seconds) if mode == "fresh" else \
                    (solver.factorization.analysis_seconds, solver.factorization.factor_seconds)
        row[mode] = {"wall_s": time.perf_counter() - start, "analysis_s": analysis, "factor_s": numerical,
                     "reused": solver.reused}
    row["max_difference_eV"] = float(np.abs(np.array(values["fresh"]) - np.array(values["reused"])).max())
    return row


def with_weighted_matching() -> None:
    """PARDISO as the engine called it before: symmetric scaling and weighted matching on (iparm 10, 12 = 1)."""
    import aiida_deeph.ml.pardiso as pardiso

    call = pardiso._pardiso

    def patched(library, handle, mtype, iparm, phase, *args, **kwargs):
        if phase == 11:  # the analysis computes the scaling and matching that the factorization uses
            iparm[10] = iparm[12] = 1
        return call(library, handle, mtype, iparm, phase, *args, **kwargs)

    pardiso._pardiso = patched


def watch_factorizations(module) -> dict:
    """Wraps ``module.factorize``: the dict it returns fills with factor seconds, solve count and seconds, fill."""
    stats = {"factor_s": 0.0, "solves": 0, "solve_s": 0.0, "fill": None, "factor_gb": 0.0}
    factorize = module.factorize

    def timed_factorize(*args, **kwargs):
        start = time.perf_counter()
        factor = factorize(*args, **kwargs)
        stats["factor_s"] += time.perf_counter() - start
        stats["fill"] = getattr(factor, "factor_nonzeros", None)
        stats["factor_gb"] = getattr(factor, "memory_bytes", 0) / 1e9
        solve = factor.solve

        def counted(rhs):
            start = time.perf_counter()
            result = solve(rhs)
            stats["solves"] += 1
            stats["solve_s"] += time.perf_counter() - start
            return result

        factor.solve = counted
        return factor

    module.factorize = timed_factorize
    return stats


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_job(job: str, **spec) -> dict:
    done = subprocess.run([sys.executable, __file__, "--job", json.dumps({"job": job, **spec})],
                          capture_output=True, text=True)
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- driver ------------------------------------------------------------------------------------------------------
def print_row(n: int, atoms: int, k: str, solver: str, row: dict) -> None:
    if "failed" in row:
        print(f"{atoms:>7,} {k:>4} {solver:>8}  failed: {row['failed'][:90]}", flush=True)
        return
    fill = f"{row['fill'] / 1e6:>8.0f}M" if row.get("fill") else f"{'–':>9}"
    per_solve = row["solve_s"] / row["solves"] if row["solves"] else float("nan")
    print(f"{atoms:>7,} {k:>4} {solver:>8} {row['N']:>8,} {row['nnz'] / 1e6:>7.1f}M {fill} {row['factor_s']:>8.1f} "
          f"{row['solves']:>6} {per_solve:>7.3f} {row['wall_s']:>8.1f} {row['cpu_s']:>8.1f} {row['factor_gb']:>7.2f} "
          f"{row['peak_gb']:>7.2f}", flush=True)


def fit(atoms: list[int], values: list[float], target: int) -> tuple[float, float]:
    """(exponent, value at ``target`` atoms) of a log-log fit."""
    slope, intercept = np.polyfit(np.log(atoms), np.log(values), 1)
    return float(slope), float(np.exp(intercept + slope * np.log(target)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 13, 18], help="sweep: twist indices (n, n + 1)")
    parser.add_argument("--full", action="store_true",
                        help=f"add n = {FULL_N} (11,908 atoms, 1.05°): Γ, --full-solvers on pairs pruned to "
                             "--full-tolerance (written pruned: every pair does not fit 23 GB)")
    parser.add_argument("--full-solvers", nargs="+", default=["symmetry"], choices=SOLVERS)
    parser.add_argument("--full-tolerance", type=float, default=1e-5)
    parser.add_argument("--full-k", nargs="+", default=["Γ"], choices=["Γ", "k"], help="k-points of --full")
    parser.add_argument("--check-n", type=int, default=4, help="size with SuperLU and dense as references; 0 skips")
    parser.add_argument("--bands", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="MKL/BLAS threads")
    parser.add_argument("--solvers", nargs="+", default=["pardiso", "single"], choices=SOLVERS,
                        help="solvers of the sweep ('complex' and 'ncv' run at Γ of its first size)")
    parser.add_argument("--path", type=int, default=0, metavar="POINTS",
                        help="at the first sweep size, a band path of POINTS complex k-points: analysis reused or not")
    parser.add_argument("--tolerances", nargs="+", type=float, default=[],
                        help="also run the sweep's solvers on the structure pruned to max |S| ≥ each TOL")
    parser.add_argument("--k", nargs="+", default=["Γ", "k"], choices=["Γ", "k"], help="k-points of the sweep")
    parser.add_argument("--model-h", action="store_true", help="also solve the first sweep size with a model's H")
    parser.add_argument("--max-gb", type=float, default=18.0, help="address-space cap of each solve")
    parser.add_argument("--log", type=Path, help="JSON-lines file of results, reused and extended")
    parser.add_argument("--workdir", help="keep the written folders here and reuse them (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        spec = json.loads(args.job)
        job = {"write": write_job, "solve": solve_job, "path": path_job,
               "fermi": lambda: {"fermi": fermi_energy()}}[spec.pop("job")]
        print(json.dumps(job(**spec)))
        return

    logged = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log and args.log.is_file() else []
    fermi = next((r["fermi"] for r in logged if "fermi" in r), None)
    if fermi is None:
        fermi = run_job("fermi")["fermi"]
        log(args.log, {"fermi": fermi})
    print(f"TBG, {BASIS} (13 orbitals per C), extended-Hückel H on the analytic S(R); {args.bands} eigenvalues nearest "
          f"E_F = σ = {fermi:.4f} eV; {args.threads} MKL thread(s).\nShared, loaded 2-core box: absolute seconds are "
          "inflated; ratios come from the same run.")
    print(f"{'atoms':>7} {'k':>4} {'solver':>8} {'N':>8} {'nnz(H)':>8} {'fill':>9} {'factor s':>8} {'solves':>6} "
          f"{'s/solve':>7} {'eigsh s':>8} {'cpu s':>8} {'fact GB':>7} {'peak GB':>7}")
    sweep = args.n + ([FULL_N] if args.full else [])
    plan = []
    if args.check_n:
        plan += [(args.check_n, k, solver) for k in ("Γ", "k") for solver in ("pardiso", "single", "superlu", "dense")]
    for index, n in enumerate(args.n):
        plan += [(n, k, solver) for k in args.k for solver in sweep_solvers(args)
                 if (solver not in ("complex", "ncv", "matching") or (index == 0 and k == "Γ"))
                 and (k == "Γ" or solver.partition("@")[0] not in BLOCK_SOLVERS)]
    if args.full:
        plan += [(FULL_N, k, f"{solver}@{args.full_tolerance:g}") for k in args.full_k for solver in args.full_solvers
                 if k == "Γ" or solver not in BLOCK_SOLVERS]
    results = {(r["n"], r["k"], r["solver"]): r for r in logged if "solver" in r}
    with tempfile.TemporaryDirectory() if args.workdir is None else contextlib.nullcontext(args.workdir) as tmp:
        folders: dict[int, dict] = {r["n"]: r for r in logged if r.get("kind") == "size"}
        def written(n: int) -> str:
            folder = f"{tmp}/tbg_{n}"
            if not Path(folder).is_dir():
                size = run_job("write", n=n, folder=folder, fermi=fermi, model_h=args.model_h and n == sweep[0],
                               threads=args.threads, tolerance=args.full_tolerance if n == FULL_N else None)
                if "failed" in size:
                    raise SystemExit(f"n = {n}: {size['failed']}")
                folders[n] = {**size, "kind": "size", "n": n}
                log(args.log, folders[n])
            return folder

        for n, k, solver in plan:
            if (n, k, solver) not in results:
                folder = written(n)
                kpoint = [0.0, 0.0, 0.0] if k == "Γ" else GENERIC_K
                row = run_job("solve", folder=folder, kpoint=kpoint, solver=solver, bands=args.bands, sigma=fermi,
                              threads=args.threads, max_gb=args.max_gb)
                results[(n, k, solver)] = {**row, "n": n, "k": k, "solver": solver}
                log(args.log, results[(n, k, solver)])
                if args.model_h and n == sweep[0] and (k, solver) == ("Γ", "pardiso"):
                    row = run_job("solve", folder=folder + "_model_h", kpoint=kpoint, solver=solver,
                                  bands=args.bands, sigma=0.0, threads=args.threads, max_gb=args.max_gb)
                    results[(n, k, "model-h")] = {**row, "n": n, "k": k, "solver": "model-h"}
                    log(args.log, results[(n, k, "model-h")])
            print_row(n, folders[n]["atoms"], k, solver, results[(n, k, solver)])
            if (n, k, "model-h") in results and solver == "pardiso":
                print_row(n, folders[n]["atoms"], k, "model-h", results[(n, k, "model-h")])
        if args.path:
            path = next((r for r in logged if r.get("kind") == "path" and r.get("points") == args.path), None)
            if path is None:
                path = {**run_job("path", folder=written(sweep[0]), points=args.path, bands=args.bands, sigma=fermi,
                                  threads=args.threads, max_gb=args.max_gb), "kind": "path"}
                if "failed" in path:
                    raise SystemExit(f"band path: {path['failed']}")
                log(args.log, path)
    summarize(args, sweep, folders, results)
    if args.path:
        fresh, reused = path["fresh"], path["reused"]
        print(f"\nBand path of {args.path} complex k-points at {folders[sweep[0]]['atoms']:,} atoms: a fresh "
              f"factorization per k {fresh['wall_s']:.1f} s (analysis {fresh['analysis_s']:.1f} s, numerical "
              f"{fresh['factor_s']:.1f} s) vs the first k's analysis reused by {reused['reused']} others "
              f"{reused['wall_s']:.1f} s (analysis {reused['analysis_s']:.1f} s, numerical {reused['factor_s']:.1f} s): ×{fresh['wall_s'] / reused['wall_s']:.2f}; eigenvalues equal to "
              f"{path['max_difference_eV']:.1e} eV")


def sweep_solvers(args: argparse.Namespace) -> list[str]:
    """The sweep's solvers, then each of them on every pruned structure (``name@TOL``)."""
    plain = [s for s in args.solvers if s not in ("complex", "ncv", "matching")]
    return [*args.solvers, *(f"{solver}@{tolerance:g}" for tolerance in args.tolerances for solver in plain)]


def log(path: Path | None, row: dict) -> None:
    if path is not None:
        with path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def summarize(args: argparse.Namespace, sweep: list[int], folders: dict, results: dict) -> None:
    ok = {key: row for key, row in results.items() if "failed" not in row}
    if args.check_n and (args.check_n, "Γ", "dense") in ok:
        print(f"\nEigenvalues against dense LAPACK at {folders[args.check_n]['atoms']:,} atoms (max |Δε|, eV):")
        for k in ("Γ", "k"):
            reference = np.array(ok[(args.check_n, k, "dense")]["values"])
            differences = [f"{solver} {np.abs(np.array(ok[key]['values']) - reference).max():.1e}"
                           for solver in ("pardiso", "single", "superlu") if (key := (args.check_n, k, solver)) in ok]
            print(f"  {k}: " + ", ".join(differences))
    first = sweep[0]
    print("\nA vs B (eigsh wall seconds, peak GB; same run)")
    pairs = [(first, "Γ", "complex", "pardiso", "Γ complex Hermitian / Γ real symmetric"),
             (first, "Γ", "matching", "pardiso", "weighted matching / none (the default)"),
             (first, "Γ", "ncv", "pardiso", f"ncv = {3 * args.bands + 1} / default"),
             (first, "Γ", "model-h", "pardiso", "model H / Hückel H")]
    for n in (args.check_n, *sweep):
        for k in ("Γ", "k"):
            for pruned in ("", *(f"@{tolerance:g}" for tolerance in {*args.tolerances, args.full_tolerance})):
                pairs += [(n, k, f"symmetry{pruned}", f"pardiso{pruned}", "D3 blocks / the whole matrix"),
                          (n, k, f"cyclic{pruned}", f"pardiso{pruned}", "C3 blocks / the whole matrix"),
                          (n, k, f"symmetry{pruned}", f"cyclic{pruned}", "D3 blocks / C3 blocks")]
            pairs += [(n, k, "separate", "pardiso", "H(k), H − σS kept beside the factor / not"),
                      (n, k, "single", "pardiso", "single + refinement / double"),
                      (n, k, "superlu", "pardiso", "SuperLU / PARDISO"), (n, k, "dense", "pardiso", "dense / PARDISO")]
    for n, k, a, b, label in pairs:
        if (n, k, a) in ok and (n, k, b) in ok:
            ra, rb = ok[(n, k, a)], ok[(n, k, b)]
            print(f"  {folders[n]['atoms']:>6,} atoms {k}: {label:<40} time ×{ra['wall_s'] / rb['wall_s']:.2f} "
                  f"(factor ×{ra['factor_s'] / max(rb['factor_s'], 1e-9):.2f}, solves {ra['solves']} vs "
                  f"{rb['solves']}), peak {ra['peak_gb']:.2f} vs {rb['peak_gb']:.2f} GB, max |Δε| "
                  f"{np.abs(np.array(ra['values']) - np.array(rb['values'])).max():.1e} eV")
    if args.tolerances:
        print("\nPruned pairs (max |S| < TOL dropped) against every pair, same size and k: eigenvalue error, time, memory")
        for n in (args.check_n, *sweep):
            for k in ("Γ", "k"):
                for solver in sweep_solvers(args):
                    base, _, tolerance = solver.partition("@")
                    if tolerance and (n, k, solver) in ok and (n, k, base) in ok:
                        pruned, exact = ok[(n, k, solver)], ok[(n, k, base)]
                        error = np.abs(np.array(pruned["values"]) - np.array(exact["values"])).max() * 1e3
                        print(f"  {folders[n]['atoms']:>6,} atoms {k} {solver:>16}: pairs {pruned['pairs'] / exact['pairs']:.0%}, "
                              f"max |Δε| {error:.3f} meV, time ×{exact['wall_s'] / pruned['wall_s']:.2f} faster, "
                              f"factor GB {pruned['factor_gb']:.2f} vs {exact['factor_gb']:.2f}, "
                              f"peak {pruned['peak_gb']:.2f} vs {exact['peak_gb']:.2f} GB")
    fitted = [n for n in sweep if n != FULL_N]
    if len(fitted) < 2:
        return
    target = 4 * (3 * FULL_N**2 + 3 * FULL_N + 1)
    print(f"\nExtrapolated to {target:,} atoms (N = {13 * target:,}) from the fits over "
          f"{', '.join(str(folders[n]['atoms']) for n in fitted)} atoms [exponent]:")
    for k in ("Γ", "k"):
        for solver in sweep_solvers(args):
            rows = [ok.get((n, k, solver)) for n in fitted]
            if any(row is None or not row["solves"] for row in rows):  # small blocks are solved densely
                continue
            atoms = [folders[n]["atoms"] for n in fitted]
            factor = fit(atoms, [r["factor_s"] for r in rows], target)
            solve = fit(atoms, [r["solve_s"] / r["solves"] for r in rows], target)
            solves = rows[-1]["solves"]
            memory = fit(atoms, [r["peak_gb"] for r in rows], target)
            fill = fit(atoms, [r["fill"] for r in rows], target) if all(r.get("fill") for r in rows) else (0, 0)
            print(f"  {k} {solver:>8}: factor {factor[1]:>6.0f} s [{factor[0]:.2f}] + {solves} solves × "
                  f"{solve[1]:.2f} s [{solve[0]:.2f}] = {factor[1] + solves * solve[1]:>6.0f} s; fill {fill[1]:.2e} "
                  f"[{fill[0]:.2f}]; peak RSS {memory[1]:.1f} GB [{memory[0]:.2f}]")
        for solver in args.full_solvers if args.full and k in args.full_k else []:
            label = f"{solver}@{args.full_tolerance:g}"
            if (FULL_N, k, label) in ok:
                row = ok[(FULL_N, k, label)]
                before = "read and fold" if solver in BLOCK_SOLVERS else "read and assembly"
                print(f"  {k} {label} measured at {folders[FULL_N]['atoms']:,} atoms: {row['wall_s']:.0f} s "
                      f"({before} {row['assembly_s']:.0f} s before it), peak {row['peak_gb']:.1f} GB")


if __name__ == "__main__":
    main()

"""Benchmark (not a test): PARDISO vs SuperLU for shift-invert, and the KPM cost, on a TBG-like sparse problem.

The problem imitates shared/notes/solvers.md §A at a smaller size: a commensurate twisted graphene bilayer
(m, n) = (n, n + 1), 4 orbitals per atom, pairs within 6.5 Å; H has random blocks decaying as exp(−d / 1.2 Å), and
S = I + decaying random off-diagonal blocks scaled to row sums ≤ 0.5, so S is positive definite. Γ is real
(PARDISO mtype −2), a generic k complex Hermitian (−4).

    python benchmarks/bench_eigensolvers.py [--n 7] [--bands 20] [--moments 200] [--vectors 8] [--threads 1]

n = 7 gives 676 atoms and 2,704 orbitals. ``--threads`` caps the BLAS/MKL threads (threadpoolctl): on a shared
box, threads that wait for a busy core cost far more than they bring.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from aiida_deeph.io.deeph_format import BlockMatrix, DeepHStructure
from aiida_deeph.ml.dos import kpm_expansion, spectral_bounds
from aiida_deeph.ml.eigensolvers import shift_invert_eigsh
from aiida_deeph.ml.graph import find_pairs
from aiida_deeph.ml.pardiso import factorize, mkl_runtime
from aiida_deeph.ml.sparse import BlochOperators
from aiida_deeph.structures.twisted import twisted_bilayer

ORBITALS = 4  # s + p per carbon
CUTOFF, DECAY = 6.5, 1.2  # Å


def synthetic_tbg(n: int, seed: int = 0) -> DeepHStructure:
    atoms = twisted_bilayer("graphene", m=n, n=n + 1)
    lattice, positions = np.array(atoms.cell), atoms.positions
    pairs = find_pairs(lattice, positions, CUTOFF)
    shifts, i, j = pairs[:, :3], pairs[:, 3], pairs[:, 4]
    distance = np.linalg.norm(positions[j] + shifts @ lattice - positions[i], axis=1)
    index = {tuple(row): p for p, row in enumerate(pairs.tolist())}
    partner = np.array([index[(-rx, -ry, -rz, b, a)] for rx, ry, rz, a, b in pairs.tolist()])
    rng = np.random.default_rng(seed)
    decay = np.exp(-distance / DECAY)[:, None, None]

    def hermitian_blocks(scale: float) -> np.ndarray:
        raw = scale * decay * rng.uniform(-1, 1, (len(pairs), ORBITALS, ORBITALS))
        return 0.5 * (raw + raw[partner].transpose(0, 2, 1))  # X_ji(−R) = X_ij(R)ᵀ

    onsite = distance == 0
    h = hermitian_blocks(5.0)
    h[onsite] += np.diag([-8.0, 0.0, 0.0, 0.0])  # an s level below the p levels, as in carbon
    s = hermitian_blocks(1.0)
    s[onsite] = 0.0
    row_sums = np.zeros(len(positions))
    np.add.at(row_sums, i, np.abs(s).sum(axis=(1, 2)) / ORBITALS)
    s *= 0.5 / row_sums.max()  # Gershgorin: off-diagonal row sums ≤ 0.5 keep S positive definite
    s[onsite] += np.eye(ORBITALS)

    def block_matrix(blocks: np.ndarray) -> BlockMatrix:
        shapes = np.full((len(pairs), 2), ORBITALS)
        return BlockMatrix(pairs, shapes, np.arange(len(pairs) + 1) * ORBITALS**2, blocks.reshape(-1))

    return DeepHStructure(lattice, list(atoms.get_chemical_symbols()), positions, {"C": [0, 1]},
                          hamiltonian=block_matrix(h), overlap=block_matrix(s))


def timed(function: Callable, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def solver_row(h: sp.spmatrix, s: sp.spmatrix, sigma: float, backend: str, bands: int) -> dict:
    factor, factor_time = timed(factorize, (h - sigma * s).tocsr(), backend=backend)
    rhs = np.random.default_rng(1).standard_normal(h.shape[0])
    _, solve_time = timed(lambda: [factor.solve(rhs) for _ in range(10)])
    factor.close()
    values, eigsh_time = timed(shift_invert_eigsh, h, s, bands, sigma, backend=backend)
    return {"factor": factor_time, "solve": solve_time / 10, "eigsh": eigsh_time, "values": values}


def run(args: argparse.Namespace) -> None:
    structure, build_time = timed(synthetic_tbg, args.n)
    operators, pattern_time = timed(BlochOperators, structure)
    print(f"TBG-like (m, n) = ({args.n}, {args.n + 1}): {structure.natoms} atoms, {operators.size} orbitals, "
          f"{len(structure.hamiltonian)} atom pairs; synthetic blocks {build_time:.2f} s, CSR pattern "
          f"{pattern_time:.2f} s; {args.threads} BLAS/MKL thread(s)")
    for name, kpoint in (("Γ", np.zeros(3)), ("generic k", np.array([0.1, 0.23, 0.0]))):
        (h, s), assembly_time = timed(operators.at_k, kpoint)
        print(f"\n{name}: {h.dtype}, nnz(H) = {h.nnz:,}, nnz(S) = {s.nnz:,}; H(k), S(k) in {assembly_time:.3f} s")
        rows = {backend: solver_row(h, s, 0.0, backend, args.bands) for backend in ("pardiso", "superlu")}
        print(f"  {'backend':<9}{'factor s':>10}{'1 solve s':>11}{f'eigsh({args.bands}) s':>14}")
        for backend, row in rows.items():
            print(f"  {backend:<9}{row['factor']:>10.3f}{row['solve']:>11.4f}{row['eigsh']:>14.2f}")
        ratio = {key: rows["superlu"][key] / rows["pardiso"][key] for key in ("factor", "solve", "eigsh")}
        difference = np.max(np.abs(rows["pardiso"]["values"] - rows["superlu"]["values"]))
        print(f"  SuperLU / PARDISO: ×{ratio['factor']:.1f} factor, ×{ratio['solve']:.1f} solve, "
              f"×{ratio['eigsh']:.1f} eigsh; eigenvalues agree to {difference:.1e} eV")

    h, s = operators.at_k(np.zeros(3))
    bounds, bounds_time = timed(spectral_bounds, h, s)
    _, kpm_time = timed(kpm_expansion, h, s, num_moments=args.moments, num_vectors=args.vectors, bounds=bounds)
    _, plain_time = timed(kpm_expansion, h, None, num_moments=args.moments, num_vectors=args.vectors)
    print(f"\nKPM at Γ, {args.moments} moments × {args.vectors} random vectors:")
    print(f"  spectral bounds [{bounds[0]:.2f}, {bounds[1]:.2f}] eV (40 Lanczos steps): {bounds_time:.2f} s")
    print(f"  DOS of S⁻¹H: {kpm_time:.2f} s, {kpm_time / args.moments * 1e3:.1f} ms per step (H·V + a solve with S's "
          f"Cholesky factor)")
    print(f"  DOS of H alone (no S): {plain_time:.2f} s (its bounds included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=7, help="twist indices (n, n+1)")
    parser.add_argument("--bands", type=int, default=20, help="eigenpairs nearest σ = 0")
    parser.add_argument("--moments", type=int, default=200)
    parser.add_argument("--vectors", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/MKL threads")
    args = parser.parse_args()
    if mkl_runtime() is None:
        raise SystemExit("MKL is not installed (pip install mkl): nothing to compare SuperLU with")
    with threadpool_limits(limits=args.threads, user_api="blas"):
        run(args)


if __name__ == "__main__":
    main()

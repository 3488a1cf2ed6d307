"""Factor a sparse symmetric/Hermitian matrix once and solve many right-hand sides.

MKL PARDISO is called through ctypes on the ``libmkl_rt`` that the ``mkl`` wheel ships (pypardiso's own API is
real-only; MKL itself is not). Real symmetric matrices use mtype −2 and complex Hermitian ones −4 (2 and 4 when
the caller promises positive definiteness), with METIS ordering and the upper triangle in 0-based CSR. The library
is found through the ``mkl`` distribution's file list, then ``<prefix>/lib``, then the system loader
(``AIIDA_DEEPH_MKL_RT=/path/to/libmkl_rt.so`` overrides). Without MKL the factorization falls back to SuperLU
(``scipy.sparse.linalg.splu``) with a warning: correct, but slower (×2–3 at a few thousand rows, ≥6× and out of
memory beyond ~2·10⁴ rows, shared/notes/solvers.md) and with no Cholesky factor for the KPM.

Use as a context manager, or call :meth:`SparseFactorization.close`, so PARDISO's factors (GBs for large cells)
are freed as soon as the k-point is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import logging
import os
import resource
import sys
import time
import weakref
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

logger = logging.getLogger(__name__)

Backend = Literal["auto", "pardiso", "superlu"]
Precision = Literal["double", "single"]

# A single-precision factor's solve is refined against the double matrix until the relative residual is this small
# (a double factor's own solve reaches ~1e-12 on TBG-like shifted matrices), in at most REFINEMENT_STEPS steps; a
# step that does not lower the residual ends it (the factor is then too inaccurate: its best iterate is returned).
REFINEMENT_TOLERANCE = 1e-12
REFINEMENT_STEPS = 10
_ROWS_PER_CHUNK = 1 << 14  # rows per step of the upper-triangle mask

_PARDISO_ERRORS = {
    -1: "input inconsistent",
    -2: "not enough memory",
    -3: "reordering problem",
    -4: "zero pivot, numerical factorization or iterative refinement problem",
    -5: "unclassified (internal) error",
    -7: "diagonal matrix is singular",
    -8: "32-bit integer overflow problem",
    -9: "not enough memory for out-of-core",
}


class FactorTooLarge(MemoryError):
    """PARDISO's analysis predicts more memory for the numerical factorization than this process can still get:
    raised before that factorization (minutes at 10⁴ atoms) starts, not by the OOM killer in the middle of it."""


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable + SwapFree, and no more than RLIMIT_AS leaves; None where
    /proc/meminfo is missing (not Linux)."""
    try:
        meminfo = _proc_kilobytes("/proc/meminfo")
        available = meminfo["MemAvailable"] + meminfo["SwapFree"]
    except (OSError, KeyError, ValueError):
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        available = min(available, limit - _proc_kilobytes("/proc/self/status")["VmSize"])
    return available


def _proc_kilobytes(path: str) -> dict[str, int]:
    """The ``Key: N kB`` lines of a /proc file, in bytes."""
    return {key: 1024 * int(value.split()[0]) for key, value in
            (line.split(":", 1) for line in Path(path).read_text().splitlines() if ":" in line)
            if value.strip().endswith("kB")}


class SparseFactorization:
    """A factored matrix A: :meth:`solve` returns A⁻¹b for b of shape (n,) or (n, nrhs)."""

    shape: tuple[int, int]
    dtype: np.dtype

    #: whether :meth:`solve_cholesky_adjoint` is available (a Cholesky factorization)
    has_cholesky: bool = False

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def solve_cholesky_adjoint(self, rhs: np.ndarray) -> np.ndarray:
        """L⁻ᴴb for the Cholesky factor A = LLᴴ (row-permuted), so that (L⁻ᴴ)(L⁻ᴴ)ᴴ = A⁻¹."""
        raise NotImplementedError

    def refactor(self, matrix: sp.spmatrix) -> bool:
        """Factor ``matrix`` in place of the current one, reusing the ordering and symbolic analysis when it has the
        same sparsity pattern and dtype (a band path: H(k) − σS(k) changes only its values). Returns whether it
        could; when not, the caller factors anew."""
        return False

    def close(self) -> None:
        """Free the factors; the object cannot solve afterwards."""

    def as_linear_operator(self) -> spla.LinearOperator:
        return spla.LinearOperator(self.shape, matvec=self.solve, matmat=self.solve, dtype=self.dtype)

    def __enter__(self) -> "SparseFactorization":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def factorize(matrix: sp.spmatrix, positive_definite: bool = False, backend: Backend = "auto",
              precision: Precision = "double") -> SparseFactorization:
    """Factor a symmetric (real) or Hermitian (complex) sparse matrix with PARDISO, or SuperLU without MKL.

    ``precision="single"`` (PARDISO only) factors in single precision — half the memory of the factors, and faster —
    and refines every solve against the double matrix to the same residual as a double factor.
    """
    if uses_pardiso(backend):
        return PardisoFactorization(matrix, positive_definite, mkl_runtime(), precision)
    if backend == "pardiso":
        raise RuntimeError("MKL PARDISO requested but libmkl_rt was not found; pip install mkl")
    if backend != "superlu":
        _warn_no_mkl()
    return SuperLUFactorization(matrix)


def uses_pardiso(backend: Backend) -> bool:
    """Whether :func:`factorize` with ``backend`` goes to PARDISO (which reads only the upper triangle)."""
    return backend != "superlu" and mkl_runtime() is not None


@functools.cache
def _warn_no_mkl() -> None:
    logger.warning("libmkl_rt not found (pip install mkl): falling back to SuperLU, which is much slower")


# --- locating MKL ------------------------------------------------------------------------------------------------
def _candidate_paths() -> list[Path]:
    candidates: list[Path] = []
    if os.environ.get("AIIDA_DEEPH_MKL_RT"):
        candidates.append(Path(os.environ["AIIDA_DEEPH_MKL_RT"]))
    try:  # the mkl wheel lists its shared libraries among its files (lib/ on Linux/macOS, Library/bin on Windows)
        distribution = importlib.metadata.distribution("mkl")
        candidates += [Path(distribution.locate_file(f)) for f in distribution.files or () if "mkl_rt" in f.name]
    except importlib.metadata.PackageNotFoundError:
        pass
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for folder in (Path(prefix, "lib"), Path(prefix, "Library", "bin")):
            candidates += sorted(folder.glob("*mkl_rt*"), reverse=True)
    system = ctypes.util.find_library("mkl_rt")
    if system:
        candidates.append(Path(system))
    return candidates


@functools.cache
def mkl_runtime() -> ctypes.CDLL | None:
    """The loaded ``libmkl_rt`` with the PARDISO prototypes set, or None when MKL is not installed."""
    for path in _candidate_paths():
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        if not hasattr(library, "pardiso"):
            continue
        library.MKL_Set_Interface_Layer(0)  # LP64: MKL_INT is int32, as the arrays below assume
        pointer = ctypes.c_void_p
        library.pardisoinit.argtypes = [pointer] * 3
        library.pardisoinit.restype = None
        library.pardiso.argtypes = [pointer] * 16
        library.pardiso.restype = None
        logger.debug("using MKL PARDISO from %s", path)
        return library
    return None


# --- PARDISO -----------------------------------------------------------------------------------------------------
def upper_triangle(matrix: sp.spmatrix) -> sp.csr_matrix:
    """The upper triangle in canonical CSR with every diagonal entry stored, as PARDISO's symmetric modes need.

    A canonical CSR with its whole diagonal stored (what :mod:`.sparse` builds) is cut row by row with a mask, at
    about one byte per nonzero of scratch, and returned as it is when it is upper triangular already (PARDISO then
    reads the caller's arrays, no copy); anything else goes through COO, at ~20 bytes per nonzero."""
    csr = sp.csr_matrix(matrix)
    if csr.has_canonical_format:
        keep = np.empty(csr.nnz, dtype=bool)
        for first in range(0, csr.shape[0], _ROWS_PER_CHUNK):
            last = min(first + _ROWS_PER_CHUNK, csr.shape[0])
            start, stop = csr.indptr[first], csr.indptr[last]
            rows = np.repeat(np.arange(first, last, dtype=csr.indices.dtype), np.diff(csr.indptr[first : last + 1]))
            keep[start:stop] = csr.indices[start:stop] >= rows
        indptr = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[csr.indptr]
        indices = csr.indices[keep]
        has_diagonal = np.diff(indptr) > 0
        has_diagonal[has_diagonal] = indices[indptr[:-1][has_diagonal]] == np.flatnonzero(has_diagonal)
        if has_diagonal.all():
            if keep.all():
                return csr
            return sp.csr_matrix((csr.data[keep], indices, indptr.astype(csr.indptr.dtype)), shape=csr.shape)
    upper = sp.triu(csr, format="coo")
    diagonal = np.arange(csr.shape[0])
    csr = sp.csr_matrix(
        (np.concatenate([upper.data, np.zeros(len(diagonal), upper.dtype)]),
         (np.concatenate([upper.row, diagonal]), np.concatenate([upper.col, diagonal]))),
        shape=csr.shape,
    )
    csr.sum_duplicates()  # also sorts the column indices
    return csr


def _ptr(array: np.ndarray) -> ctypes.c_void_p:
    return array.ctypes.data_as(ctypes.c_void_p)


def _pardiso(library: ctypes.CDLL, handle: np.ndarray, mtype: np.ndarray, iparm: np.ndarray, phase: int, n: int,
             matrix: tuple[np.ndarray, np.ndarray, np.ndarray], rhs: np.ndarray, out: np.ndarray, nrhs: int) -> None:
    """One ``pardiso`` call; ``matrix`` = (data, indptr, indices) of the 0-based upper-triangle CSR."""
    data, indptr, indices = matrix
    scalars = {name: np.array(value, dtype=np.int32) for name, value in
               dict(maxfct=1, mnum=1, phase=phase, n=n, nrhs=nrhs, msglvl=0, error=0).items()}
    perm = np.zeros(1, dtype=np.int32)
    library.pardiso(
        _ptr(handle), _ptr(scalars["maxfct"]), _ptr(scalars["mnum"]), _ptr(mtype), _ptr(scalars["phase"]),
        _ptr(scalars["n"]), _ptr(data), _ptr(indptr), _ptr(indices), _ptr(perm), _ptr(scalars["nrhs"]),
        _ptr(iparm), _ptr(scalars["msglvl"]), _ptr(rhs), _ptr(out), _ptr(scalars["error"]),
    )
    error = int(scalars["error"])
    if error:
        reason = _PARDISO_ERRORS.get(error, "unknown error")
        raise RuntimeError(f"PARDISO phase {phase} failed with error {error}: {reason}")


def _release(library: ctypes.CDLL, handle: np.ndarray, mtype: np.ndarray, iparm: np.ndarray, n: int) -> None:
    dummy = np.zeros(1)
    _pardiso(library, handle, mtype, iparm, -1, n, (dummy, np.zeros(1, np.int32), np.zeros(1, np.int32)),
             dummy, dummy, nrhs=1)


class PardisoFactorization(SparseFactorization):
    def __init__(self, matrix: sp.spmatrix, positive_definite: bool, library: ctypes.CDLL,
                 precision: Precision = "double") -> None:
        self._library = library
        self.shape = matrix.shape
        complex_ = np.iscomplexobj(matrix.data)
        self.dtype = np.dtype(np.complex128 if complex_ else np.float64)
        single = precision == "single"
        # PARDISO reads a, b and x in the factor's precision; solves take and return the matrix's own
        self._factor_dtype = np.dtype((np.complex64 if complex_ else np.float32) if single else self.dtype)
        upper = upper_triangle(sp.csr_matrix(matrix, dtype=self.dtype))
        # the double matrix, for the residuals of the refinement: a symmetric product on the same upper triangle
        # (the caller may hand over only that, ShiftInvert.taking), its arrays shared
        self._refine_with = SymmetricProduct(upper, library) if single else None
        if upper.nnz >= np.iinfo(np.int32).max:
            raise ValueError(f"{upper.nnz} nonzeros exceed PARDISO's 32-bit (LP64) interface")
        # PARDISO reads the matrix again at every solve: keep it alive with the handle (no copies of int32 indices)
        self._matrix = (upper.data.astype(self._factor_dtype, copy=False), np.asarray(upper.indptr, dtype=np.int32),
                        np.asarray(upper.indices, dtype=np.int32))
        del upper
        self.analysis_seconds = self.factor_seconds = 0.0
        self._mtype = np.array((4 if complex_ else 2) * (1 if positive_definite else -1), dtype=np.int32)
        self._handle = np.zeros(64, dtype=np.int64)
        self._iparm = np.zeros(64, dtype=np.int32)
        library.pardisoinit(_ptr(self._handle), _ptr(self._mtype), _ptr(self._iparm))
        self._iparm[0] = 1  # iparm is user-set from here on
        self._iparm[1] = 2  # METIS nested dissection
        self._iparm[7] = 0  # refine only after perturbed pivots; always refining made each solve 3-50× dearer
        self._iparm[17] = -1  # report the factor's nonzeros
        self._iparm[27] = 1 if single else 0
        self._iparm[34] = 1  # 0-based indices
        if not positive_definite:
            self._iparm[9] = 8  # pivot perturbation 1e-8
            # no symmetric scaling / weighted matching (iparm 10, 12), though MKL advises it for indefinite matrices:
            # on H − σS of TBG (17k rows) it made the factor ×1.3 slower, the double solve's residual ×10 larger, and
            # the single factor's solve so poor that its refinement diverged (residual 1e19); no pivot was perturbed
        self.has_cholesky = positive_definite and not single  # a triangular solve alone cannot be refined
        # from here on PARDISO may hold memory; the finalizer frees it on close() or garbage collection
        self._finalizer = weakref.finalize(self, _release, library, self._handle, self._mtype, self._iparm,
                                           self.shape[0])
        try:
            self._timed_call(11)  # ordering and symbolic factorization: reused by refactor()
            self._check_memory()
            self._timed_call(22)  # numerical factorization
        except (RuntimeError, FactorTooLarge):
            self.close()
            raise

    def _timed_call(self, phase: int) -> None:
        start = time.perf_counter()
        dummy = np.zeros(1, self._factor_dtype)
        self._call(phase, dummy, dummy.copy(), nrhs=1)
        if phase == 11:
            self.analysis_seconds += time.perf_counter() - start
        else:
            self.factor_seconds += time.perf_counter() - start

    def _check_memory(self) -> None:
        """Refuse a factorization that the analysis says will not fit (iparm[16]: the factor and the solves' memory,
        beyond what the analysis holds already)."""
        needed, available = 1024 * int(self._iparm[16]), available_memory()
        if available is not None and needed > available:
            raise FactorTooLarge(
                f"PARDISO's {self.precision}-precision factor of {self.shape[0]:,} rows ({self.factor_nonzeros:,} "
                f"entries) needs {needed / 1e9:.1f} GB by its analysis, and {available / 1e9:.1f} GB are available. "
                + ("Halve it with a single-precision factor, p" if self.precision == "double" else "P")
                + "rune the atom pairs (overlap_tolerance), solve Γ in irrep blocks (symmetry), or use a machine "
                "with more memory")

    def refactor(self, matrix: sp.spmatrix) -> bool:
        if not self._finalizer.alive or np.iscomplexobj(matrix.data) != (self.dtype.kind == "c"):
            return False
        upper = upper_triangle(sp.csr_matrix(matrix, dtype=self.dtype))
        _, indptr, indices = self._matrix
        if not (np.array_equal(upper.indptr, indptr) and np.array_equal(upper.indices, indices)):
            return False
        self._matrix = (upper.data.astype(self._factor_dtype, copy=False), indptr, indices)
        if self._refine_with is not None:
            self._refine_with = SymmetricProduct(upper, self._library)
        del upper
        self._timed_call(22)
        return True

    def _call(self, phase: int, rhs: np.ndarray, out: np.ndarray, nrhs: int) -> None:
        _pardiso(self._library, self._handle, self._mtype, self._iparm, phase, self.shape[0], self._matrix, rhs,
                 out, nrhs)

    @property
    def factor_nonzeros(self) -> int:
        """Entries of the triangular factor (PARDISO's own count)."""
        return int(self._iparm[17])

    @property
    def memory_bytes(self) -> int:
        """PARDISO's peak memory for the analysis, factorization and solves (its own estimate)."""
        return 1024 * int(max(self._iparm[14], self._iparm[15] + self._iparm[16]))

    @property
    def precision(self) -> Precision:
        return "double" if self._refine_with is None else "single"

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        solution = self._solve(33, rhs)
        if self._refine_with is not None:
            solution = self._refine(np.asarray(rhs), solution)
        return solution

    def _refine(self, rhs: np.ndarray, solution: np.ndarray) -> np.ndarray:
        """Iterative refinement x ← x + A⁻¹(b − Ax): the residual in double, the correction from the single factor."""
        if np.iscomplexobj(rhs) and self.dtype.kind == "f":
            return self._refine(rhs.real, solution.real) + 1j * self._refine(rhs.imag, solution.imag)
        scale = np.linalg.norm(rhs, axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        best, best_error = solution, np.inf
        for step in range(REFINEMENT_STEPS + 1):
            residual = rhs - self._refine_with.multiply(solution)
            error = float(np.max(np.linalg.norm(residual, axis=0) / scale))
            if error >= best_error:  # the single factor is too inaccurate for this matrix: refining diverges
                break
            best, best_error = solution, error
            if error <= REFINEMENT_TOLERANCE:
                return solution
            if step < REFINEMENT_STEPS:
                solution = solution + self._solve(33, residual)
        logger.warning("single-precision solve refined to a relative residual of %.1e, not %.0e: a double factor "
                       "is more accurate for this matrix", best_error, REFINEMENT_TOLERANCE)
        return best

    def solve_cholesky_adjoint(self, rhs: np.ndarray) -> np.ndarray:
        if not self.has_cholesky:
            raise NotImplementedError("only a positive definite (Cholesky) factorization has a triangular factor")
        return self._solve(333, rhs)  # PARDISO's backward substitution alone: Pᵀ L⁻ᴴ b

    def _solve(self, phase: int, rhs: np.ndarray) -> np.ndarray:
        if not self._finalizer.alive:
            raise RuntimeError("the factorization was closed")
        rhs = np.asarray(rhs)
        if np.iscomplexobj(rhs) and self.dtype.kind == "f":  # a real factor solves real and imaginary parts
            return self._solve(phase, rhs.real) + 1j * self._solve(phase, rhs.imag)
        b = np.asfortranarray(rhs.reshape(self.shape[0], -1), dtype=self._factor_dtype)  # right-hand sides column-wise
        x = np.empty_like(b, order="F")
        self._call(phase, b, x, nrhs=b.shape[1])
        return x.reshape(rhs.shape).astype(self.dtype, copy=False)

    def close(self) -> None:
        self._finalizer()


# --- products with a symmetric / Hermitian matrix ------------------------------------------------------------------
class _Descriptor(ctypes.Structure):
    """MKL's ``struct matrix_descr``: symmetric (21) or Hermitian (22), upper triangle stored (41), non-unit (50)."""

    _fields_ = [("type", ctypes.c_int), ("mode", ctypes.c_int), ("diag", ctypes.c_int)]


class _Complex(ctypes.Structure):
    _fields_ = [("real", ctypes.c_double), ("imag", ctypes.c_double)]


_NON_TRANSPOSE = 10


class SymmetricProduct:
    """y = A x for a real symmetric or complex Hermitian A, from its upper triangle alone, with MKL's
    inspector-executor sparse BLAS: half the bytes of the whole CSR per product (these products are bound by
    memory bandwidth), on MKL's threads (scipy's CSR product runs on one). ARPACK needs ~2–3 products with S per
    shift-invert solve, and one S product costs about as much as one solve.

    Keeps only the upper triangle; :func:`symmetric_product` picks this or scipy's product on the whole matrix.
    """

    def __init__(self, matrix: sp.spmatrix, library: ctypes.CDLL) -> None:
        upper = upper_triangle(matrix)
        complex_ = np.iscomplexobj(upper.data)
        self.shape, self.dtype = upper.shape, np.dtype(np.complex128 if complex_ else np.float64)
        if upper.nnz >= np.iinfo(np.int32).max:
            raise ValueError(f"{upper.nnz} nonzeros exceed MKL's 32-bit (LP64) interface")
        # MKL reads these arrays at every product: they live as long as the handle
        self._arrays = (upper.data.astype(self.dtype, copy=False), np.asarray(upper.indptr, dtype=np.int32),
                        np.asarray(upper.indices, dtype=np.int32))
        del upper
        data, indptr, indices = self._arrays
        self._descriptor = _Descriptor(22 if complex_ else 21, 41, 50)
        self._multiply = library.mkl_sparse_z_mv if complex_ else library.mkl_sparse_d_mv
        self._one, self._zero = (_Complex(1.0, 0.0), _Complex(0.0, 0.0)) if complex_ else (1.0, 0.0)
        self._multiply.argtypes = [ctypes.c_int, _Complex if complex_ else ctypes.c_double, ctypes.c_void_p,
                                   _Descriptor, ctypes.c_void_p, _Complex if complex_ else ctypes.c_double,
                                   ctypes.c_void_p]
        create = library.mkl_sparse_z_create_csr if complex_ else library.mkl_sparse_d_create_csr
        create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int, ctypes.c_int]  \
            + [ctypes.c_void_p] * 4
        self._handle = ctypes.c_void_p()
        _check_sparse(create(ctypes.byref(self._handle), 0, self.shape[0], self.shape[1], _ptr(indptr),
                             _ptr(indptr[1:]), _ptr(indices), _ptr(data)), "create")
        library.mkl_sparse_destroy.argtypes = [ctypes.c_void_p]
        self._finalizer = weakref.finalize(self, library.mkl_sparse_destroy, self._handle)

    def multiply(self, vectors: np.ndarray) -> np.ndarray:
        """A x for x of shape (n,) or (n, m), a column at a time."""
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            return self.matvec(vectors)
        return np.stack([self.matvec(column) for column in vectors.T], axis=1)

    def matvec(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector)
        if np.iscomplexobj(vector) and self.dtype.kind == "f":
            return self.matvec(vector.real) + 1j * self.matvec(vector.imag)
        x = np.ascontiguousarray(vector.reshape(self.shape[1]), dtype=self.dtype)
        y = np.empty(self.shape[0], dtype=self.dtype)
        _check_sparse(self._multiply(_NON_TRANSPOSE, self._one, self._handle, self._descriptor, _ptr(x), self._zero,
                                     _ptr(y)), "mv")
        return y.reshape(np.shape(vector))

    def as_linear_operator(self) -> spla.LinearOperator:
        return spla.LinearOperator(self.shape, matvec=self.matvec, dtype=self.dtype)

    def close(self) -> None:
        self._finalizer()


def _check_sparse(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"MKL sparse BLAS {what} failed with status {status}")


def symmetric_product(matrix: sp.spmatrix, backend: Backend = "auto") -> spla.LinearOperator | sp.spmatrix:
    """The products x ↦ A x with a symmetric / Hermitian A as ARPACK takes them: :class:`SymmetricProduct` with MKL,
    A itself (scipy's product) with SuperLU."""
    return SymmetricProduct(matrix, mkl_runtime()).as_linear_operator() if uses_pardiso(backend) else matrix


# --- SuperLU fallback --------------------------------------------------------------------------------------------
class SuperLUFactorization(SparseFactorization):
    def __init__(self, matrix: sp.spmatrix) -> None:
        self.shape = matrix.shape
        self.dtype = np.dtype(np.complex128 if np.iscomplexobj(matrix.data) else np.float64)
        self._lu: spla.SuperLU | None = spla.splu(sp.csc_matrix(matrix, dtype=self.dtype))

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self._lu is None:
            raise RuntimeError("the factorization was closed")
        rhs = np.asarray(rhs)
        if np.iscomplexobj(rhs) and self.dtype.kind == "f":
            return self.solve(rhs.real) + 1j * self.solve(rhs.imag)
        return self._lu.solve(np.asarray(rhs, dtype=self.dtype))

    def close(self) -> None:
        self._lu = None

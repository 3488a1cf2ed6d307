"""The generalized eigenproblem H(k)c = εS(k)c, and the Fermi level from an electron count.

* :func:`dense_eigh` — all eigenpairs with LAPACK, for small cells; optionally in the subspace of S(k) eigenvectors
  above ``ill_threshold`` (near-linear-dependent basis functions give spurious eigenvalues otherwise).
* :class:`ShiftInvert` / :func:`shift_invert_eigsh` — the eigenpairs nearest a target energy σ for large sparse
  cells: ARPACK on (H − σS)⁻¹S with one sparse LDLᴴ factorization of H − σS per k-point (PARDISO, :mod:`.pardiso`)
  that serves every Lanczos iteration, its ordering reused along a band path. This is the DeepH-pack
  ``sparse_calc`` method.
* :func:`fermi_level` — the chemical potential that holds a given number of electrons, step or Fermi–Dirac.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh
from scipy.special import expit

from .pardiso import (Backend, Precision, SparseFactorization, factorize, symmetric_product, upper_triangle,
                      uses_pardiso)
from .sparse import CHUNK, BlochOperators

BOLTZMANN_EV = 8.617333262e-5  # eV/K

Matrix = np.ndarray | sp.spmatrix


def _dense(matrix: Matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def dense_eigh(
    h: Matrix, s: Matrix, ill_threshold: float | None = None, vectors: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending, eV) and optionally S-orthonormal eigenvectors (columns) of H c = ε S c.

    With ``ill_threshold`` the problem is solved in the span of the S eigenvectors whose eigenvalue exceeds it, so
    fewer than N eigenpairs may come back.
    """
    h, s = _dense(h), _dense(s)
    if ill_threshold is None:
        return sla.eigh(h, s, eigvals_only=not vectors)
    s_values, s_vectors = sla.eigh(s)
    keep = s_values > ill_threshold
    basis = s_vectors[:, keep] / np.sqrt(s_values[keep])  # S-orthonormal, so the reduced problem is standard
    values, coefficients = sla.eigh(basis.conj().T @ h @ basis)
    return (values, basis @ coefficients) if vectors else values


def shift_invert_eigsh(
    h: sp.spmatrix,
    s: sp.spmatrix,
    num: int,
    sigma: float,
    *,
    vectors: bool = False,
    tol: float = 0.0,
    maxiter: int | None = None,
    backend: Backend = "auto",
    precision: Precision = "double",
    ncv: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The ``num`` eigenvalues (ascending, eV) of H c = ε S c nearest ``sigma``, and optionally their eigenvectors:
    one k-point of :class:`ShiftInvert`, whose arguments these are."""
    with ShiftInvert(sigma, backend=backend, precision=precision) as solver:
        return solver(h, s, num, vectors=vectors, tol=tol, maxiter=maxiter, ncv=ncv)


class ShiftInvert:
    """The eigenpairs of H(k) c = ε S(k) c nearest σ, k-point after k-point.

    H − σS is factored once per k (PARDISO, :mod:`.pardiso`); ARPACK then only needs solves with that factor and
    products with S (H itself is not touched again), ~2–3 per solve and each about as dear as one: with MKL they
    run threaded on S's upper triangle (:class:`~.pardiso.SymmetricProduct`). Complex Hermitian H (generic k,
    spin–orbit) goes through ARPACK's complex driver, real symmetric H (Γ) through the symmetric one. Along a band path the ordering and
    symbolic analysis of the first k are reused while the pattern and the dtype stay the same: only the numerical
    factorization is repeated (:meth:`~.pardiso.SparseFactorization.refactor`). ``precision="single"`` halves the
    factor's memory (PARDISO), each solve refined towards a double's accuracy. A context manager: the factor is
    freed on exit.
    """

    def __init__(self, sigma: float, backend: Backend = "auto", precision: Precision = "double") -> None:
        self.sigma, self.backend, self.precision = sigma, backend, precision
        self.factorization: SparseFactorization | None = None
        self.reused = 0  # k-points whose factorization reused the analysis of an earlier one

    def __call__(self, h: sp.spmatrix, s: sp.spmatrix, num: int, *, vectors: bool = False, tol: float = 0.0,
                 maxiter: int | None = None, ncv: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The eigenpairs of the given H and S. ``tol=0`` asks ARPACK for machine precision; ``ncv``: its Lanczos
        vectors (default 2·num + 1)."""
        self._check(h.shape[0], num)
        self._factor(shifted_matrix(h, s, self.sigma))
        return self._eigsh(symmetric_product(s, self.backend), num, vectors=vectors, tol=tol, maxiter=maxiter,
                           ncv=ncv)

    def at_k(self, operators: BlochOperators, kpoint: np.ndarray, num: int,
             **options: object) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The same at one k-point of ``operators``, in less memory: H(k) − σS(k) is written over the freshly
        assembled H(k) (no second matrix beside it), and dropped once factored when PARDISO holds its own copy
        (double precision), so it does not sit beside the factor through the Lanczos steps (at 10⁴ atoms it is
        GBs)."""
        self._check(operators.size, num)
        return self.taking(list(operators.at_k(kpoint)), num, **options)

    def taking(self, matrices: list[sp.csr_matrix], num: int,
               **options: object) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """:meth:`__call__` on ``matrices = [H, S]``, taking both out of the list (a call's own arguments would
        keep them alive to the end): H − σS is written over H, cut to the upper triangle that PARDISO reads (it then
        factors from those very arrays) and dropped once factored; the whole S is dropped for the upper triangle
        of its products before the factorization, the peak of memory, begins."""
        h, s = matrices.pop(0), matrices.pop(0)
        self._check(h.shape[0], num)
        h = shifted_matrix(h, s, self.sigma, overwrite_h=True)
        if uses_pardiso(self.backend):
            h = upper_triangle(h)  # the whole H − σS goes here, ~2 GB at 10⁴ atoms
        product = symmetric_product(s, self.backend)
        del s
        self._factor(h)
        del h
        return self._eigsh(product, num, **options)

    @staticmethod
    def _check(size: int, num: int) -> None:
        if not 0 < num < size - 1:
            raise ValueError(f"shift-invert needs 0 < num < N - 1 = {size - 1}, got num={num}")

    def _factor(self, shifted: sp.spmatrix) -> None:
        if self.factorization is not None and self.factorization.refactor(shifted):
            self.reused += 1
        else:
            self.close()
            self.factorization = factorize(shifted, backend=self.backend, precision=self.precision)

    def _eigsh(self, s: sp.spmatrix | LinearOperator, num: int, vectors: bool = False, tol: float = 0.0,
               maxiter: int | None = None, ncv: int | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        inverse = self.factorization.as_linear_operator()
        start = np.random.default_rng(0).standard_normal(s.shape[0]).astype(inverse.dtype)  # reproducible start
        # in shift-invert mode ARPACK never multiplies by A: the operator stands in for its shape and dtype
        result = eigsh(inverse, k=num, M=s, sigma=self.sigma, which="LM", OPinv=inverse, v0=start, tol=tol,
                       maxiter=maxiter, ncv=ncv, return_eigenvectors=vectors)
        if not vectors:
            return np.sort(result)
        values, eigenvectors = result
        order = np.argsort(values)
        return values[order], eigenvectors[:, order]

    def close(self) -> None:
        if self.factorization is not None:
            self.factorization.close()
            self.factorization = None

    def __enter__(self) -> "ShiftInvert":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shifted_matrix(h: sp.spmatrix, s: sp.spmatrix, sigma: float, overwrite_h: bool = False) -> sp.csr_matrix:
    """H − σS as CSR. When H and S share one CSR layout (:class:`~.sparse.BlochOperators` with the same pairs) that
    is one new data array on their index arrays (scipy's sum would rebuild the layout, at ~3× the memory), or with
    ``overwrite_h`` H itself, its values replaced a chunk at a time."""
    if sp.issparse(h) and sp.issparse(s) and h.format == s.format == "csr" and h.shape == s.shape \
            and _same_layout(h, s):
        if not overwrite_h:
            return sp.csr_matrix((h.data - sigma * s.data, h.indices, h.indptr), shape=h.shape)
        for first in range(0, h.nnz, CHUNK):
            h.data[first : first + CHUNK] -= sigma * s.data[first : first + CHUNK]
        return h
    return sp.csr_matrix(h - sigma * s)


def _same_layout(first: sp.csr_matrix, second: sp.csr_matrix) -> bool:
    return all(_same_memory(a, b) or np.array_equal(a, b)
               for a, b in ((first.indptr, second.indptr), (first.indices, second.indices)))


def _same_memory(first: np.ndarray, second: np.ndarray) -> bool:
    """Views of the same array (scipy wraps the pattern's arrays in new views): equal without reading them."""
    return (first.__array_interface__["data"][0] == second.__array_interface__["data"][0]
            and first.shape == second.shape and first.strides == second.strides and first.dtype == second.dtype)


def nearest(values: np.ndarray, sigma: float, num: int) -> np.ndarray:
    """The ``num`` values nearest ``sigma``, ascending."""
    return np.sort(values[np.argsort(np.abs(values - sigma), kind="stable")[:num]])


def occupations(eigenvalues: np.ndarray, fermi: float, temperature: float = 0.0) -> np.ndarray:
    """Occupation (0…1) of each state: Fermi–Dirac at ``temperature`` (K), a step at T = 0."""
    eigenvalues = np.asarray(eigenvalues, dtype=float)
    if temperature <= 0:
        return (eigenvalues <= fermi).astype(float)
    return expit((fermi - eigenvalues) / (BOLTZMANN_EV * temperature))  # expit does not overflow


def fermi_level(
    eigenvalues: np.ndarray,
    n_electrons: float,
    weights: np.ndarray | None = None,
    temperature: float = 0.0,
    spin_degeneracy: int = 2,
) -> float:
    """The Fermi level (eV) at which the states hold ``n_electrons`` per cell.

    ``eigenvalues`` is (nk, nbands) on a k-point sample with ``weights`` (normalised here; uniform if None), each
    state holding ``spin_degeneracy`` electrons (2 spinless, 1 spinful). All μ whose electron count matches to
    1e-9 form an interval — a point in a metal, the gap (less a few kT) in an insulator — and its middle is returned,
    so an insulator gets its mid-gap as DFT codes report it.
    """
    eigenvalues = np.atleast_2d(np.asarray(eigenvalues, dtype=float))
    weights = np.ones(len(eigenvalues)) if weights is None else np.asarray(weights, dtype=float)
    weights = spin_degeneracy * weights / weights.sum()
    capacity = eigenvalues.shape[1] * spin_degeneracy
    if not 0 < n_electrons <= capacity:
        raise ValueError(f"{n_electrons} electrons do not fit in {capacity} states per cell")

    def count(mu: float) -> float:
        return float(weights @ occupations(eigenvalues, mu, temperature).sum(axis=1))

    margin = 1.0 + 50 * BOLTZMANN_EV * temperature
    tolerance = 1e-9 * n_electrons
    lowest, highest = eigenvalues.min() - margin, eigenvalues.max() + margin
    bottom = _bisect(lambda mu: count(mu) >= n_electrons - tolerance, lowest, highest)
    if n_electrons + tolerance >= capacity:  # every state filled: no upper edge to find
        return bottom
    top = _bisect(lambda mu: count(mu) > n_electrons + tolerance, lowest, highest)
    return 0.5 * (bottom + top)


def _bisect(predicate: Callable[[float], bool], low: float, high: float, resolution: float = 1e-12) -> float:
    """The point where a monotone ``predicate`` turns from False (at ``low``) to True (at ``high``)."""
    while high - low > resolution * max(1.0, abs(low), abs(high)):
        middle = 0.5 * (low + high)
        low, high = (low, middle) if predicate(middle) else (middle, high)
    return 0.5 * (low + high)

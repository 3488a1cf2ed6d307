"""Densities of states: Gaussian broadening of eigenvalues (small cells) and the kernel polynomial method (large).

Both count states of the matrix — one per orbital, or per spin-orbital when spinful — per eV and per cell; the
electron count is ``spin_degeneracy`` × that. The KPM works on the generalized problem as the DOS of S⁻¹H: a
Chebyshev recursion in which every step is a product with H and one solve with the Cholesky factor of S (PARDISO,
mtype 2/4), the trace estimated with random ±1 vectors, the series damped by the Jackson kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator
from scipy.special import erf

from .pardiso import Backend, factorize, symmetric_product, upper_triangle, uses_pardiso

logger = logging.getLogger(__name__)
LANCZOS_STEPS = 40  # on the MoS2 tests the extreme Ritz values then sit within 1e-8 eV of the spectrum edges
PROBED_STATES = 1 << 18  # random vectors × states: the trace estimate's relative error is ≈ 1/√(R·N), 0.2 %
MAX_MOMENTS = 4096  # a resolution asking for more is coarsened to this many, with a warning
# vectors up to which MKL's threaded product from the upper triangle, a pass per vector, beats scipy's one pass over
# the whole matrix on one thread: at 17k rows 0.07 s against 0.22 s for 2 vectors, 0.72 s against 0.37 s for 16
MKL_COLUMNS = 3


def gaussian_dos(
    eigenvalues: np.ndarray, energies: np.ndarray, width: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(DOS, integrated DOS) on ``energies`` from (nk, nbands) eigenvalues, each a Gaussian of std ``width`` eV."""
    eigenvalues = np.atleast_2d(np.asarray(eigenvalues, dtype=float))
    weights = np.ones(len(eigenvalues)) if weights is None else np.asarray(weights, dtype=float)
    weights = weights / weights.sum()
    energies = np.asarray(energies, dtype=float)
    dos, integrated = np.zeros_like(energies), np.zeros_like(energies)
    for weight, values in zip(weights, eigenvalues):  # one k-point at a time keeps the (ne, nb) temporary small
        x = (energies[:, None] - values[None, :]) / width
        dos += weight * np.exp(-0.5 * x**2).sum(axis=1) / (width * np.sqrt(2 * np.pi))
        integrated += weight * 0.5 * (1 + erf(x / np.sqrt(2))).sum(axis=1)
    return dos, integrated


class _GeneralizedOperator:
    """x ↦ S⁻¹Hx (Hx without S) with S factored once; a context manager that frees the factor.

    Products with H and S: with MKL, for up to :data:`MKL_COLUMNS` vectors, threaded from the upper triangle
    (:class:`~.pardiso.SymmetricProduct`, a pass per vector); for more, scipy's single pass over the whole matrix.
    S's upper triangle is shared by its product and its Cholesky factor."""

    def __init__(self, h: sp.spmatrix, s: sp.spmatrix | None, backend: Backend) -> None:
        self.size = h.shape[0]
        self.h, self.s = h, s
        self._h_upper = symmetric_product(h, backend)
        upper = upper_triangle(s) if s is not None and uses_pardiso(backend) else s
        self._s_upper = None if s is None else symmetric_product(upper, backend)
        self.factor = None if s is None else factorize(upper, positive_definite=True, backend=backend)
        if self.factor is not None and not self.factor.has_cholesky:
            logger.warning("no Cholesky factor of S (MKL missing): the KPM trace estimate will be noisier")

    def times_h(self, x: np.ndarray) -> np.ndarray:
        return _product(self.h, self._h_upper, x)

    def times_s(self, x: np.ndarray) -> np.ndarray:
        return x if self.s is None else _product(self.s, self._s_upper, x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.solve_s(self.times_h(x))

    def solve_s(self, y: np.ndarray) -> np.ndarray:
        return y if self.factor is None else self.factor.solve(y)

    def probes(self, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and left vectors (u, w) with E[Σ w†T(S⁻¹H)u] = Tr T(S⁻¹H) for random ±1 ``signs``.

        With S = LLᴴ, u = L⁻ᴴr and w = Su turn the estimate into Hutchinson's for the Hermitian L⁻¹HL⁻ᴴ, whose
        variance stays small however ill-conditioned S is; plain u = w = r is unbiased but far noisier.
        """
        if self.factor is None or not self.factor.has_cholesky:
            return signs, signs
        start = self.factor.solve_cholesky_adjoint(signs)
        return start, self.times_s(start)

    def __enter__(self) -> "_GeneralizedOperator":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.factor is not None:
            self.factor.close()


def spectral_bounds(h: sp.spmatrix, s: sp.spmatrix | None = None, steps: int = LANCZOS_STEPS, seed: int = 0,
                    backend: Backend = "auto") -> tuple[float, float]:
    """Bounds (eV) on the spectrum of H c = ε S c from a few Lanczos steps in the S inner product.

    The extreme Ritz values lie inside the spectrum; each is widened by its residual norm, within which an
    eigenvalue is guaranteed, so the KPM scaling (which diverges outside [−1, 1]) stays safe.
    """
    with _GeneralizedOperator(h, s, backend) as operator:
        return _lanczos_bounds(operator, steps, seed)


def _lanczos_bounds(operator: _GeneralizedOperator, steps: int, seed: int) -> tuple[float, float]:
    def norm(x: np.ndarray) -> float:
        return float(np.sqrt(np.vdot(x, operator.times_s(x)).real))

    vector = np.random.default_rng(seed).standard_normal(operator.size)
    vector /= norm(vector)
    previous, beta = np.zeros_like(vector), 0.0
    alphas, betas = [], []
    for _ in range(min(steps, operator.size)):
        h_vector = operator.times_h(vector)
        alpha = float(np.vdot(vector, h_vector).real)  # ⟨v, S⁻¹Hv⟩_S = v†Hv
        residual = operator.solve_s(h_vector) - alpha * vector - beta * previous
        beta = norm(residual)
        alphas.append(alpha)
        betas.append(beta)
        if beta < 1e-10 * max(1.0, abs(alpha)):  # invariant subspace: the Ritz values are exact
            break
        previous, vector = vector, residual / beta
    ritz, coefficients = eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]))
    residuals = np.abs(betas[-1] * coefficients[-1])  # ‖Ay − θy‖_S of each Ritz pair (θ, y)
    return float(ritz[0] - residuals[0]), float(ritz[-1] + residuals[-1])


def _product(whole: sp.spmatrix, upper: sp.spmatrix | LinearOperator, x: np.ndarray) -> np.ndarray:
    return upper @ x if x.ndim == 1 or x.shape[1] <= MKL_COLUMNS else whole @ x


def jackson_kernel(num_moments: int) -> np.ndarray:
    """Jackson damping g_n, n = 0…N−1: removes Gibbs ringing, a near-Gaussian resolution of ≈ π/N (scaled units)."""
    n = np.arange(num_moments)
    q = np.pi / (num_moments + 1)
    return ((num_moments - n + 1) * np.cos(q * n) + np.sin(q * n) / np.tan(q)) / (num_moments + 1)


def probe_count(size: int, limit: int = 64) -> int:
    """Random vectors for the trace over ``size`` states, R·N ≈ :data:`PROBED_STATES`: 16 at 17k rows, 2 at 155k.

    The estimate's noise falls as 1/√(R·N) (Weiße et al., RMP 78, 275), so a large cell needs few vectors. Split
    into irrep blocks (dimensions d_p, N_p rows), the sum Σ d_p·Tr_p has a noise √(Σ d_p² N_p / (R·N²)) relative to N:
    with the whole cell's R, 1.3× the whole's for D3 (N/6, N/6 and N/3 rows counted twice)."""
    return int(min(limit, max(1, -(-PROBED_STATES // size))))


def moments_for(resolution: float, half_width: float) -> int:
    """Moments whose Jackson broadening is ``resolution`` eV (std, at the centre of the spectrum): π·half_width/N.

    The count grows with the width of the whole spectrum, not of the window of interest: S⁻¹H of a non-orthogonal
    basis reaches tens to thousands of eV above E_F (ABACUS's MoS2 spans −64…93 eV: 0.1 eV takes ~2,500)."""
    if resolution <= 0:
        raise ValueError(f"the KPM resolution must be > 0 eV, got {resolution}")
    return max(16, int(np.ceil(np.pi * half_width / resolution)))


@dataclass(frozen=True, eq=False)
class KPMExpansion:
    """Chebyshev moments μ_n = Tr T_n((A − center)/half_width) of A = S⁻¹H, estimated stochastically."""

    moments: np.ndarray
    center: float
    half_width: float

    @property
    def resolution(self) -> float:
        """eV: the std of the Jackson broadening at the centre of the spectrum (finer towards its edges)."""
        return float(np.pi * self.half_width / len(self.moments))

    def _angle(self, energies: np.ndarray) -> np.ndarray:
        return np.arccos(np.clip((np.asarray(energies, dtype=float) - self.center) / self.half_width, -1.0, 1.0))

    def dos(self, energies: np.ndarray) -> np.ndarray:
        """States per eV on ``energies``; zero outside the scaled interval."""
        damped = self.moments * jackson_kernel(len(self.moments))
        theta = self._angle(energies)
        series = damped[0] + 2 * _cosine_series(theta, damped[1:], np.cos)
        # the spectrum ends `padding` before ±1, yet the series' 1/√(1 − x²) = 1/sin θ turns round-off at the very
        # edge into spikes: the last 1e-6 of the interval counts as outside
        inside = np.sin(theta) > np.sqrt(2e-6)
        return np.where(inside, series / (np.pi * self.half_width * np.where(inside, np.sin(theta), 1.0)), 0.0)

    def integrated(self, energies: np.ndarray) -> np.ndarray:
        """Number of states below each energy, in closed form: ∫T_n/(π√(1−x²)) = −sin(nθ)/(nπ), x = cos θ."""
        damped = self.moments * jackson_kernel(len(self.moments))
        theta = self._angle(energies)
        n = np.arange(1, len(damped))
        return (damped[0] * (np.pi - theta) - 2 * _cosine_series(theta, damped[1:] / n, np.sin)) / np.pi


def _cosine_series(theta: np.ndarray, coefficients: np.ndarray, wave: Callable[[np.ndarray], np.ndarray],
                   chunk: int = 1 << 21) -> np.ndarray:
    """Σ_n c_n wave(nθ), n = 1…, a slice of θ at a time: the (energies × moments) table stays ~16 MB."""
    theta = np.ravel(theta)
    n = np.arange(1, len(coefficients) + 1)
    step = max(1, chunk // max(1, len(n)))
    return np.concatenate([wave(np.outer(theta[first : first + step], n)) @ coefficients
                           for first in range(0, len(theta), step)] or [np.zeros(0)])


@dataclass(frozen=True, eq=False)
class KPMSum:
    """Σ weight × expansion: the DOS of a matrix that falls apart into blocks (Γ's irrep blocks, each counted as
    often as its irrep's dimension), or of one matrix (one part of weight 1)."""

    parts: tuple[tuple[int, KPMExpansion], ...]

    def dos(self, energies: np.ndarray) -> np.ndarray:
        return sum(weight * expansion.dos(energies) for weight, expansion in self.parts)

    def integrated(self, energies: np.ndarray) -> np.ndarray:
        return sum(weight * expansion.integrated(energies) for weight, expansion in self.parts)

    @property
    def bounds(self) -> tuple[float, float]:
        return (min(e.center - e.half_width for _, e in self.parts),
                max(e.center + e.half_width for _, e in self.parts))

    @property
    def resolution(self) -> float:
        return max(expansion.resolution for _, expansion in self.parts)

    @property
    def num_moments(self) -> int:
        return max(len(expansion.moments) for _, expansion in self.parts)


def kpm_expansion(
    h: sp.spmatrix,
    s: sp.spmatrix | None = None,
    resolution: float = 0.1,
    num_moments: int | None = None,
    num_vectors: int | None = None,
    bounds: tuple[float, float] | None = None,
    padding: float = 0.01,
    seed: int = 0,
    backend: Backend = "auto",
    max_moments: int = MAX_MOMENTS,
) -> KPMExpansion:
    """KPM moments of S⁻¹H, the random vectors advanced together (one block per step).

    The moments follow ``resolution`` (eV, the std of the broadening, :func:`moments_for`) unless ``num_moments``
    is given; more than ``max_moments`` are cut to it with a warning (:attr:`KPMExpansion.resolution` tells what
    was reached). ``num_vectors`` defaults to :func:`probe_count`. ``bounds`` default to :func:`spectral_bounds`;
    the scaled spectrum is kept inside ±(1 − ``padding``). With S's Cholesky factor (or no S) the moments come two
    per product with S⁻¹H (:func:`_paired_moments`), else one.
    """
    with _GeneralizedOperator(h, s, backend) as operator:
        low, high = bounds if bounds is not None else _lanczos_bounds(operator, LANCZOS_STEPS, seed)
        center, half_width = 0.5 * (high + low), 0.5 * (high - low) / (1 - padding)
        if num_moments is None:
            num_moments = moments_for(resolution, half_width)
            if num_moments > max_moments:
                logger.warning("a KPM resolution of %g eV over the spectrum %.1f…%.1f eV takes %d moments; cut to %d, "
                               "a resolution of %.2g eV", resolution, low, high, num_moments, max_moments,
                               np.pi * half_width / max_moments)
                num_moments = max_moments
        num_vectors = probe_count(h.shape[0]) if num_vectors is None else num_vectors
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(h.shape[0], num_vectors))
        start, left = operator.probes(signs)
        if s is None or operator.factor.has_cholesky:
            moments = _paired_moments(operator, center, half_width, start, left, num_moments)
        else:
            moments = _moments(lambda x: (operator(x) - center * x) / half_width, start, left, num_moments)
    moments[0] = operator.size  # Tr T₀ = N exactly; the estimate would only add noise
    return KPMExpansion(moments, center, half_width)


def _moments(scaled: Callable[[np.ndarray], np.ndarray], start: np.ndarray, left: np.ndarray,
             num_moments: int) -> np.ndarray:
    """μ_n = Re w†T_n(A)u / R by the Chebyshev recursion, one product with A per moment."""
    moments = np.empty(num_moments)
    previous, current = start, scaled(start)
    moments[:2] = np.vdot(left, start).real, np.vdot(left, current).real
    for n in range(2, num_moments):
        previous, current = current, 2 * scaled(current) - previous
        moments[n] = np.vdot(left, current).real
    return moments / start.shape[1]


def _paired_moments(operator: _GeneralizedOperator, center: float, half_width: float, start: np.ndarray,
                    left: np.ndarray, num_moments: int) -> np.ndarray:
    """The same moments at half the products with H and solves with S (Weiße et al., RMP 78, 275, eq. 34).

    A = S⁻¹H is self-adjoint in the S inner product and w = Su (A = H, w = u without S), so with v_n = T_n(Ã)u
    (Ã = (A − center)/half_width), T_2n = 2T_n² − T_0 and T_2n+1 = 2T_n+1T_n − T_1 give μ_2n = 2 v_n†Sv_n − μ_0 and
    μ_2n+1 = 2 v_n†Sv_n+1 − μ_1. The images Sv_n follow the same recursion from the products Hv_n that the step needs
    anyway, S(Ãv) = (Hv − center·Sv)/half_width: no product with S either.
    """

    def step(vector: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Ãv, SÃv) from (v, Sv)."""
        product = operator.times_h(vector)
        return (operator.solve_s(product) - center * vector) / half_width, (product - center * image) / half_width

    moments = np.empty(num_moments)
    previous, previous_image = start, left
    current, image = step(start, left)
    moments[:2] = np.vdot(left, start).real, np.vdot(left, current).real
    for n in range(1, (num_moments + 1) // 2):
        moments[2 * n] = 2 * np.vdot(image, current).real - moments[0]
        if 2 * n + 1 < num_moments:
            following, following_image = step(current, image)
            previous, current = current, 2 * following - previous
            previous_image, image = image, 2 * following_image - previous_image
            moments[2 * n + 1] = 2 * np.vdot(previous_image, current).real - moments[1]
    return moments / start.shape[1]

"""Dense and shift-invert eigensolvers against the real MoS2 ABACUS run, and the Fermi level from electron counts."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import scipy.sparse as sp

from aiida_deeph.ml import pardiso
from aiida_deeph.ml.eigensolvers import ShiftInvert, dense_eigh, fermi_level, shift_invert_eigsh, shifted_matrix
from aiida_deeph.ml.pardiso import mkl_runtime
from aiida_deeph.ml.sparse import BlochOperators

from .synthetic import MOS2, read_mos2, single_threaded_blas, spinful, supercell

pytestmark = pytest.mark.usefixtures(single_threaded_blas.__name__)
GENERIC_K = np.array([0.13, 0.27, 0.0])


def read_istate(path):
    """{fractional k: (energies eV, occupations)} from ABACUS's istate.info."""
    states = {}
    for header, body in re.findall(r"Kpoint = \d+\s+\(([^)]*)\)\n(.*?)(?=\n\s*\n|\Z)", path.read_text(), re.S):
        rows = np.array([line.split() for line in body.strip().splitlines()], dtype=float)
        states[tuple(float(x) for x in header.split())] = (rows[:, 1], rows[:, 2])
    return states


@pytest.fixture(scope="module")
def mos2(dft_fixtures):
    return read_mos2(dft_fixtures)


@pytest.fixture(scope="module")
def istate(dft_fixtures):
    return read_istate(dft_fixtures / MOS2 / "OUT.ABACUS" / "istate.info")


@pytest.fixture(scope="module")
def operators(mos2):
    return {
        "MoS2": BlochOperators(mos2),
        "MoS2 3x3x1": BlochOperators(supercell(mos2, (3, 3, 1))),
        "MoS2 spinful": BlochOperators(spinful(mos2)),
    }


def test_dense_reproduces_abacus_istate(mos2, istate):
    operators = BlochOperators(mos2)
    assert len(istate) == 3
    for kpoint, (energies, _) in istate.items():
        bands = dense_eigh(*operators.at_k(np.array(kpoint)))
        np.testing.assert_allclose(bands[: len(energies)], energies, atol=2e-4)
    gamma = dense_eigh(*operators.at_k(np.zeros(3)))
    np.testing.assert_allclose(gamma[:3], [-63.9169, -38.0666, -37.9607], atol=2e-4)


def test_ill_threshold_projects_out_small_overlap_eigenvalues(operators):
    hk, sk = operators["MoS2"].at_k(GENERIC_K)
    full = dense_eigh(hk, sk)
    s_values = np.linalg.eigvalsh(sk.toarray())
    np.testing.assert_allclose(dense_eigh(hk, sk, ill_threshold=0.5 * s_values[0]), full, atol=1e-10)
    threshold = s_values[3] * 1.0001  # drops the four smallest S eigenvectors
    values, vectors = dense_eigh(hk, sk, ill_threshold=threshold, vectors=True)
    assert len(values) == len(full) - 4
    np.testing.assert_allclose(vectors.conj().T @ sk.toarray() @ vectors, np.eye(len(values)), atol=1e-10)
    # Rayleigh–Ritz in a subspace: every eigenvalue can only move up
    assert np.all(values >= full[: len(values)] - 1e-10)


@pytest.mark.parametrize("kpoint", [np.zeros(3), GENERIC_K], ids=["gamma", "generic"])
@pytest.mark.parametrize("name", ["MoS2", "MoS2 3x3x1", "MoS2 spinful"])
def test_shift_invert_matches_dense(operators, name, kpoint):
    hk, sk = operators[name].at_k(kpoint)
    sigma, num = -2.0, 8
    reference = dense_eigh(hk, sk)
    nearest = np.sort(reference[np.argsort(np.abs(reference - sigma))[:num]])
    values, vectors = shift_invert_eigsh(hk, sk, num, sigma, vectors=True)
    np.testing.assert_allclose(values, nearest, rtol=0, atol=1e-8)
    np.testing.assert_allclose(hk @ vectors, sk @ vectors * values, atol=1e-8)


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
def test_pardiso_and_superlu_agree(operators):
    hk, sk = operators["MoS2"].at_k(GENERIC_K)
    with_pardiso = shift_invert_eigsh(hk, sk, 6, 1.0, backend="pardiso")
    with_superlu = shift_invert_eigsh(hk, sk, 6, 1.0, backend="superlu")
    np.testing.assert_allclose(with_pardiso, with_superlu, atol=1e-9)


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
@pytest.mark.parametrize("kpoint", [np.zeros(3), GENERIC_K], ids=["real", "complex"])
def test_pardiso_factor_once_solve_many(operators, kpoint):
    hk, sk = operators["MoS2"].at_k(kpoint)
    shifted = (hk + 2.0 * sk).tocsr()
    rhs = np.random.default_rng(0).standard_normal((hk.shape[0], 5)) * (1 + 1j)
    with pardiso.factorize(shifted) as factor:
        assert isinstance(factor, pardiso.PardisoFactorization)
        np.testing.assert_allclose(shifted @ factor.solve(rhs), rhs, atol=1e-9)
        np.testing.assert_allclose(shifted @ factor.solve(rhs[:, 0]), rhs[:, 0], atol=1e-9)
    with pytest.raises(RuntimeError, match="closed"):
        factor.solve(rhs)
    with pardiso.factorize(sk, positive_definite=True) as cholesky:  # S = LLᴴ: L⁻ᴴ(L⁻ᴴ)ᴴ = S⁻¹
        inverse_factor = cholesky.solve_cholesky_adjoint(np.eye(hk.shape[0]))
        np.testing.assert_allclose(inverse_factor @ inverse_factor.conj().T, np.linalg.inv(sk.toarray()), atol=1e-9)


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
@pytest.mark.parametrize("kpoint", [np.zeros(3), GENERIC_K], ids=["real", "complex"])
def test_single_precision_factor_solves_to_double_accuracy(operators, kpoint):
    hk, sk = operators["MoS2 3x3x1"].at_k(kpoint)
    shifted = shifted_matrix(hk, sk, -2.0)
    rhs = np.random.default_rng(0).standard_normal((hk.shape[0], 3)).astype(hk.dtype)
    with pardiso.factorize(shifted, precision="single") as single, pardiso.factorize(shifted) as double:
        assert single.precision == "single" and double.precision == "double"
        assert single.memory_bytes < double.memory_bytes and single.factor_nonzeros == double.factor_nonzeros > 0
        residual = np.linalg.norm(shifted @ single.solve(rhs) - rhs, axis=0) / np.linalg.norm(rhs, axis=0)
        assert residual.max() <= pardiso.REFINEMENT_TOLERANCE
        np.testing.assert_allclose(single.solve(rhs[:, 0]), double.solve(rhs[:, 0]), rtol=0, atol=1e-9)
    single_values = shift_invert_eigsh(hk, sk, 8, -2.0, precision="single", ncv=40)
    np.testing.assert_allclose(single_values, shift_invert_eigsh(hk, sk, 8, -2.0), rtol=0, atol=1e-9)


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
def test_single_precision_refinement_stops_when_it_diverges(operators, caplog):
    """σ within 1e-7 eV of an eigenvalue: the single factor's error exceeds the solution, so refinement would
    diverge; the solve returns its best iterate, never worse than the unrefined one, and says so."""
    hk, sk = operators["MoS2 3x3x1"].at_k(np.zeros(3))
    sigma = dense_eigh(hk, sk)[40] + 1e-7
    shifted = shifted_matrix(hk, sk, sigma)
    rhs = np.random.default_rng(0).standard_normal(hk.shape[0])
    with pardiso.factorize(shifted, precision="single") as single, caplog.at_level("WARNING"):
        unrefined = np.linalg.norm(shifted @ single._solve(33, rhs) - rhs)
        refined = np.linalg.norm(shifted @ single.solve(rhs) - rhs)
    assert np.isfinite(refined) and refined <= unrefined
    assert refined > pardiso.REFINEMENT_TOLERANCE * np.linalg.norm(rhs)
    assert "a double factor is more accurate" in caplog.text


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
@pytest.mark.parametrize("precision", ["double", "single"])
def test_band_path_reuses_the_analysis_of_its_first_kpoint(operators, precision):
    """Γ (real), then three complex k-points: the complex ones after the first reuse its ordering and symbolic
    factorization, and every k gets the eigenvalues of a factorization of its own. Through ``at_k``, as
    ``compute_bands`` does: PARDISO gets only the upper triangle of H − σS, and a single factor's refinement must
    use it as the whole symmetric matrix."""
    path = [np.zeros(3), GENERIC_K, np.array([0.3, 0.1, 0.0]), np.array([0.2, 0.35, 0.0])]
    single = operators["MoS2 3x3x1"]
    with ShiftInvert(-2.0, precision=precision) as solver:
        for kpoint in path:
            hk, sk = single.at_k(kpoint)
            np.testing.assert_allclose(solver.at_k(single, kpoint, 8, ncv=40),
                                       shift_invert_eigsh(hk, sk, 8, -2.0, ncv=40),
                                       rtol=0, atol=1e-9)
        assert solver.reused == 2 and solver.factorization.analysis_seconds > 0
        hk, sk = operators["MoS2"].at_k(GENERIC_K)  # another pattern: factored anew
        assert not solver.factorization.refactor(shifted_matrix(hk, sk, -2.0))
        solver(hk, sk, 4)
        assert solver.reused == 2
    assert solver.factorization is None


@pytest.mark.parametrize("kpoint", [np.zeros(3), GENERIC_K], ids=["real", "complex"])
def test_shift_invert_at_k_overwrites_only_its_own_copy_of_h(operators, kpoint):
    """at_k shifts H(k) in place: same eigenvalues as from separate H and S, and the blocks are untouched."""
    bloch = operators["MoS2 3x3x1"]
    hk, sk = bloch.at_k(kpoint)
    with ShiftInvert(-2.0) as solver:
        np.testing.assert_allclose(solver.at_k(bloch, kpoint, 8), shift_invert_eigsh(hk, sk, 8, -2.0), rtol=0,
                                   atol=1e-9)
        with pytest.raises(ValueError, match="0 < num"):
            solver.at_k(bloch, kpoint, hk.shape[0])
    again, _ = bloch.at_k(kpoint)
    np.testing.assert_array_equal(again.data, hk.data)
    shifted = shifted_matrix(hk, sk, 1.5, overwrite_h=True)
    assert shifted is hk and np.shares_memory(shifted.data, hk.data)
    np.testing.assert_allclose(shifted.toarray(), again.toarray() - 1.5 * sk.toarray(), atol=1e-14)


def test_shifted_matrix_reuses_a_shared_layout(operators):
    hk, sk = operators["MoS2 3x3x1"].at_k(GENERIC_K)  # H and S on the same pairs: one CSR layout
    shifted = shifted_matrix(hk, sk, 1.5)
    assert np.shares_memory(shifted.indices, hk.indices) and np.shares_memory(shifted.indptr, hk.indptr)
    np.testing.assert_array_equal(shifted.toarray(), (hk - 1.5 * sk).toarray())
    spinful_h, spinful_s = operators["MoS2 spinful"].at_k(GENERIC_K)  # S doubled: layouts differ
    np.testing.assert_array_equal(shifted_matrix(spinful_h, spinful_s, 1.5).toarray(),
                                  (spinful_h - 1.5 * spinful_s).toarray())


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
def test_taking_frees_h_and_s_before_pardiso_factors(operators, monkeypatch):
    """ShiftInvert.taking: by the time PARDISO factors, the H and S handed over are gone (only the upper triangles
    of H − σS, which PARDISO reads in place, and of S, for ARPACK's products, are left) — at 10⁴ atoms that is GBs
    off the peak."""
    import weakref

    import aiida_deeph.ml.eigensolvers as eigensolvers

    h, s = operators["MoS2 3x3x1"].at_k(GENERIC_K)
    expected = shift_invert_eigsh(h.copy(), s, 6, 1.0)
    handed, nnz = (weakref.ref(h), weakref.ref(s)), s.nnz
    seen = []
    factorize = eigensolvers.factorize

    def watched(matrix, **kwargs):
        seen.append((handed[0]() is None, handed[1]() is None, matrix.nnz < nnz))
        return factorize(matrix, **kwargs)

    monkeypatch.setattr(eigensolvers, "factorize", watched)
    matrices = [h, s]
    del h, s
    with ShiftInvert(1.0) as solver:
        np.testing.assert_allclose(solver.taking(matrices, 6), expected, atol=1e-10)
    assert seen == [(True, True, True)] and matrices == []


@pytest.mark.skipif(mkl_runtime() is None, reason="MKL is not installed")
def test_symmetric_product_reads_the_upper_triangle_only(operators):
    """MKL's product with a real symmetric (Γ) or complex Hermitian (generic k) S from its upper triangle equals
    scipy's with the whole S, for real and complex vectors and blocks of them; the lower triangle is not read."""
    from aiida_deeph.ml.pardiso import SymmetricProduct

    rng = np.random.default_rng(1)
    for kpoint in (np.zeros(3), GENERIC_K):
        _, s = operators["MoS2 3x3x1"].at_k(kpoint)
        product = SymmetricProduct(s, mkl_runtime())
        real, imaginary = rng.standard_normal((2, s.shape[0]))
        for vector in (real, real + 1j * imaginary):
            np.testing.assert_allclose(product.matvec(vector), s @ vector, atol=1e-12)
        block = rng.standard_normal((s.shape[0], 3))  # the KPM's random vectors: one pass over S for all
        for vectors in (block, block + 1j * rng.standard_normal(block.shape)):
            np.testing.assert_allclose(product.multiply(vectors), s @ vectors, atol=1e-12)
        garbled = s.copy()
        lower = sp.tril(garbled, k=-1, format="csr")
        garbled = garbled - lower + 7.0 * lower  # a different lower triangle: the same product
        np.testing.assert_allclose(SymmetricProduct(garbled, mkl_runtime()).matvec(np.ones(s.shape[0])),
                                   s @ np.ones(s.shape[0]), atol=1e-12)
        product.close()


def test_upper_triangle_stores_every_diagonal_entry(operators):
    hk, _ = operators["MoS2"].at_k(GENERIC_K)
    for matrix in (hk, sp.csr_matrix(np.triu(np.ones((4, 4))) - np.eye(4))):  # canonical; diagonal missing
        upper = pardiso.upper_triangle(matrix)
        assert upper.has_canonical_format and np.all(upper.indices[upper.indptr[:-1]] == np.arange(matrix.shape[0]))
        np.testing.assert_array_equal(upper.toarray(), np.triu(matrix.toarray()))
        assert np.shares_memory(pardiso.upper_triangle(upper).data, upper.data)  # upper already: no copy


def test_without_mkl_superlu_takes_over_with_a_warning(operators, monkeypatch, caplog):
    monkeypatch.setattr(pardiso, "mkl_runtime", lambda: None)
    pardiso._warn_no_mkl.cache_clear()
    hk, sk = operators["MoS2"].at_k(GENERIC_K)
    with caplog.at_level(logging.WARNING, logger=pardiso.__name__):
        with pardiso.factorize(sk) as factor:
            assert isinstance(factor, pardiso.SuperLUFactorization) and not factor.has_cholesky
            np.testing.assert_allclose(sk @ factor.solve(np.ones(hk.shape[0])), 1.0, atol=1e-10)
    assert "falling back to SuperLU" in caplog.text
    with pytest.raises(RuntimeError, match="not found"):
        pardiso.factorize(sk, backend="pardiso")


def test_fermi_level_reproduces_abacus(mos2, istate, dft_fixtures):
    """26 valence electrons on ABACUS's own 4×1×1 k-points (weights 1/4, 1/2, 1/4) give its EFERMI (mid-gap)."""
    kpoints = np.array(list(istate))
    weights = np.array([0.25, 0.5, 0.25])
    # istate.info occupations are weight × 2 per state: their sum is the electron count
    n_electrons = sum(occupations.sum() for _, occupations in istate.values())
    assert n_electrons == pytest.approx(26)
    log = (dft_fixtures / MOS2 / "OUT.ABACUS" / "running_scf.log").read_text()
    efermi = float(re.search(r"EFERMI\s*=\s*(\S+)\s*eV", log).group(1))
    operators = BlochOperators(mos2)
    bands = np.array([dense_eigh(*operators.at_k(k)) for k in kpoints])
    assert fermi_level(bands, n_electrons, weights) == pytest.approx(efermi, abs=1e-3)
    assert efermi == pytest.approx(mos2.fermi_energy_eV, abs=1e-9)
    # at room temperature the level stays in the gap: the count below it is still 13 bands at every k
    warm = fermi_level(bands, n_electrons, weights, temperature=300.0)
    assert np.all((bands < warm).sum(axis=1) == 13)


def test_fermi_level_of_a_half_filled_band():
    kpoints = np.linspace(0, 1, 400, endpoint=False)
    band = -2 * np.cos(2 * np.pi * kpoints)[:, None]  # one-orbital chain, particle-hole symmetric
    assert fermi_level(band, 1.0) == pytest.approx(0.0, abs=0.05)
    assert fermi_level(band, 1.0, temperature=1000.0) == pytest.approx(0.0, abs=1e-9)
    quarter = fermi_level(band, 0.5, temperature=300.0)
    assert quarter == pytest.approx(-2 * np.cos(np.pi / 4), abs=0.05)
    with pytest.raises(ValueError):
        fermi_level(band, 2.5)

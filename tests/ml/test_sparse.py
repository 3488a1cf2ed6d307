"""Sparse Bloch matrices equal the dense reference H(k), S(k) of the real MoS2 data, spinless and spinful."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_deeph.io.deeph_format import BlockMatrix
from aiida_deeph.ml import sparse
from aiida_deeph.ml.sparse import BlochOperators

from .synthetic import read_mos2, single_threaded_blas, spinful

pytestmark = pytest.mark.usefixtures(single_threaded_blas.__name__)
KPOINTS = {"gamma": np.zeros(3), "zone_edge": np.array([0.5, 0.0, 0.0]), "generic": np.array([0.13, 0.27, 0.05])}


@pytest.fixture(scope="module")
def mos2(dft_fixtures):
    return read_mos2(dft_fixtures)


def assert_matches_dense(structure, kpoint):
    hk, sk = BlochOperators(structure).at_k(kpoint)
    dense_h, dense_s = structure.hk_sk(kpoint)
    assert hk.shape == dense_h.shape and sk.shape == dense_s.shape
    np.testing.assert_allclose(hk.toarray(), dense_h, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sk.toarray(), dense_s, rtol=0, atol=1e-13)
    return hk, sk


@pytest.mark.parametrize("name", KPOINTS)
def test_spinless_matches_dense(mos2, name):
    hk, sk = assert_matches_dense(mos2, KPOINTS[name])
    # real phases (Γ, zone edge) give a real matrix: PARDISO's real symmetric mode applies there
    assert hk.dtype == (np.complex128 if name == "generic" else np.float64)


@pytest.mark.parametrize("name", ["gamma", "generic"])
def test_spinful_matches_dense(mos2, name):
    structure = spinful(mos2)
    hk, sk = assert_matches_dense(structure, KPOINTS[name])
    assert hk.shape == (2 * mos2.norbitals,) * 2 and hk.dtype == np.complex128
    np.testing.assert_allclose((hk - hk.conj().T).toarray(), 0, atol=1e-12)


def test_small_chunks_give_the_same_matrix(mos2, monkeypatch):
    reference = BlochOperators(mos2).at_k(KPOINTS["generic"])[0]
    monkeypatch.setattr(sparse, "CHUNK", 997)  # chunk edges inside blocks and inside shared CSR slots
    chunked = BlochOperators(mos2).at_k(KPOINTS["generic"])[0]
    np.testing.assert_allclose(chunked.toarray(), reference.toarray(), rtol=0, atol=1e-13)


def test_pattern_without_shared_slots(mos2):
    # keep only the home-cell pairs: no two entries land on the same (row, col), so no segmented sum is needed
    home = {key: block for key, block in mos2.hamiltonian.items() if key[:3] == (0, 0, 0)}
    matrix = BlockMatrix.from_blocks(home)
    pattern = sparse.BlockPattern.build(matrix, mos2.orbital_offsets(), mos2.norbitals, spinful=False)
    assert not pattern.shared_slots and pattern.nnz == len(matrix.entries)
    expected = matrix.at_k(KPOINTS["generic"], mos2.orbital_offsets(), mos2.norbitals)
    np.testing.assert_allclose(pattern.at_k(KPOINTS["generic"]).toarray(), expected, atol=1e-13)


def test_pattern_is_reused_across_kpoints(mos2):
    operators = BlochOperators(mos2)
    first = operators.at_k(KPOINTS["gamma"])[0]
    second = operators.at_k(KPOINTS["generic"])[0]
    # the CSR structure is computed once and shared (not copied) by every H(k); only the values change
    for matrix in (first, second):
        assert np.shares_memory(matrix.indices, operators.hamiltonian.indices)
        assert np.shares_memory(matrix.indptr, operators.hamiltonian.indptr)
    assert operators.hamiltonian.nnz < len(mos2.hamiltonian.entries)  # the 35 R vectors fold onto shared slots

"""Gaussian and KPM densities of states on the real MoS2 blocks (tiled to a 2×2×1 supercell)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from aiida_deeph.ml.dos import gaussian_dos, jackson_kernel, kpm_expansion, moments_for, probe_count, spectral_bounds
from aiida_deeph.ml.eigensolvers import dense_eigh
from aiida_deeph.ml.sparse import BlochOperators

from .synthetic import read_mos2, single_threaded_blas, spinful, supercell

pytestmark = pytest.mark.usefixtures(single_threaded_blas.__name__)
NUM_MOMENTS = 256


@pytest.fixture(scope="module")
def problem(dft_fixtures):
    """H, S of 12 atoms (212 orbitals) at Γ and their exact eigenvalues."""
    hk, sk = BlochOperators(supercell(read_mos2(dft_fixtures), (2, 2, 1))).at_k(np.zeros(3))
    return hk, sk, dense_eigh(hk, sk)


@pytest.fixture(scope="module")
def expansion(problem):
    hk, sk, _ = problem
    return kpm_expansion(hk, sk, num_moments=NUM_MOMENTS, num_vectors=16)


def test_gaussian_dos_counts_every_state():
    eigenvalues = np.array([[-1.0, 0.0, 2.0], [-0.5, 0.5, 1.5]])
    energies = np.linspace(-3, 4, 7001)
    dos, integrated = gaussian_dos(eigenvalues, energies, width=0.1, weights=[1, 3])
    assert np.trapz(dos, energies) == pytest.approx(3.0, abs=1e-6)
    assert integrated[-1] == pytest.approx(3.0, abs=1e-9)
    # halfway between levels the count is the k-weighted number below: 2 at the first k, 1 at the second
    _, below = gaussian_dos(eigenvalues, np.array([0.25]), width=0.01, weights=[1, 3])
    assert below[0] == pytest.approx(0.25 * 2 + 0.75 * 1, abs=1e-9)


def test_spectral_bounds_enclose_the_generalized_spectrum(problem):
    hk, sk, exact = problem
    low, high = spectral_bounds(hk, sk)
    width = exact[-1] - exact[0]
    assert exact[0] - 0.01 * width <= low <= exact[0] + 1e-6
    assert exact[-1] - 1e-6 <= high <= exact[-1] + 0.01 * width


def test_kpm_integrates_to_the_number_of_states(problem, expansion):
    hk, _, exact = problem
    size = hk.shape[0]
    assert expansion.moments[0] == size
    energies = np.linspace(expansion.center - expansion.half_width, expansion.center + expansion.half_width, 20001)
    assert expansion.integrated(energies)[-1] == pytest.approx(size, rel=1e-12)
    assert np.trapz(expansion.dos(energies), energies) == pytest.approx(size, rel=2e-3)
    assert np.all(expansion.dos(energies[[0, -1]] + [-0.1, 0.1]) == 0)  # nothing outside the scaled interval


def test_kpm_matches_the_broadened_dense_dos(problem, expansion):
    _, _, exact = problem
    size = len(exact)
    energies = np.linspace(exact[0] - 3, exact[-1] + 3, 6001)
    kpm = expansion.dos(energies)
    # exact moments of the dense spectrum with the same kernel: only the stochastic trace and S⁻¹ differ
    angles = np.arccos((exact - expansion.center) / expansion.half_width)
    exact_moments = np.cos(np.outer(np.arange(NUM_MOMENTS), angles)).sum(axis=1)
    reference = dataclasses.replace(expansion, moments=exact_moments).dos(energies)
    assert np.trapz(np.abs(kpm - reference), energies) / size < 0.12  # 16 probes on 212 states: ~8 % noise
    # a Gaussian as wide as the Jackson kernel (π/N in scaled units): the integrated DOS agrees to a few states
    _, gaussian_integrated = gaussian_dos(exact[None], energies, np.pi * expansion.half_width / NUM_MOMENTS)
    assert np.max(np.abs(expansion.integrated(energies) - gaussian_integrated)) < 0.05 * size


def test_kpm_of_spinful_hamiltonian_counts_spin_orbitals(dft_fixtures):
    hk, sk = BlochOperators(spinful(read_mos2(dft_fixtures))).at_k(np.array([0.1, 0.2, 0.0]))
    expansion = kpm_expansion(hk, sk, num_moments=64, num_vectors=4)
    assert expansion.moments[0] == hk.shape[0] == 106
    exact = dense_eigh(hk, sk)
    assert expansion.center - expansion.half_width < exact[0] and exact[-1] < expansion.center + expansion.half_width


def test_jackson_kernel_starts_at_one_and_decays():
    kernel = jackson_kernel(64)
    assert kernel[0] == pytest.approx(1.0)
    assert np.all(np.diff(kernel) < 0) and 0 < kernel[-1] < 0.01


def test_kpm_moments_follow_the_resolution(problem, caplog):
    """The moment count comes from the resolution asked over the spectrum's width; beyond the cap it is cut, with
    a warning, and the expansion says what it reached."""
    hk, sk, exact = problem
    bounds = (exact[0] - 0.01, exact[-1] + 0.01)
    fine = kpm_expansion(hk, sk, resolution=0.5, bounds=bounds, num_vectors=2)
    assert len(fine.moments) == moments_for(0.5, fine.half_width) == int(np.ceil(np.pi * fine.half_width / 0.5))
    assert 0.49 < fine.resolution <= 0.5
    with caplog.at_level("WARNING", logger="aiida_deeph.ml.dos"):
        cut = kpm_expansion(hk, sk, resolution=0.5, bounds=bounds, num_vectors=2, max_moments=64)
    assert len(cut.moments) == 64 and cut.resolution == pytest.approx(np.pi * cut.half_width / 64)
    assert "cut to 64" in caplog.text
    with pytest.raises(ValueError, match="resolution must be > 0"):
        moments_for(0.0, 10.0)


def test_probe_count_falls_with_the_number_of_states():
    assert probe_count(17_212) == 16  # the 1,324-atom bilayer in DZVP
    assert probe_count(154_804) == 2  # 1.05°: 11,908 atoms
    assert probe_count(100) == 64  # capped: small matrices are diagonalised anyway

"""k-paths, band.h5 and plots from the real MoS2 Hamiltonian."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import h5py
import numpy as np
import pytest

from aiida_deeph.ml.bands import band_edges, compute_bands, compute_dos, plot_bands, plot_dos
from aiida_deeph.ml.kpath import GAMMA, KPath, is_two_dimensional, standard_kpath

from .synthetic import read_mos2, single_threaded_blas

pytestmark = pytest.mark.usefixtures(single_threaded_blas.__name__)
BAND_KEYS = {"band_data", "kpoints_frac_list", "fermi_energy_eV", "fermi_energy_before_shift_eV", "band_gap",
             "is_metal", "hsk_symbol_list", "hsk_vector_list", "hsk_distance_list", "kpoints_distance_list", "rlv"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mos2(dft_fixtures):
    return read_mos2(dft_fixtures)


@pytest.fixture(scope="module")
def bands(mos2):
    return compute_bands(mos2, npoints=24)


def test_monolayer_gets_the_2d_hexagonal_path(mos2):
    assert is_two_dimensional(mos2.lattice, mos2.positions)
    kpath = standard_kpath(mos2.lattice, mos2.positions, npoints=40)
    assert kpath.tick_labels == [GAMMA, "M", "K", GAMMA]
    np.testing.assert_allclose(kpath.start, [[0, 0, 0], [0.5, 0, 0], [1 / 3, 1 / 3, 0]], atol=1e-12)
    np.testing.assert_allclose(kpath.kpoints[:, 2], 0.0)  # never out of plane
    assert abs(sum(kpath.npoints) - 40) <= 2
    assert np.all(np.diff(kpath.distances) >= 0)
    np.testing.assert_allclose(kpath.distances[np.cumsum(kpath.npoints) - 1], kpath.label_positions[1:])
    # |ΓM| = |b1|/2 with |b1| = 2/(√3 a) in dock's |Δk|/2π units
    assert kpath.label_positions[1] == pytest.approx(1 / (np.sqrt(3) * 3.16003), rel=1e-6)


def test_bulk_cells_get_the_3d_path(mos2):
    fcc = np.array([[0, 2.7, 2.7], [2.7, 0, 2.7], [2.7, 2.7, 0]])
    assert not is_two_dimensional(fcc, np.zeros((1, 3)))
    assert standard_kpath(fcc, np.zeros((1, 3))).tick_labels[:3] == [GAMMA, "X", "W"]
    # the MoS2 layer stacked without vacuum is bulk hexagonal: Γ-M-K-Γ-A-...
    bulk = mos2.lattice * [[1], [1], [3.1 / 37.92]]
    assert standard_kpath(bulk, mos2.positions * [1, 1, 3.1 / 37.92]).tick_labels[:5] == [GAMMA, "M", "K", GAMMA, "A"]


def test_k_path_text_round_trip(mos2):
    kpath = standard_kpath(mos2.lattice, mos2.positions)
    again = KPath.from_k_path_text(kpath.to_k_path_text(), mos2.lattice)
    np.testing.assert_allclose(again.kpoints, kpath.kpoints, atol=1e-9)
    assert again.labels == kpath.labels


def test_band_h5_is_written_atomically_with_dock_keys(mos2, bands, tmp_path):
    path = bands.write(tmp_path / "band.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["band.h5"]  # no temporary file left behind
    with h5py.File(path) as handle:
        assert BAND_KEYS <= set(handle)
        data = handle["band_data"][()]
        assert data.shape == (mos2.norbitals, len(bands.kpath.kpoints))
        np.testing.assert_allclose(handle["kpoints_frac_list"][()], bands.kpath.kpoints)
        # energies relative to E_F, as dock writes them
        assert handle["fermi_energy_eV"][()] == 0.0
        assert handle["fermi_energy_before_shift_eV"][()] == pytest.approx(mos2.fermi_energy_eV)
        np.testing.assert_allclose(data, (bands.eigenvalues - mos2.fermi_energy_eV).T)
        assert [s.decode() for s in handle["hsk_symbol_list"][()][:, 0]] == [GAMMA, "M", "K"]
        assert not handle["is_metal"][()]
        assert 1.5 < handle["band_gap"][()] < 2.0  # monolayer MoS2 in this basis: 1.88 eV at K


def test_sparse_window_matches_dense_bands(mos2, bands):
    kpath = dataclasses.replace(bands.kpath, npoints=(3, 2, 3))
    dense = compute_bands(mos2, kpath, solver="dense", num_bands=8)
    sparse = compute_bands(mos2, kpath, solver="sparse", num_bands=8)
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, atol=1e-8)
    assert sparse.band_gap == pytest.approx(bands.band_gap) and not sparse.is_metal
    single = compute_bands(mos2, kpath, solver="sparse", num_bands=8, precision="single")  # half the factor
    np.testing.assert_allclose(single.eigenvalues, dense.eigenvalues, atol=1e-8)


def test_band_edges_tell_metals_from_insulators():
    insulator = np.array([[-2.0, -1.0, 1.0], [-2.0, -1.5, 0.5]])
    assert band_edges(insulator, 0.0, full_spectrum=True) == (pytest.approx(1.5), False)
    metal = np.array([[-2.0, -0.5, 1.0], [-2.0, 0.5, 1.0]])  # band 1 crosses E_F
    assert band_edges(metal, 0.0, full_spectrum=True) == (0.0, True)
    assert band_edges(metal + 5, 0.0, full_spectrum=True)[1] is False  # E_F below every band: unknown gap
    window = np.array([[-0.3, 0.4], [-0.1, 0.2]])  # no band index: the gap is energetic
    assert band_edges(window, 0.0, full_spectrum=False) == (pytest.approx(0.3), False)


def test_band_plot_with_dft_reference(mos2, bands, tmp_path):
    reference = mos2.eigenvalues(bands.kpath.kpoints)  # the DFT H(k) diagonalised the slow dense way
    path = plot_bands(bands, tmp_path / "band.png", reference=reference, title="MoS2")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_dos_with_fermi_level_from_the_electron_count(mos2, tmp_path):
    structure = dataclasses.replace(mos2, occupation=26.0)
    result = compute_dos(structure, kmesh=(3, 3, 1), width=0.05, output_dir=tmp_path)
    assert result.method == "gaussian"
    assert result.integrated[-1] == pytest.approx(mos2.norbitals)
    # 13 filled bands: the level sits in the gap, where the DOS vanishes
    assert np.interp(result.fermi_energy_eV, result.energies, result.integrated) == pytest.approx(13.0, abs=1e-3)
    assert (tmp_path / "dos.h5").is_file()
    assert plot_dos(result, tmp_path / "dos.png").read_bytes()[:8] == PNG_MAGIC


def test_kpm_dos_through_compute_dos(mos2):
    structure = dataclasses.replace(mos2, occupation=26.0)
    result = compute_dos(structure, method="kpm", num_moments=128, num_vectors=8)
    assert result.integrated[-1] == pytest.approx(mos2.norbitals)
    gaussian = compute_dos(structure, width=0.05)
    assert result.fermi_energy_eV == pytest.approx(gaussian.fermi_energy_eV, abs=1.0)  # Γ only, coarse KPM


def test_solver_modules_stay_free_of_aiida():
    """The band/DOS stack runs on a bare Python: no module of it imports AiiDA directly."""
    from aiida_deeph.ml import bands, dos, eigensolvers, kpath, pardiso, sparse

    for module in (bands, dos, eigensolvers, kpath, pardiso, sparse):
        tree = ast.parse(inspect.getsource(module))
        nodes = list(ast.walk(tree))
        imported = [alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module for node in nodes if isinstance(node, ast.ImportFrom) and node.module]
        assert not [name for name in imported if name.split(".")[0] == "aiida"], module.__name__



def test_sparse_band_path_resumes_after_a_crash(mos2, tmp_path, monkeypatch):
    """band.progress.npz keeps the k-points done: a rerun of the same path solves only the rest and gives the
    uninterrupted result; another σ starts afresh; a finished path leaves no progress file."""
    from aiida_deeph.ml import eigensolvers

    kpath = standard_kpath(mos2.lattice, mos2.positions, npoints=8)
    reference = compute_bands(mos2, kpath, solver="sparse", num_bands=6)
    solved, crash_after = [], [3]
    at_k = eigensolvers.ShiftInvert.at_k

    def counted(self, operators, kpoint, num, **options):
        if len(solved) == crash_after[0]:
            raise KeyboardInterrupt("wall time")  # a killed job: the k-points before it are all it leaves
        solved.append(kpoint)
        return at_k(self, operators, kpoint, num, **options)

    def run(**options):
        solved.clear()
        return compute_bands(mos2, kpath, solver="sparse", num_bands=6, output_dir=tmp_path, **options)

    monkeypatch.setattr(eigensolvers.ShiftInvert, "at_k", counted)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert (tmp_path / "band.progress.npz").is_file() and not (tmp_path / "band.h5").exists()
    crash_after[0] = None
    resumed = run()
    assert len(solved) == len(kpath.kpoints) - 3
    np.testing.assert_allclose(resumed.eigenvalues, reference.eigenvalues, atol=1e-10)
    assert (tmp_path / "band.h5").is_file() and not (tmp_path / "band.progress.npz").exists()
    crash_after[0] = 3
    with pytest.raises(KeyboardInterrupt):
        run()
    crash_after[0] = None
    run(sigma=mos2.fermi_energy_eV + 0.5)  # not the path that was interrupted: every k-point again
    assert len(solved) == len(kpath.kpoints)

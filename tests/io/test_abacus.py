"""ABACUS readers and the conversion to the DeepH format, checked against DeepH-dock's own conversion."""

from __future__ import annotations

import dataclasses
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import eigh

from aiida_deeph.io.abacus import (
    AbacusCsr,
    AbacusFormatError,
    abacus_to_deeph,
    read_csr,
    read_input,
    read_kpt,
    read_orb_header,
    read_running_log,
    read_stru,
)
from aiida_deeph.io.deeph_format import DeepHFormatError, DeepHStructure
from aiida_deeph.io.units import ABACUS_RYDBERG_TO_EV

MOS2 = "abacus/MoS2_v3.10_deeph_dock"
MOS2_OLD = "abacus/MoS2_v3.6_deeptb_logonly"
CARBON = "abacus/C_nspin4_207_NO_KP_OHS_SPIN4"
PARSE_SECONDS = 5.0


@pytest.fixture(scope="module")
def mos2(dft_fixtures: Path) -> Path:
    return dft_fixtures / MOS2


@pytest.fixture(scope="module")
def mos2_structure(mos2: Path) -> DeepHStructure:
    return abacus_to_deeph(mos2)


def link_folder(target: Path, source: Path, names: list[str]) -> Path:
    """A calculation folder made of symlinks to fixture files: ``names`` as 'dest' or 'dest=source-relative'."""
    for name in names:
        dest, _, origin = name.partition("=")
        (target / dest).parent.mkdir(parents=True, exist_ok=True)
        (target / dest).symlink_to(source / (origin or dest))
    return target


@pytest.fixture
def carbon_folder(dft_fixtures: Path, tmp_path: Path) -> Path:
    """The nspin-4 test reference laid out as ABACUS leaves a run (it ships ``*.csr.ref`` and no OUT folder)."""
    names = ["INPUT", "STRU", "KPT", "PP_ORB"]
    names += [f"OUT.autotest/data-{x}R-sparse_SPIN0.csr=data-{x}R-sparse_SPIN0.csr.ref" for x in "HS"]
    return link_folder(tmp_path / "C", dft_fixtures / CARBON, names)


# ------------------------------------------------------------------------------------------------------------
# MoS2 against deepx-dock's conversion of the same run
# ------------------------------------------------------------------------------------------------------------
def test_mos2_reproduces_deeph_dock_reference(mos2: Path, mos2_structure: DeepHStructure):
    ours, ref = mos2_structure, DeepHStructure.read(mos2 / "deeph_ref")
    assert ours.species == ref.species == ["Mo", "S", "S"]
    assert ours.elements_orbital_map == ref.elements_orbital_map
    assert ours.spinful is ref.spinful is False
    assert ours.fermi_energy_eV == ref.fermi_energy_eV == -2.3123356452
    np.testing.assert_allclose(ours.lattice, ref.lattice, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.positions, ref.positions, rtol=0, atol=1e-6)
    for name in ("hamiltonian", "overlap"):
        mine, theirs = getattr(ours, name), getattr(ref, name)
        assert set(mine.index) == set(theirs.index) and len(mine) == 239, name
        worst_abs, worst_rel = 0.0, 0.0
        for key, block in theirs.items():
            diff = np.abs(mine[key] - block)
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(block), 1e-300)).max()))
        assert worst_rel <= 1e-8, f"{name}: max |Δ| = {worst_abs:.3e} eV, max relative {worst_rel:.3e}"


def test_mos2_keeps_only_overlap_pairs(mos2: Path, mos2_structure: DeepHStructure):
    """353 atom pairs have H entries, 239 have S entries: DeepH keeps the overlap's."""
    offsets = np.array([0, 27, 40, 53])
    atom_of = np.repeat(np.arange(3), np.diff(offsets))

    def pairs(csr: AbacusCsr) -> set:
        found = set()
        for cell, matrix in csr.matrices.items():
            coo = matrix.tocoo()
            found |= {(*cell, int(i), int(j)) for i, j in zip(atom_of[coo.row], atom_of[coo.col])}
        return found

    h_pairs = pairs(read_csr(mos2 / "OUT.ABACUS" / "data-HR-sparse_SPIN0.csr"))
    s_pairs = pairs(read_csr(mos2 / "OUT.ABACUS" / "data-SR-sparse_SPIN0.csr"))
    assert (len(h_pairs), len(s_pairs)) == (353, 239) and s_pairs < h_pairs
    assert set(mos2_structure.hamiltonian.index) == s_pairs


def test_mos2_gamma_eigenvalues_equal_istate_info(mos2: Path, mos2_structure: DeepHStructure):
    text = (mos2 / "OUT.ABACUS" / "istate.info").read_text()
    first_k = text.split("BAND")[1]  # the block of k-point 1 (Γ)
    reference = np.array([float(line.split()[1]) for line in first_k.splitlines()[1:] if line.strip()])
    assert len(reference) == 23
    # Every H(R) entry ABACUS wrote: the reader and the Ry→eV factor.
    h = read_csr(mos2 / "OUT.ABACUS" / "data-HR-sparse_SPIN0.csr")
    s = read_csr(mos2 / "OUT.ABACUS" / "data-SR-sparse_SPIN0.csr")
    h_gamma = sum(m.toarray() for m in h.matrices.values()) * ABACUS_RYDBERG_TO_EV
    s_gamma = sum(m.toarray() for m in s.matrices.values())
    full = eigh(h_gamma, s_gamma, eigvals_only=True)[:23]
    error = float(np.abs(full - reference).max())
    assert error <= 1e-4, f"all H(R) pairs: max |Δε| = {error:.2e} eV"
    # The DeepH structure drops the 114 H-only pairs (≤ 6.8e-5 eV each), which moves Γ levels by ≤ 0.13 meV.
    ours = mos2_structure.eigenvalues([0.0, 0.0, 0.0])[0][:23]
    error = float(np.abs(ours - reference).max())
    assert error <= 2e-4, f"overlap pairs only: max |Δε| = {error:.2e} eV"


def test_rydberg_constant_is_abacus_own(mos2: Path):
    """The log's 'E_Fermi <Ry> <eV>' rows fix ABACUS's Ry→eV factor; deepx-dock uses the same one."""
    rows = re.findall(r"^\s*E_Fermi\s+(\S+)\s+(\S+)", (mos2 / "OUT.ABACUS" / "running_scf.log").read_text(), re.M)
    ratios = [float(ev) / float(ry) for ry, ev in rows]
    assert len(rows) == 27 and max(abs(r / ABACUS_RYDBERG_TO_EV - 1) for r in ratios) < 1e-9


def test_orbital_shells_from_orb_file_header(mos2: Path):
    orbitals = mos2 / "orbitals"
    assert read_orb_header(orbitals / "Mo_DZP/Mo_gga_8au_100Ry_4s2p2d1f.orb") == ("Mo", [0, 0, 0, 0, 1, 1, 2, 2, 3])
    assert read_orb_header(orbitals / "S_DZP/S_gga_8au_100Ry_2s2p1d.orb") == ("S", [0, 0, 1, 1, 2])


# ------------------------------------------------------------------------------------------------------------
# nspin 4 and nspin 2
# ------------------------------------------------------------------------------------------------------------
def test_nspin4_carbon_parses_spinful_hermitian(carbon_folder: Path):
    raw = read_csr(carbon_folder / "OUT.autotest" / "data-HR-sparse_SPIN0.csr")
    assert raw.is_complex and raw.dimension == 26 and raw.step == 0 and raw.matrices[(0, 0, 0)].nnz == 42
    with pytest.warns(UserWarning, match="no EFERMI"):
        structure = abacus_to_deeph(carbon_folder)
    h, s = structure.hamiltonian, structure.overlap
    assert structure.spinful and h.is_complex and not s.is_complex
    assert structure.elements_orbital_map == {"C": [0, 0, 1, 1, 2]}
    assert h.chunk_shapes.tolist() == [[26, 26]] and s.chunk_shapes.tolist() == [[13, 13]]
    assert h.hermiticity_error() <= 1e-12 and s.hermiticity_error() <= 1e-12
    block = h[(0, 0, 0, 0, 0)]
    assert not np.any(block[:13, 13:]), "no SOC and collinear moments: no spin-flip terms"
    # In spin-major order the up-up block is the even (spin 0) rows/columns of the interleaved file.
    interleaved = raw.matrices[(0, 0, 0)].toarray()
    up_up = np.sort(np.diag(interleaved)[0::2].real) * ABACUS_RYDBERG_TO_EV
    np.testing.assert_allclose(np.sort(np.diag(block[:13, :13]).real), up_up)
    np.testing.assert_allclose(structure.lattice, np.eye(3) * 10.0 * 1.89035917 * 0.529177, rtol=1e-12)


def test_nspin2_is_block_diagonal(mos2: Path, mos2_structure: DeepHStructure, tmp_path: Path):
    """A collinear run: _SPIN0 (up) and _SPIN1 (down), here both the MoS2 H, stored as diag(H↑, H↓)."""
    names = ["INPUT", "STRU", "KPT", "orbitals", "OUT.ABACUS/data-SR-sparse_SPIN0.csr"]
    names += [f"OUT.ABACUS/data-HR-sparse_SPIN{n}.csr=OUT.ABACUS/data-HR-sparse_SPIN0.csr" for n in (0, 1)]
    folder = link_folder(tmp_path / "spin2", mos2, names)
    log = (mos2 / "OUT.ABACUS" / "running_scf.log").read_text()
    (folder / "OUT.ABACUS" / "running_scf.log").write_text(re.sub(r"nspin = 1", "nspin = 2", log))
    structure = abacus_to_deeph(folder)
    assert structure.spinful and structure.hamiltonian.is_complex and not structure.overlap.is_complex
    for key, block in mos2_structure.hamiltonian.items():
        n_i, n_j = block.shape
        spinful = structure.hamiltonian[key]
        assert np.array_equal(spinful[:n_i, :n_j], block) and np.array_equal(spinful[n_i:, n_j:], block)
        assert not np.any(spinful[:n_i, n_j:]) and not np.any(spinful[n_i:, :n_j])


# ------------------------------------------------------------------------------------------------------------
# CSR layouts
# ------------------------------------------------------------------------------------------------------------
def write_nao_csr(path: Path, csr: AbacusCsr, steps: int = 1) -> Path:
    """The newer layout (``--- Ionic Step n ---``, wrapped arrays) as ABACUS ≥ 3.11 writes it."""
    out = []
    for step in range(1, steps + 1):
        scale = 1.0 if step == steps else 3.0  # earlier steps differ; the reader keeps the last
        out += [f" --- Ionic Step {step} ---", " # print H matrix in real space H(R)"]
        out += [" 1 # number of spin directions", " 1 # spin index", f" {csr.dimension} # number of localized basis"]
        out += [f" {len(csr.matrices)} # number of Bravais lattice vector R", ""]
        out += [" hexagonal", " 3.16003", " 1 0 0", " -0.5 0.866025 0", " 0 0 12", " Mo S", " 1 2", " Direct"]
        out += [" 0.1 0.2 0.3", "", " #----#", " #                 CSR Format                 #"]
        out += [" # The outer loop corresponds to the number of Bravais lattice vectors. #", " #----#", ""]
        for (rx, ry, rz), matrix in csr.matrices.items():
            out.append(f" {rx} {ry} {rz} {matrix.nnz}")
            values = [f"{v * scale:.8e}" for v in matrix.data]
            out += [" # CSR values", *_wrap(values, 6), " # CSR column indices", *_wrap(matrix.indices, 16)]
            out += [" # CSR row pointers", *_wrap(matrix.indptr, 16), ""]
    path.write_text("\n".join(out) + "\n")
    return path


def _wrap(items, width: int) -> list[str]:
    items = [str(x) for x in items]
    return [" " + " ".join(items[n : n + width]) for n in range(0, len(items), width)]


def test_nao_layout_gives_the_same_structure(mos2: Path, mos2_structure: DeepHStructure, tmp_path: Path):
    folder = link_folder(tmp_path / "nao", mos2, ["INPUT", "STRU", "KPT", "orbitals", "OUT.ABACUS/running_scf.log"])
    for old, new in (("data-HR-sparse_SPIN0.csr", "hrs1_nao.csr"), ("data-SR-sparse_SPIN0.csr", "srs1_nao.csr")):
        write_nao_csr(folder / "OUT.ABACUS" / new, read_csr(mos2 / "OUT.ABACUS" / old), steps=2)
    assert read_csr(folder / "OUT.ABACUS" / "srs1_nao.csr").step == 2
    structure = abacus_to_deeph(folder)
    assert set(structure.hamiltonian.index) == set(mos2_structure.hamiltonian.index)
    for key, block in mos2_structure.hamiltonian.items():
        np.testing.assert_allclose(structure.hamiltonian[key], block, rtol=1e-8, atol=1e-14)


def test_repeated_step_blocks_keep_the_last(dft_fixtures: Path, tmp_path: Path):
    source = dft_fixtures / CARBON / "data-HR-sparse_SPIN0.csr.ref"
    text = source.read_text()
    earlier = text.replace("(-1.04982955e+00,", "(-9.00000000e+00,")
    path = tmp_path / "appended.csr"
    path.write_text(earlier + text.replace("STEP: 0", "STEP: 1"))
    appended, original = read_csr(path), read_csr(source)
    assert appended.step == 1
    assert (appended.matrices[(0, 0, 0)] != original.matrices[(0, 0, 0)]).nnz == 0
    no_step = tmp_path / "nostep.csr"
    no_step.write_text(text.split("\n", 1)[1])
    assert read_csr(no_step).step is None


def test_empty_r_blocks_are_zero_matrices(mos2: Path):
    overlap = read_csr(mos2 / "OUT.ABACUS" / "data-SR-sparse_SPIN0.csr")
    empty = [cell for cell, matrix in overlap.matrices.items() if matrix.nnz == 0]
    assert len(overlap.matrices) == 51 and len(empty) == 16
    hamiltonian = read_csr(mos2 / "OUT.ABACUS" / "data-HR-sparse_SPIN0.csr")
    assert list(hamiltonian.matrices) == list(overlap.matrices)
    assert sum(m.nnz for m in hamiltonian.matrices.values()) == 89_311
    assert sum(m.nnz for m in overlap.matrices.values()) == 55_657


def test_position_matrix_file_is_refused(dft_fixtures: Path):
    with pytest.raises(AbacusFormatError, match="position-matrix"):
        read_csr(dft_fixtures / CARBON / "data-rR-sparse.csr.ref")


# ------------------------------------------------------------------------------------------------------------
# Text inputs and logs
# ------------------------------------------------------------------------------------------------------------
def test_running_log_v310(mos2: Path):
    log = read_running_log(mos2 / "OUT.ABACUS" / "running_scf.log")
    assert (log.version, log.commit, log.nspin, log.converged) == ("3.10.0", "e84abb490", 1, True)
    assert log.fermi_energy_eV == -2.3123356452 and log.electrons == 26.0
    assert log.labels == ["Mo", "S", "S"] and log.coordinate_type == "cartesian"
    assert log.shells == {"Mo": [0, 0, 0, 0, 1, 1, 2, 2, 3], "S": [0, 0, 1, 1, 2]}
    # latname hexagonal: the log's (standardized) cell agrees with STRU.cif, STRU itself has no vectors.
    a, b, c = np.linalg.norm(log.cell, axis=1)
    assert (a, b, c) == pytest.approx((3.16003463, 3.16003463, 37.92041557), abs=1e-4)
    assert np.degrees(np.arccos(log.cell[0] @ log.cell[1] / a / b)) == pytest.approx(120.0, abs=1e-4)
    with pytest.raises(AbacusFormatError, match="LATTICE_PARAMETERS"):
        read_stru(mos2 / "STRU").cell()


def test_running_log_v36_matches_its_stru(dft_fixtures: Path):
    folder = dft_fixtures / MOS2_OLD
    log = read_running_log(folder / "OUT.ABACUS" / "running_scf.log")
    assert (log.version, log.commit, log.nspin, log.converged) == ("3.6.0", "0dd5623", 1, True)
    assert log.fermi_energy_eV == 0.59250286817 and log.coordinate_type == "direct"
    assert log.shells == {"Mo": [0] * 6 + [1] * 3 + [2] * 3 + [3] * 2, "S": [0] * 3 + [1] * 3 + [2] * 2}
    stru = read_stru(folder / "STRU")
    assert stru.labels == log.labels == ["Mo", "S", "S"] and stru.coordinate_type == "Direct"
    np.testing.assert_allclose(log.cell, stru.cell(), atol=2e-5)  # the log prints 6 significant digits
    np.testing.assert_allclose(log.positions, stru.positions(), atol=2e-5)


def test_input_stru_kpt(mos2: Path, dft_fixtures: Path):
    echoed = read_input(mos2 / "OUT.ABACUS" / "INPUT")
    assert echoed["suffix"] == "ABACUS" and echoed["nspin"] == "1" and echoed["latname"] == "hexagonal"
    assert read_input(dft_fixtures / CARBON / "INPUT")["out_mat_hs"] == "1 10"
    stru = read_stru(mos2 / "STRU")
    assert stru.species == [("Mo", 95.94, "Mo_ONCV_PBE-1.0.upf"), ("S", 32.066, "S_ONCV_PBE-1.0.upf")]
    assert stru.orbital_files == ["Mo_DZP/Mo_gga_8au_100Ry_4s2p2d1f.orb", "S_DZP/S_gga_8au_100Ry_2s2p1d.orb"]
    assert stru.lattice_constant == 5.9716 and stru.coordinates.shape == (3, 3) and stru.magnetism == [0.0, 0.0]
    kpt = read_kpt(mos2 / "KPT")
    assert (kpt.mode, kpt.grid, kpt.shift) == ("Gamma", (4, 1, 1), (0.0, 0.0, 0.0))


def test_explicit_kpoint_list(tmp_path: Path):
    path = tmp_path / "KPT"
    path.write_text("K_POINTS\n2\nDirect\n0 0 0 1\n0.5 0 0 1 # X\n")
    kpt = read_kpt(path)
    assert kpt.mode == "Direct" and kpt.kpoints.tolist() == [[0, 0, 0], [0.5, 0, 0]] and kpt.weights.tolist() == [1, 1]


def test_format_error_is_a_deeph_value_error(tmp_path: Path):
    assert issubclass(AbacusFormatError, DeepHFormatError) and issubclass(AbacusFormatError, ValueError)
    (tmp_path / "INPUT").write_text("calculation scf\n")
    with pytest.raises(AbacusFormatError, match="INPUT_PARAMETERS"):
        read_input(tmp_path / "INPUT")


# ------------------------------------------------------------------------------------------------------------
# Truncated and corrupted files
# ------------------------------------------------------------------------------------------------------------
REAL_FILES = [
    f"{MOS2}/OUT.ABACUS/data-HR-sparse_SPIN0.csr",
    f"{MOS2}/OUT.ABACUS/data-SR-sparse_SPIN0.csr",
    f"{CARBON}/data-HR-sparse_SPIN0.csr.ref",
    f"{CARBON}/data-SR-sparse_SPIN0.csr.ref",
    f"{MOS2}/OUT.ABACUS/running_scf.log",
    f"{MOS2_OLD}/OUT.ABACUS/running_scf.log",
]


def _reader(relative: str):
    return read_running_log if relative.endswith(".log") else read_csr


def _timed(reader, path: Path):
    start = time.perf_counter()
    try:
        return reader(path)
    finally:
        assert time.perf_counter() - start < PARSE_SECONDS, f"{reader.__name__} took too long on {path.name}"


def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if hasattr(a, "tocsr"):
        return a.shape == b.shape and (a != b).nnz == 0
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("relative", REAL_FILES)
def test_truncated_files_raise(dft_fixtures: Path, tmp_path: Path, relative: str):
    source, reader = dft_fixtures / relative, _reader(relative)
    data = source.read_bytes()
    reference = reader(source)
    rng = random.Random(relative)
    for cut in [0, 10, len(data) - 2] + [rng.randrange(len(data)) for _ in range(6)]:
        path = tmp_path / f"cut{cut}"
        path.write_bytes(data[:cut])
        try:
            result = _timed(reader, path)
        except AbacusFormatError as exc:
            assert str(path) in str(exc)
            continue
        assert _same(result, reference), f"cut at {cut} of {len(data)} parsed to a different result"


@pytest.mark.parametrize("relative", REAL_FILES)
def test_flipped_bytes_raise_or_parse(dft_fixtures: Path, tmp_path: Path, relative: str):
    """A flipped byte must give our format error or a parse (a flipped digit is still a number), nothing else."""
    source, reader = dft_fixtures / relative, _reader(relative)
    data = source.read_bytes()
    rng = random.Random(relative + "flip")
    for _ in range(8):
        offset = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[offset] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{offset}"
        path.write_bytes(bytes(flipped))
        try:
            _timed(reader, path)
        except AbacusFormatError:
            pass


def test_log_labels_ending_in_digits(mos2: Path, tmp_path: Path):
    """Species labels such as Fe1/Fe2 (magnetic sublattices) print as tauc_Fe11, tauc_Fe12, ..."""
    text = (mos2 / "OUT.ABACUS" / "running_scf.log").read_text()
    text = text.replace("atom label = Mo", "atom label = Mo1").replace("tauc_Mo1 ", "tauc_Mo11 ")
    (tmp_path / "running_scf.log").write_text(text)
    log = read_running_log(tmp_path / "running_scf.log")
    assert log.labels == ["Mo1", "S", "S"] and log.shells["Mo1"] == [0, 0, 0, 0, 1, 1, 2, 2, 3]

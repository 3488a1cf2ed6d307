"""OpenMX readers: .scfout (3.8 and 3.9 layouts), .out, .dat and the conversion to the DeepH format."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import numpy as np
import pytest

from aiida_deeph.io.conventions import from_standard, to_standard
from aiida_deeph.io.deeph_format import DeepHFormatError, parse_poscar
from aiida_deeph.io.openmx import (
    INPUT_LINE_BYTES,
    OpenMXFormatError,
    ScfOut,
    basis_shells,
    openmx_to_deeph,
    read_openmx_dat,
    read_openmx_out,
    read_scfout,
)
from aiida_deeph.io.units import OPENMX_BOHR_TO_ANGSTROM, OPENMX_HARTREE_TO_EV

FE = "openmx/fe_bcc_spin_sli43"
MOTE2 = "openmx/MoTe2_deeph_dock_textonly"
IGNORED_SECTIONS = {"OLPpo", "OLPmo", "DM", "iDM"}  # read past, not stored
PARSE_SECONDS = 5.0


@pytest.fixture(scope="module")
def fe(dft_fixtures: Path) -> Path:
    return dft_fixtures / FE


@pytest.fixture(scope="module")
def fe_scfout(fe: Path) -> ScfOut:
    return read_scfout(fe / "fe.scfout")


# ------------------------------------------------------------------------------------------------------------
# A writer for synthetic .scfout files (the layout of formats.md §3), used to test both layouts and spin 3.
# ------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Model:
    """A hand-made tight-binding model: blocks[(Rx, Ry, Rz, i, j)] in OpenMX orbital order, Hartree."""

    species: list[str]
    bases: dict[str, str]
    tv: np.ndarray  # Bohr
    frac: np.ndarray
    h: list[dict]  # spin components, each {key: block}
    ih: list[dict]  # imaginary parts (spin 3)
    s: dict
    spin: int
    spinful: dict | None = None  # spin 3: the hand-made spin-major blocks
    chemp: float = -0.15
    valence: float = 9.0

    @property
    def orbitals(self) -> list[int]:
        return [sum(2 * l + 1 for l in basis_shells(self.bases[el])) for el in self.species]

    def neighbours(self) -> list[list[tuple[int, tuple[int, int, int]]]]:
        table = [[(i, (0, 0, 0))] for i in range(len(self.species))]
        for rx, ry, rz, i, j in self.s:
            if (rx, ry, rz, i, j) != (0, 0, 0, i, i):
                table[i].append((j, (rx, ry, rz)))
        return table


def make_model(species: list[str], spin: int, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    bases = {"C": "C6.0-s1p1", "H": "H5.0-s2"}
    bases = {el: bases[el] for el in dict.fromkeys(species)}
    n = [sum(2 * l + 1 for l in basis_shells(bases[el])) for el in species]
    keys = [(r, 0, 0, i, j) for r in (-1, 0, 1) for i in range(len(species)) for j in range(len(species))]

    def symmetric() -> dict:
        """Random real blocks with X(R)_ij = X(−R)_ji^T."""
        blocks = {}
        for key in keys:
            rx, ry, rz, i, j = key
            partner = (-rx, -ry, -rz, j, i)
            block = blocks[partner].T if partner in blocks else rng.normal(size=(n[i], n[j]))
            blocks[key] = (block + block.T) / 2 if partner == key else block
        return blocks

    s = symmetric()
    tv, frac = np.diag([4.0, 5.0, 6.0]), rng.random((len(species), 3))
    if spin != 3:
        return Model(species, bases, tv, frac, [symmetric() for _ in range(spin + 1)], [], s, spin)
    full = hermitian_spinful(keys, n, rng)
    h, ih = _encode_noncollinear(full, n)
    return Model(species, bases, tv, frac, h, ih, s, 3, spinful=full)


def hermitian_spinful(keys: list, n: list[int], rng: np.random.Generator) -> dict:
    """Random spin-major (2n_i, 2n_j) blocks with H(R)_ij = H(−R)_ji^†."""
    blocks = {}
    for key in keys:
        rx, ry, rz, i, j = key
        partner = (-rx, -ry, -rz, j, i)
        if partner in blocks:
            blocks[key] = blocks[partner].conj().T
        else:
            block = rng.normal(size=(2 * n[i], 2 * n[j])) + 1j * rng.normal(size=(2 * n[i], 2 * n[j]))
            blocks[key] = (block + block.conj().T) / 2 if partner == key else block
    return blocks


def _encode_noncollinear(full: dict, n: list[int]) -> tuple[list[dict], list[dict]]:
    """OpenMX's storage: Hks[0..3] real, iHks[0..2]; H↑↓ = Hks[2] + i(Hks[3] + iHks[2]) (split half and half)."""
    h: list[dict] = [{}, {}, {}, {}]
    ih: list[dict] = [{}, {}, {}]
    for key, block in full.items():
        a, b = n[key[3]], n[key[4]]
        uu, ud, dd = block[:a, :b], block[:a, b:], block[a:, b:]
        h[0][key], h[1][key], h[2][key], h[3][key] = uu.real, dd.real, ud.real, ud.imag / 2
        ih[0][key], ih[1][key], ih[2][key] = uu.imag, dd.imag, ud.imag / 2
    return h, ih


def ints(values) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


def doubles(values) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def write_scfout(path: Path, model: Model, version: str) -> Path:
    """Write ``model`` in the 3.8 or 3.9 binary layout."""
    natoms, table = len(model.species), model.neighbours()
    cells = [(0, 0, 0)] + sorted({cell for row in table for _, cell in row} - {(0, 0, 0)})
    order_max = 2
    raw_spin = model.spin + (12 if version == "3.9" else 0)
    out = [ints([natoms, raw_spin, natoms, 0, 0, len(cells) - 1])]
    if version == "3.9":
        out.append(ints([order_max]))
    out.append(doubles([[0.0, *(np.array(c) @ model.tv)] for c in cells]))
    out.append(ints([[0, *c] for c in cells]))
    out += [ints(model.orbitals), ints([len(row) - 1 for row in table])]
    out += [ints([j + 1 for j, _ in row]) for row in table]
    out += [ints([cells.index(c) for _, c in row]) for row in table]
    reciprocal = 2 * np.pi * np.linalg.inv(model.tv).T
    out += [doubles([[0.0, *v] for v in model.tv]), doubles([[0.0, *v] for v in reciprocal])]
    out.append(doubles([[0.0, *(f @ model.tv)] for f in model.frac]))
    order = [(*cell, i, j) for i, row in enumerate(table) for j, cell in row]

    def blocks(matrix: dict) -> bytes:
        return b"".join(doubles(matrix[key]) for key in order)

    out += [blocks(m) for m in model.h] + [blocks(m) for m in model.ih] + [blocks(model.s)]
    garbage = {key: np.full_like(block, 7.0) for key, block in model.s.items()}  # skipped sections
    out += [blocks(garbage)] * (3 * (order_max if version == "3.9" else 1))
    out += [blocks(garbage)] * (3 if version == "3.9" else 0)
    out += [blocks(garbage)] * (model.spin + 1) + [blocks(garbage)] * (2 if version == "3.9" else 0)
    out += [ints([1]), doubles([model.chemp, 300.0, 0, 0, 0, 0, 0, 0, model.valence, 0.0])]
    lines = input_lines(model)
    out += [ints([len(lines)])] + [line.encode().ljust(INPUT_LINE_BYTES, b"\0") for line in lines]
    path.write_bytes(b"".join(out))
    return path


def input_lines(model: Model) -> list[str]:
    lines = ["System.Name  model", f"Species.Number {len(model.bases)}", "<Definition.of.Atomic.Species"]
    lines += [f"  {el}  {basis}  {el}_PBE19" for el, basis in model.bases.items()]
    lines += ["Definition.of.Atomic.Species>", f"Atoms.Number {len(model.species)}"]
    lines += ["Atoms.SpeciesAndCoordinates.Unit FRAC", "<Atoms.SpeciesAndCoordinates"]
    lines += [f" {n + 1} {el} {f[0]} {f[1]} {f[2]} 2.0 2.0" for n, (el, f) in enumerate(zip(model.species, model.frac))]
    return lines + ["Atoms.SpeciesAndCoordinates>"]


def expected_blocks(model: Model) -> dict:
    """The DeepH blocks (eV, standard order, spin-major) of a model."""
    shells = [basis_shells(model.bases[el]) for el in model.species]
    result = {}
    for key in model.s:
        if model.spin == 0:
            block = model.h[0][key]
        elif model.spin == 1:
            zero = np.zeros_like(model.h[0][key])
            block = np.block([[model.h[0][key], zero], [zero, model.h[1][key]]])
        else:
            ud = model.h[2][key] + 1j * (model.h[3][key] + model.ih[2][key])
            partner = (-key[0], -key[1], -key[2], key[4], key[3])
            du = (model.h[2][partner] + 1j * (model.h[3][partner] + model.ih[2][partner])).conj().T
            uu, dd = model.h[0][key] + 1j * model.ih[0][key], model.h[1][key] + 1j * model.ih[1][key]
            block = np.block([[uu, ud], [du, dd]])
        result[key] = to_standard(block, "openmx", shells[key[3]], shells[key[4]]) * OPENMX_HARTREE_TO_EV
    return result


# ------------------------------------------------------------------------------------------------------------
# Real files
# ------------------------------------------------------------------------------------------------------------
def test_fe_scfout_consumes_exactly_the_described_bytes(fe: Path, fe_scfout: ScfOut):
    size = (fe / "fe.scfout").stat().st_size
    ranges = sorted(fe_scfout.sections.values())
    assert ranges[0][0] == 0 and ranges[-1][1] == size == 4_012_084
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), "sections leave gaps or overlap"
    assert fe_scfout.sections["tail"] == (size, size) and fe_scfout.tail == ""
    assert (fe_scfout.version, fe_scfout.spin, fe_scfout.natoms, fe_scfout.order_max) == ("3.9", 1, 2, 1)
    assert len(fe_scfout.cell_indices) == 343 and [len(n) - 1 for n in fe_scfout.neighbours] == [112, 112]
    pairs = fe_scfout.pairs
    assert len(pairs) == 226 and len({tuple(r) for r in pairs[:, :3]}) == 87
    assert fe_scfout.valence_electrons == 28.0 and fe_scfout.total_spin_s == pytest.approx(2.14, abs=5e-3)
    assert list(fe_scfout.orbitals_per_atom) == [13, 13]


def test_fe_chemical_potential_equals_fe_out(fe: Path, fe_scfout: ScfOut):
    out = read_openmx_out(fe / "fe.out")
    assert fe_scfout.chemical_potential == pytest.approx(out.chemical_potential, abs=1e-11)
    assert out.chemical_potential == -0.202788386382
    assert out.version == "3.9.9" and out.scf_converged and len(out.scf_band_energies) == 26
    assert out.species == ["Fe", "Fe"] and out.number_of_states == pytest.approx(28.0)


def test_fe_embedded_input_equals_dat(fe: Path, fe_scfout: ScfOut):
    dat = read_openmx_dat(fe / "Febcc.dat")
    embedded = fe_scfout.input
    assert embedded.species() == dat.species() == {"Fe": ("Fe6.0S-s2p2d1", "Fe_PBE19S")}
    assert embedded.species_shells() == {"Fe": [0, 0, 1, 1, 2]}
    assert embedded.atom_species() == ["Fe", "Fe"]
    np.testing.assert_allclose(embedded.unit_vectors(), np.eye(3) * 2.7839)
    np.testing.assert_allclose(fe_scfout.lattice * OPENMX_BOHR_TO_ANGSTROM, np.eye(3) * 2.7839, atol=1e-9)
    assert dat.get("scf.SpinPolarization") == "on" and dat.get("SCF.CRITERION") == "1.0e-9"


def test_fe_to_deeph_spinful_block_diagonal_hermitian(fe: Path, fe_scfout: ScfOut):
    structure = openmx_to_deeph(fe)
    h, s = structure.hamiltonian, structure.overlap
    assert structure.spinful and h.is_complex and not s.is_complex
    assert structure.species == ["Fe", "Fe"] and structure.elements_orbital_map == {"Fe": [0, 0, 1, 1, 2]}
    assert structure.fermi_energy_eV == fe_scfout.chemical_potential * OPENMX_HARTREE_TO_EV
    assert structure.occupation == 28.0
    np.testing.assert_allclose(structure.positions[1], [1.39195] * 3, atol=1e-9)
    assert np.array_equal(h.atom_pairs, s.atom_pairs) and len(h) == 226
    assert set(h.index) == {tuple(int(x) for x in row) for row in fe_scfout.pairs}
    shells = [0, 0, 1, 1, 2]
    for n, key in enumerate(tuple(int(x) for x in row) for row in fe_scfout.pairs):
        block = h[key]
        assert block.shape == (26, 26) and not np.any(block[:13, 13:]) and not np.any(block[13:, :13])
        raw = from_standard(block, "openmx", shells, shells) / OPENMX_HARTREE_TO_EV
        np.testing.assert_allclose(raw[:13, :13].real, fe_scfout.hks[0][n], rtol=1e-14, atol=0)
        np.testing.assert_allclose(raw[13:, 13:].real, fe_scfout.hks[1][n], rtol=1e-14, atol=0)
    # The file itself is Hermitian to 1.3e-9 Ha; the conversion (a signed permutation) must add nothing to that.
    raw_error = max(
        float(np.abs(hks[n] - hks[m].T).max())
        for hks in fe_scfout.hks
        for n, m in _partners(fe_scfout.pairs)
    )
    error = h.hermiticity_error()
    assert error == pytest.approx(raw_error * OPENMX_HARTREE_TO_EV, rel=1e-9), f"{error=} eV, {raw_error=} Ha"
    assert error <= 5e-8, f"H is Hermitian only to {error:.3e} eV"
    assert s.hermiticity_error() <= 1e-9


def _partners(pairs: np.ndarray) -> list[tuple[int, int]]:
    index = {tuple(int(x) for x in row): n for n, row in enumerate(pairs)}
    return [(n, index[(-rx, -ry, -rz, j, i)]) for (rx, ry, rz, i, j), n in index.items()]


def test_mote2_out_species_and_positions_match_deeph_reference(dft_fixtures: Path):
    folder = dft_fixtures / MOTE2
    out = read_openmx_out(folder / "openmx.out")
    lattice, species, positions = parse_poscar((folder / "deeph_ref" / "POSCAR").read_text())
    assert out.species == species == ["Te", "Te", "Mo"]
    assert out.input.species_shells() == {"Mo": [0, 0, 0, 1, 1, 2, 2], "Te": [0, 0, 0, 1, 1, 2, 2]}
    assert out.input.species_elements() == {"Mo": "Mo", "Te": "Te"}
    np.testing.assert_allclose(out.cell, lattice, atol=1e-6)
    np.testing.assert_allclose(out.positions, positions, atol=1e-6)
    assert out.chemical_potential * OPENMX_HARTREE_TO_EV == pytest.approx(-4.1934752874697425, abs=1e-12)
    assert out.scf_converged and out.number_of_states == pytest.approx(46.0)
    dat = read_openmx_dat(folder / "openmx_in.dat")
    assert dat.atom_species() == ["Te", "Te", "Mo"] and dat.species_shells() == out.input.species_shells()


# ------------------------------------------------------------------------------------------------------------
# Synthetic files
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["3.8", "3.9"])
@pytest.mark.parametrize("spin", [0, 1, 3])
def test_synthetic_scfout_round_trips(tmp_path: Path, version: str, spin: int):
    model = make_model(["C", "C", "H"], spin, seed=spin)
    path = write_scfout(tmp_path / "model.scfout", model, version)
    scf = read_scfout(path)
    assert (scf.version, scf.spin, scf.natoms) == (version, spin, 3)
    assert max(stop for _, stop in scf.sections.values()) == path.stat().st_size
    keys = [tuple(int(x) for x in row) for row in scf.pairs]
    assert set(keys) == set(model.s)
    for n, key in enumerate(keys):
        assert np.array_equal(scf.olp[n], model.s[key])
        for component in range(len(model.h)):
            assert np.array_equal(scf.hks[component][n], model.h[component][key])
    structure = openmx_to_deeph(path)
    assert structure.spinful == (spin != 0) and structure.species == ["C", "C", "H"]
    assert structure.elements_orbital_map == {"C": [0, 1], "H": [0, 0]}
    assert structure.occupation == 9.0 and structure.fermi_energy_eV == -0.15 * OPENMX_HARTREE_TO_EV
    np.testing.assert_allclose(structure.lattice, model.tv * OPENMX_BOHR_TO_ANGSTROM, rtol=1e-15)
    np.testing.assert_allclose(structure.positions, model.frac @ model.tv * OPENMX_BOHR_TO_ANGSTROM, rtol=1e-14)
    expected = expected_blocks(model)
    worst = max(float(np.abs(structure.hamiltonian[key] - block).max()) for key, block in expected.items())
    assert worst <= 1e-12, f"max |ΔH| = {worst:.3e} eV"
    assert structure.hamiltonian.hermiticity_error() <= 1e-12
    if spin == 3:  # the hand-made spinful H must come back: proves the Hks/iHks bookkeeping
        shells = {0: [0, 1], 1: [0, 1], 2: [0, 0]}
        for key, block in model.spinful.items():
            want = to_standard(block, "openmx", shells[key[3]], shells[key[4]]) * OPENMX_HARTREE_TO_EV
            np.testing.assert_allclose(structure.hamiltonian[key], want, atol=1e-12)


def test_atoms_not_grouped_by_element_raise(tmp_path: Path):
    path = write_scfout(tmp_path / "mixed.scfout", make_model(["C", "H", "C"], 0), "3.8")
    read_scfout(path)  # the file itself is fine
    with pytest.raises(OpenMXFormatError, match="grouped by element"):
        openmx_to_deeph(path)


def test_format_error_is_a_deeph_value_error():
    assert issubclass(OpenMXFormatError, DeepHFormatError) and issubclass(OpenMXFormatError, ValueError)
    with pytest.raises(OpenMXFormatError, match="shells of basis"):
        basis_shells("Fe6.0S")


def test_trailing_garbage_and_wrong_version_raise(tmp_path: Path):
    path = write_scfout(tmp_path / "m.scfout", make_model(["C", "H"], 1), "3.9")
    data = path.read_bytes()
    (tmp_path / "tail.scfout").write_bytes(data + b"\x00\x01\x02")
    with pytest.raises(OpenMXFormatError, match="unexpected binary bytes"):
        read_scfout(tmp_path / "tail.scfout")
    (tmp_path / "text.scfout").write_bytes(data + b"\n  This calculation was performed by OpenMX Ver. 3.9.9\n")
    assert "OpenMX Ver." in read_scfout(tmp_path / "text.scfout").tail
    (tmp_path / "version.scfout").write_bytes(data[:4] + np.int32(4 * 2 + 1).tobytes() + data[8:])
    with pytest.raises(OpenMXFormatError, match="SpinP_switch 9"):
        read_scfout(tmp_path / "version.scfout")


# ------------------------------------------------------------------------------------------------------------
# Truncated and corrupted files
# ------------------------------------------------------------------------------------------------------------
def _timed(reader, path: Path):
    start = time.perf_counter()
    try:
        return reader(path)
    finally:
        assert time.perf_counter() - start < PARSE_SECONDS, f"{reader.__name__} took too long on {path.name}"


def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        names = [f.name for f in dataclasses.fields(a) if f.name not in ("path", "source")]
        return all(_same(getattr(a, name), getattr(b, name)) for name in names)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize(
    ("relative", "reader"),
    [(f"{FE}/fe.scfout", read_scfout), (f"{FE}/fe.out", read_openmx_out), (f"{MOTE2}/openmx.out", read_openmx_out)],
)
def test_truncated_files_raise(dft_fixtures: Path, tmp_path: Path, relative: str, reader):
    source = dft_fixtures / relative
    data = source.read_bytes()
    reference = reader(source)
    rng = random.Random(relative)
    cuts = [0, 3, 25, len(data) - 1] + [rng.randrange(len(data)) for _ in range(8)]
    for cut in cuts:
        path = tmp_path / f"cut{cut}{source.suffix}"
        path.write_bytes(data[:cut])
        try:
            result = _timed(reader, path)
        except OpenMXFormatError as exc:
            assert str(path) in str(exc)
            continue
        assert _same(result, reference), f"cut at {cut} of {len(data)} parsed to a different result"


@pytest.mark.parametrize(
    ("relative", "reader"),
    [(f"{FE}/fe.scfout", read_scfout), (f"{FE}/fe.out", read_openmx_out), (f"{MOTE2}/openmx.out", read_openmx_out)],
)
def test_flipped_bytes_raise_or_parse(dft_fixtures: Path, tmp_path: Path, relative: str, reader):
    """A flip must give our format error or a parse; where the reader skips the bytes, the very same parse."""
    source = dft_fixtures / relative
    data = source.read_bytes()
    reference = reader(source)
    sections = reference.sections if isinstance(reference, ScfOut) else {}
    rng = random.Random(relative + "flip")
    header_end = min(len(data), 20_000)  # the binary's tables: most flips there must be caught
    offsets = [rng.randrange(header_end) for _ in range(8)] + [rng.randrange(len(data)) for _ in range(8)]
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{offset}{source.suffix}"
        path.write_bytes(bytes(flipped))
        try:
            result = _timed(reader, path)
        except OpenMXFormatError:
            continue
        if any(start <= offset < stop for name, (start, stop) in sections.items() if name in IGNORED_SECTIONS):
            assert _same(result, reference), f"flip at {offset} in a skipped section changed the result"

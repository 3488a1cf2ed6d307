"""OpenMX readers: the ``.scfout`` binary (3.8 and 3.9 layouts), the ``.out`` text and the ``.dat`` input.

:func:`openmx_to_deeph` turns a ``.scfout`` into a :class:`DeepHStructure` (eV, Å, standard orbital order), the way
DeepH-dock converts OpenMX data: H and S on the neighbour pairs of the overlap, blocks ⟨i,0|X|j,R⟩ with R the integer
cell ``atv_ijk``, the OpenMX constants of :mod:`aiida_deeph.io.units`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from .conventions import to_standard
from .deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure, read_text
from .units import OPENMX_BOHR_TO_ANGSTROM, OPENMX_HARTREE_TO_EV

INT = np.dtype("<i4")
DOUBLE = np.dtype("<f8")
INPUT_LINE_BYTES = 256
TEXT_BYTES = bytes([9, 10, 13, *range(32, 127)])  # printable ASCII and tab/newline/return
SHELL_LETTERS = "spdfghi"
# |atv − atv_ijk·tv| above this (Bohr) means the cell tables disagree, i.e. the file is corrupted.
CELL_SHIFT_TOLERANCE = 1e-6
DEFAULT_SCF_CRITERION = 1e-6  # Hartree, OpenMX's default scf.criterion


class OpenMXFormatError(DeepHFormatError):
    """An OpenMX file is missing, truncated, corrupted or describes something we cannot convert."""


# --------------------------------------------------------------------------------------------------------------
# Input files (.dat, the input echoed in .out, the input lines embedded in .scfout)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class OpenMXInput:
    """OpenMX input keywords and ``<Block ... Block>`` blocks; names are lower-cased (OpenMX ignores case)."""

    keywords: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, list[list[str]]] = field(default_factory=dict)
    source: str = "<input>"

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.keywords.get(key.lower(), default)

    def block(self, name: str) -> list[list[str]]:
        try:
            return self.blocks[name.lower()]
        except KeyError:
            raise OpenMXFormatError(f"{self.source}: no <{name} block") from None

    def species(self) -> dict[str, tuple[str, str]]:
        """Species label → (PAO basis string, VPS name), from ``<Definition.of.Atomic.Species``."""
        rows = self.block("Definition.of.Atomic.Species")
        if any(len(row) < 3 for row in rows):
            raise OpenMXFormatError(f"{self.source}: a Definition.of.Atomic.Species row has fewer than 3 fields")
        return {row[0]: (row[1], row[2]) for row in rows}

    def species_shells(self) -> dict[str, list[int]]:
        """Species label → l of each shell, from basis strings such as ``Fe6.0S-s2p2d1`` → [0, 0, 1, 1, 2]."""
        return {label: basis_shells(pao, self.source) for label, (pao, _) in self.species().items()}

    def species_elements(self) -> dict[str, str]:
        """Species label → chemical element (the label when it is a symbol, else its VPS name's prefix)."""
        return {label: _element_of(label, vps, self.source) for label, (_, vps) in self.species().items()}

    def atom_species(self) -> list[str]:
        """Species label of each atom, in ``<Atoms.SpeciesAndCoordinates`` order."""
        rows = self.block("Atoms.SpeciesAndCoordinates")
        if any(len(row) < 5 for row in rows):
            raise OpenMXFormatError(f"{self.source}: an Atoms.SpeciesAndCoordinates row has fewer than 5 fields")
        return [row[1] for row in rows]

    def unit_vectors(self) -> np.ndarray:
        """Lattice vectors as rows, Å (``Atoms.UnitVectors.Unit`` Ang or AU)."""
        rows = self.block("Atoms.UnitVectors")
        try:
            cell = np.array([[float(x) for x in row[:3]] for row in rows])
        except ValueError as exc:
            raise OpenMXFormatError(f"{self.source}: bad Atoms.UnitVectors ({exc})") from exc
        if cell.shape != (3, 3):
            raise OpenMXFormatError(f"{self.source}: Atoms.UnitVectors must have 3 rows of 3 numbers")
        unit = (self.get("Atoms.UnitVectors.Unit") or "Ang").lower()
        return cell * OPENMX_BOHR_TO_ANGSTROM if unit == "au" else cell


def parse_openmx_input(lines: list[str], source: str = "<input>") -> OpenMXInput:
    """Parse OpenMX input lines: ``key value...`` pairs and ``<Name`` ... ``Name>`` blocks; ``#`` starts a comment."""
    result = OpenMXInput(source=source)
    block: str | None = None
    rows: list[list[str]] = []
    for raw in lines:
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        head = tokens[0]
        if block is not None:
            if head.lower() == block + ">":
                result.blocks[block] = rows
                block = None
            else:
                rows.append(tokens)
        elif head.startswith("<") and len(head) > 1:
            block, rows = head[1:].lower(), []
        else:
            result.keywords.setdefault(head.lower(), " ".join(tokens[1:]))
    if block is not None:
        raise OpenMXFormatError(f"{source}: block <{block} is not closed")
    return result


def read_openmx_dat(path: str | os.PathLike) -> OpenMXInput:
    """Read an OpenMX input ``.dat`` file."""
    path = Path(path)
    return parse_openmx_input(read_text(path, OpenMXFormatError).splitlines(), str(path))


def basis_shells(pao: str, source: str = "<input>") -> list[int]:
    """l of each shell of a PAO basis string: ``Fe6.0S-s2p2d1`` → [0, 0, 1, 1, 2]."""
    spec = pao.rsplit("-", 1)[-1].lower()
    if not re.fullmatch(r"([spdfghi][0-9]{1,2})+", spec):
        raise OpenMXFormatError(f"{source}: cannot read the shells of basis {pao!r} (expected e.g. Fe6.0S-s2p2d1)")
    counts = re.findall(r"([a-z])(\d+)", spec)
    return [SHELL_LETTERS.index(letter) for letter, count in counts for _ in range(int(count))]


def _element_of(label: str, vps: str, source: str) -> str:
    for candidate in (label, re.match(r"[A-Za-z]*", label)[0], vps.split("_")[0]):
        if candidate in chemical_symbols[1:]:
            return candidate
    raise OpenMXFormatError(f"{source}: cannot tell the element of species {label!r} (VPS {vps!r})")


# --------------------------------------------------------------------------------------------------------------
# .out text
# --------------------------------------------------------------------------------------------------------------
@dataclass
class OpenMXOut:
    """What aiida-deeph needs from an OpenMX ``.out`` file (energies in Hartree, as printed)."""

    version: str
    input: OpenMXInput  # the input file echoed at the top
    chemical_potential: float  # Hartree
    species: list[str]  # species label per atom, final structure
    fractional_coordinates: np.ndarray  # (N, 3), final structure
    scf_band_energies: list[float]  # Uele per SCF step of the last MD step, Hartree
    scf_converged: bool
    number_of_states: float | None = None

    @property
    def cell(self) -> np.ndarray:
        """Lattice vectors (rows, Å) from the echoed input."""
        return self.input.unit_vectors()

    @property
    def positions(self) -> np.ndarray:
        """Cartesian positions (Å) of the final structure, in the input cell."""
        return self.fractional_coordinates @ self.cell


def read_openmx_out(path: str | os.PathLike) -> OpenMXOut:
    """Read an OpenMX ``.out`` file (3.8/3.9): version, echoed input, ChemP, final structure, SCF convergence."""
    path = Path(path)
    lines = read_text(path, OpenMXFormatError).splitlines()
    version = _out_version(lines, path)
    if not any("Computational Time (second)" in line for line in lines):
        raise OpenMXFormatError(f"{path}: no 'Computational Time' section; the run did not finish or the file is cut")
    echo = parse_openmx_input(_echoed_input(lines, path), str(path))
    species, fractional = _final_structure(lines, path)
    band_energies = _scf_band_energies(lines, path)
    criterion = _float_or(echo.get("scf.criterion"), DEFAULT_SCF_CRITERION)
    converged = len(band_energies) >= 2 and abs(band_energies[-1] - band_energies[-2]) < criterion
    states = _last_value(lines, "Number of States", path, required=False)
    return OpenMXOut(
        version=version,
        input=echo,
        chemical_potential=_last_value(lines, "Chemical potential (Hartree)", path),
        species=species,
        fractional_coordinates=fractional,
        scf_band_energies=band_energies,
        scf_converged=converged,
        number_of_states=states,
    )


def _out_version(lines: list[str], path: Path) -> str:
    for line in lines[:20]:
        match = re.search(r"performed by OpenMX Ver\.\s*(\S+)", line)
        if match:
            return match[1]
    raise OpenMXFormatError(f"{path}: no 'performed by OpenMX Ver.' banner; not an OpenMX .out file")


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 10 and set(stripped) == {"*"}


def _echoed_input(lines: list[str], path: Path) -> list[str]:
    """The input file echoed between the opening banner and the next row of stars."""
    rules = [n for n, line in enumerate(lines) if _is_rule(line)]
    closing = [n for a, n in zip(rules, rules[1:]) if n == a + 1 and n > 2]  # second star row of a banner pair
    if not closing:
        raise OpenMXFormatError(f"{path}: opening banner not found")
    start = closing[0] + 1
    stop = next((n for n in rules if n > start), None)
    if stop is None:
        raise OpenMXFormatError(f"{path}: the echoed input is not terminated")
    return lines[start:stop]


def _final_structure(lines: list[str], path: Path) -> tuple[list[str], np.ndarray]:
    titles = [n for n, line in enumerate(lines) if "Fractional coordinates of the final structure" in line]
    if not titles:
        raise OpenMXFormatError(f"{path}: no 'Fractional coordinates of the final structure' section")
    species, coords = [], []
    for line in lines[titles[-1] + 4:]:  # title, two star rows, a blank line
        tokens = line.split()
        if len(tokens) != 5 or not tokens[0].isdigit():
            break
        if int(tokens[0]) != len(species) + 1:
            raise OpenMXFormatError(f"{path}: final-structure atoms are not numbered 1, 2, ... ({line.strip()!r})")
        species.append(tokens[1])
        coords.append([_float(x, path) for x in tokens[2:]])
    if not species:
        raise OpenMXFormatError(f"{path}: the final-structure section lists no atoms")
    return species, np.array(coords)


def _scf_band_energies(lines: list[str], path: Path) -> list[float]:
    energies: list[float] = []
    for line in lines:
        if "SCF history at MD" in line:
            energies = []  # keep only the last MD step
        match = re.match(r"\s*SCF=\s*\d+\s+NormRD=\s*\S+\s+Uele=\s*(\S+)", line)
        if match:
            energies.append(_float(match[1], path))
    return energies


def _last_value(lines: list[str], label: str, path: Path, required: bool = True) -> float | None:
    """The first number after ``label`` (and an optional ``=``) on the last line containing it."""
    for line in reversed(lines):
        if label in line:
            value = line.split(label, 1)[1].replace("=", " ").split()
            return _float(value[0] if value else "", path)
    if required:
        raise OpenMXFormatError(f"{path}: no {label!r} line")
    return None


def _float(text: str, path: Path) -> float:
    try:
        return float(text)
    except ValueError:
        raise OpenMXFormatError(f"{path}: {text!r} is not a number") from None


def _float_or(text: str | None, default: float) -> float:
    try:
        return float(text.split()[0]) if text else default
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------------------------
# .scfout binary
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ScfOut:
    """Content of an OpenMX ``.scfout`` (atomic units: Hartree, Bohr). Atoms and neighbours are 0-based.

    ``hks[s][p]`` is the block of spin component ``s`` for pair ``p`` of :attr:`pairs`: a (TNO_i, TNO_j) matrix
    ⟨i,0|H|j,R⟩ in OpenMX orbital order; ``ihks`` the imaginary parts (non-collinear only), ``olp`` the overlap.
    ``sections`` maps every section name to its (start, stop) byte range; the ranges tile the whole file.
    """

    path: Path
    version: str  # "3.8" or "3.9"
    spin: int  # SpinP_switch: 0 none, 1 collinear, 3 non-collinear
    natoms: int
    order_max: int
    cell_shifts: np.ndarray  # atv, (TC+1, 3) Cartesian, Bohr
    cell_indices: np.ndarray  # atv_ijk, (TC+1, 3) integer cells; row 0 (home cell) is (0, 0, 0)
    orbitals_per_atom: np.ndarray  # Total_NumOrbs, (N,)
    neighbours: list[np.ndarray]  # natn, per atom, 0-based, neighbours[i][0] == i
    neighbour_cells: list[np.ndarray]  # ncn, per atom, index into cell_indices
    lattice: np.ndarray  # tv, rows, Bohr
    reciprocal_lattice: np.ndarray  # rtv, rows, 1/Bohr
    positions: np.ndarray  # Gxyz, (N, 3) Cartesian, Bohr
    hks: list[list[np.ndarray]]
    ihks: list[list[np.ndarray]]
    olp: list[np.ndarray]
    solver: int
    chemical_potential: float  # Hartree
    electronic_temperature: float  # K
    dipole_core: np.ndarray
    dipole_background: np.ndarray
    valence_electrons: float
    total_spin_s: float
    input_lines: list[str]
    sections: dict[str, tuple[int, int]]
    tail: str = ""  # text appended after the input lines (DeepH workflows append the .out)

    @property
    def pairs(self) -> np.ndarray:
        """(P, 5) rows [Rx, Ry, Rz, i, j] in block order."""
        rows = [
            [*self.cell_indices[cell], i, j]
            for i in range(self.natoms)
            for j, cell in zip(self.neighbours[i], self.neighbour_cells[i])
        ]
        return np.array(rows, dtype=np.int64).reshape(-1, 5)

    @property
    def input(self) -> OpenMXInput:
        return parse_openmx_input(self.input_lines, f"{self.path} (embedded input)")


class _Cursor:
    """Bounds-checked little-endian reader that records the byte range of each section."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.offset = data, path, 0
        self.sections: dict[str, tuple[int, int]] = {}

    def error(self, message: str) -> OpenMXFormatError:
        return OpenMXFormatError(f"{self.path}: {message} (at byte {self.offset} of {len(self.data)})")

    def take(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        size = int(count) * dtype.itemsize
        if count < 0 or self.offset + size > len(self.data):
            raise self.error(f"file ends inside {what} ({count} × {dtype.itemsize} bytes needed)")
        array = np.frombuffer(self.data, dtype, int(count), self.offset)
        self.offset += size
        return array

    def section(self, name: str, dtype: np.dtype, count: int) -> np.ndarray:
        start = self.offset
        array = self.take(dtype, count, name)
        if dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise self.error(f"non-finite numbers in {name}")
        self.sections[name] = (start, self.offset)
        return array


def read_scfout(path: str | os.PathLike) -> ScfOut:
    """Read an OpenMX ``.scfout`` binary, 3.8 or 3.9 layout (told apart by the version bits of SpinP_switch)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OpenMXFormatError(f"{path}: cannot read ({exc})") from exc
    cur = _Cursor(data, path)
    header = cur.section("header", INT, 6)
    natoms, raw_spin, tcpycell = int(header[0]), int(header[1]), int(header[5])
    version = {0: "3.8", 3: "3.9"}.get(raw_spin >> 2)
    spin = raw_spin & 3
    if version is None or raw_spin < 0 or spin == 2:
        raise cur.error(f"SpinP_switch {raw_spin} is neither a 3.8 (0/1/3) nor a 3.9 (12 + 0/1/3) value")
    order_max = int(cur.section("order_max", INT, 1)[0]) if version == "3.9" else 1
    if natoms <= 0 or tcpycell < 0 or order_max < 1:
        raise cur.error(f"bad header: atomnum {natoms}, TCpyCell {tcpycell}, order_max {order_max}")
    cells = _read_cells(cur, tcpycell)
    orbitals = cur.section("Total_NumOrbs", INT, natoms).astype(np.int64)
    fnan = cur.section("FNAN", INT, natoms).astype(np.int64)
    if np.any(orbitals <= 0) or np.any(fnan < 0):
        raise cur.error("non-positive orbital count or negative neighbour count")
    neighbours, neighbour_cells = _read_neighbours(cur, fnan, tcpycell)
    lattice = cur.section("tv", DOUBLE, 12).reshape(3, 4)[:, 1:]
    reciprocal = cur.section("rtv", DOUBLE, 12).reshape(3, 4)[:, 1:]
    positions = cur.section("Gxyz", DOUBLE, 4 * natoms).reshape(natoms, 4)[:, 1:]
    _check_cell_shifts(cur, cells, lattice)
    blocks = _BlockReader(cur, orbitals, neighbours)
    hks = [blocks.read(f"Hks[{s}]") for s in range(spin + 1)]
    ihks = [blocks.read(f"iHks[{s}]") for s in range(3)] if spin == 3 else []
    olp = blocks.read("OLP")
    blocks.skip("OLPpo", 3 * order_max)
    if version == "3.9":
        blocks.skip("OLPmo", 3)
    blocks.skip("DM", spin + 1)
    if version == "3.9":
        blocks.skip("iDM", 2)
    solver = int(cur.section("Solver", INT, 1)[0])
    scalars = cur.section("ChemP..Total_SpinS", DOUBLE, 10)
    input_lines = _read_input_lines(cur)
    tail = _read_tail(cur)
    return ScfOut(
        path=path, version=version, spin=spin, natoms=natoms, order_max=order_max,
        cell_shifts=cells[0], cell_indices=cells[1], orbitals_per_atom=orbitals,
        neighbours=neighbours, neighbour_cells=neighbour_cells,
        lattice=lattice.copy(), reciprocal_lattice=reciprocal.copy(), positions=positions.copy(),
        hks=hks, ihks=ihks, olp=olp, solver=solver,
        chemical_potential=float(scalars[0]), electronic_temperature=float(scalars[1]),
        dipole_core=scalars[2:5].copy(), dipole_background=scalars[5:8].copy(),
        valence_electrons=float(scalars[8]), total_spin_s=float(scalars[9]),
        input_lines=input_lines, sections=cur.sections, tail=tail,
    )


def _read_cells(cur: _Cursor, tcpycell: int) -> tuple[np.ndarray, np.ndarray]:
    shifts = cur.section("atv", DOUBLE, 4 * (tcpycell + 1)).reshape(-1, 4)[:, 1:].copy()
    indices = cur.section("atv_ijk", INT, 4 * (tcpycell + 1)).reshape(-1, 4)[:, 1:].astype(np.int64)
    indices[0] = 0  # OpenMX leaves the home-cell row unset
    shifts[0] = 0.0
    return shifts, indices


def _read_neighbours(cur: _Cursor, fnan: np.ndarray, tcpycell: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    natoms = len(fnan)
    counts = fnan + 1
    natn = np.split(cur.section("natn", INT, int(counts.sum())).astype(np.int64) - 1, np.cumsum(counts)[:-1])
    ncn = np.split(cur.section("ncn", INT, int(counts.sum())).astype(np.int64), np.cumsum(counts)[:-1])
    for i in range(natoms):
        if natn[i][0] != i or ncn[i][0] != 0:
            raise cur.error(f"neighbour 0 of atom {i + 1} is not the atom itself in the home cell")
        if np.any((natn[i] < 0) | (natn[i] >= natoms)) or np.any((ncn[i] < 0) | (ncn[i] > tcpycell)):
            raise cur.error(f"neighbour table of atom {i + 1} points outside the atoms or cells")
        if len({(a, c) for a, c in zip(natn[i].tolist(), ncn[i].tolist())}) != len(natn[i]):
            raise cur.error(f"neighbour table of atom {i + 1} lists a neighbour twice")
    return natn, ncn


def _check_cell_shifts(cur: _Cursor, cells: tuple[np.ndarray, np.ndarray], lattice: np.ndarray) -> None:
    """atv must be atv_ijk · tv: the two cell tables are written independently, so this catches corruption."""
    shifts, indices = cells
    mismatch = np.max(np.abs(shifts - indices @ lattice), initial=0.0)
    if mismatch > CELL_SHIFT_TOLERANCE * max(1.0, float(np.abs(shifts).max())):
        raise cur.error("Cartesian cell shifts atv disagree with the integer cells atv_ijk and tv")


class _BlockReader:
    """Reads or skips ``blocks(X)`` sections: per atom i, per neighbour, a row-major (TNO_i, TNO_natn) matrix."""

    def __init__(self, cur: _Cursor, orbitals: np.ndarray, neighbours: list[np.ndarray]) -> None:
        self.cur = cur
        self.shapes = [(int(orbitals[i]), int(orbitals[j])) for i, row in enumerate(neighbours) for j in row]
        self.bounds = np.cumsum([0] + [a * b for a, b in self.shapes])
        self.total = int(self.bounds[-1])

    def read(self, name: str) -> list[np.ndarray]:
        flat = self.cur.section(name, DOUBLE, self.total)
        return [flat[self.bounds[n]:self.bounds[n + 1]].reshape(shape) for n, shape in enumerate(self.shapes)]

    def skip(self, name: str, count: int) -> None:
        start = self.cur.offset
        self.cur.take(DOUBLE, count * self.total, name)
        self.cur.sections[name] = (start, self.cur.offset)


def _read_input_lines(cur: _Cursor) -> list[str]:
    count = int(cur.section("num_lines", INT, 1)[0])
    if count < 0:
        raise cur.error(f"negative number of input lines ({count})")
    start = cur.offset
    raw = cur.take(np.dtype(np.uint8), count * INPUT_LINE_BYTES, "embedded input lines").tobytes()
    cur.sections["input_lines"] = (start, cur.offset)
    lines = []
    for n in range(count):
        line = raw[n * INPUT_LINE_BYTES:(n + 1) * INPUT_LINE_BYTES].split(b"\0", 1)[0]
        if not _is_text(line):
            raise cur.error(f"embedded input line {n + 1} is not text")
        lines.append(line.decode("ascii").rstrip("\n"))
    return lines


def _read_tail(cur: _Cursor) -> str:
    tail = cur.data[cur.offset:]
    if not _is_text(tail):
        raise cur.error(f"{len(tail)} unexpected binary bytes after the embedded input lines")
    cur.sections["tail"] = (cur.offset, len(cur.data))
    return tail.decode("ascii")


def _is_text(data: bytes) -> bool:
    return not data.translate(None, TEXT_BYTES)


# --------------------------------------------------------------------------------------------------------------
# Conversion to the DeepH format
# --------------------------------------------------------------------------------------------------------------
def find_scfout(folder_or_scfout: str | os.PathLike) -> Path:
    """The ``.scfout`` itself, or the only ``*.scfout`` inside a folder."""
    path = Path(folder_or_scfout)
    if not path.is_dir():
        return path
    found = sorted(path.glob("*.scfout"))
    if len(found) != 1:
        raise OpenMXFormatError(f"{path}: expected exactly one *.scfout, found {len(found)}")
    return found[0]


def openmx_to_deeph(folder_or_scfout: str | os.PathLike) -> DeepHStructure:
    """Convert an OpenMX ``.scfout`` (or a folder holding one) to the DeepH format: eV, Å, standard orbital order."""
    scf = read_scfout(find_scfout(folder_or_scfout))
    source = str(scf.path)
    inp = scf.input
    labels = inp.atom_species()
    if len(labels) != scf.natoms:
        raise OpenMXFormatError(f"{source}: the embedded input lists {len(labels)} atoms, the matrices {scf.natoms}")
    elements, shells = _element_shells(inp, labels, source)
    species = [elements[label] for label in labels]
    _check_grouped(species, source)
    atom_shells = [shells[el] for el in species]
    for i, (count, ls) in enumerate(zip(scf.orbitals_per_atom, atom_shells)):
        if count != sum(2 * l + 1 for l in ls):
            raise OpenMXFormatError(f"{source}: atom {i + 1} has {count} orbitals but its basis {ls} gives another")
    keys = [tuple(int(x) for x in row) for row in scf.pairs]
    if len(set(keys)) != len(keys):
        raise OpenMXFormatError(f"{source}: the neighbour tables list an atom pair twice")
    hamiltonian = _spin_blocks(scf, keys)
    h_blocks, s_blocks = {}, {}
    for n, key in enumerate(keys):
        i, j = key[3], key[4]
        h_blocks[key] = to_standard(hamiltonian[n], "openmx", atom_shells[i], atom_shells[j]) * OPENMX_HARTREE_TO_EV
        s_blocks[key] = to_standard(scf.olp[n], "openmx", atom_shells[i], atom_shells[j])
    return DeepHStructure(
        lattice=scf.lattice * OPENMX_BOHR_TO_ANGSTROM,
        species=species,
        positions=scf.positions * OPENMX_BOHR_TO_ANGSTROM,
        elements_orbital_map=shells,
        fermi_energy_eV=scf.chemical_potential * OPENMX_HARTREE_TO_EV,
        spinful=scf.spin != 0,
        hamiltonian=BlockMatrix.from_blocks(h_blocks),
        overlap=BlockMatrix.from_blocks(s_blocks),
        occupation=scf.valence_electrons,
    )


def _element_shells(inp: OpenMXInput, labels: list[str], source: str) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Species label → element, and element → shells (one basis per element, as DeepH requires)."""
    elements = inp.species_elements()
    species_shells = inp.species_shells()
    shells: dict[str, list[int]] = {}
    for label in dict.fromkeys(labels):
        if label not in elements:
            raise OpenMXFormatError(f"{source}: atom species {label!r} is not defined in Definition.of.Atomic.Species")
        element = elements[label]
        if shells.setdefault(element, species_shells[label]) != species_shells[label]:
            raise OpenMXFormatError(f"{source}: element {element} has two different bases; DeepH needs one per element")
    return elements, shells


def _check_grouped(species: list[str], source: str) -> None:
    seen: list[str] = []
    for element in species:
        if element in seen[:-1]:
            raise OpenMXFormatError(
                f"{source}: atoms are not grouped by element ({' '.join(species)}); DeepH needs contiguous elements, "
                "so reorder Atoms.SpeciesAndCoordinates"
            )
        if not seen or seen[-1] != element:
            seen.append(element)


def _spin_blocks(scf: ScfOut, keys: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Per pair: real H (spin 0), or complex spin-major [[H↑↑, H↑↓], [H↓↑, H↓↓]] (spin 1 block-diagonal, spin 3)."""
    if scf.spin == 0:
        return list(scf.hks[0])
    if scf.spin == 1:
        return [_spin_major(up, np.zeros_like(up), np.zeros_like(up), down) for up, down in zip(*scf.hks)]
    index = {key: n for n, key in enumerate(keys)}
    up_down = [h2 + 1j * (h3 + ih2) for h2, h3, ih2 in zip(scf.hks[2], scf.hks[3], scf.ihks[2])]
    blocks = []
    for n, (rx, ry, rz, i, j) in enumerate(keys):
        partner = index.get((-rx, -ry, -rz, j, i))
        if partner is None:
            raise OpenMXFormatError(f"{scf.path}: pair {(rx, ry, rz, i, j)} has no (−R, j, i) partner")
        up_up = scf.hks[0][n] + 1j * scf.ihks[0][n]
        down_down = scf.hks[1][n] + 1j * scf.ihks[1][n]
        blocks.append(_spin_major(up_up, up_down[n], up_down[partner].conj().T, down_down))
    return blocks


def _spin_major(uu: np.ndarray, ud: np.ndarray, du: np.ndarray, dd: np.ndarray) -> np.ndarray:
    return np.block([[uu, ud], [du, dd]]).astype(np.complex128)


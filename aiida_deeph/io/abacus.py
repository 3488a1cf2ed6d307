"""ABACUS readers: ``out_mat_hs2`` CSR matrices, ``running_*.log``, ``STRU``, ``INPUT``, ``KPT`` and ``.orb`` headers.

:func:`abacus_to_deeph` converts a calculation folder as ABACUS leaves it (INPUT, STRU, KPT, ``OUT.<suffix>/``) to a
:class:`DeepHStructure` the way DeepH-dock does: H in Rydberg → eV with ABACUS's own constant, the cell and positions
from the log (``latname`` other than ``none`` makes STRU's lattice unusable), only the overlap's atom pairs.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from scipy.sparse import csr_matrix

from .conventions import to_standard
from .deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure, read_text
from .units import ABACUS_BOHR_TO_ANGSTROM, ABACUS_RYDBERG_TO_EV

Cell = tuple[int, int, int]
SHELL_LETTERS = "SPDFGHI"
HAMILTONIAN_FILES = (("data-HR-sparse_SPIN0.csr", "data-HR-sparse_SPIN1.csr"), ("hrs1_nao.csr", "hrs2_nao.csr"))
OVERLAP_FILES = ("data-SR-sparse_SPIN0.csr", "srs1_nao.csr")
LOG_FILES = ("running_scf.log", "running_nscf.log")
ORBITAL_SEARCH_DEPTH = 3


class AbacusFormatError(DeepHFormatError):
    """An ABACUS file is missing, truncated, corrupted or describes something we cannot convert."""


def _strip_comment(line: str) -> str:
    return re.split(r"#|//", line, maxsplit=1)[0]


# --------------------------------------------------------------------------------------------------------------
# CSR matrices (out_mat_hs2)
# --------------------------------------------------------------------------------------------------------------
@dataclass
class AbacusCsr:
    """One operator X(R) from an ``out_mat_hs2`` file: ``matrices[R]`` is a (dim, dim) CSR matrix.

    Rows index the home-cell orbital, columns the orbital in cell R. Values as written (H in Ry); complex for
    nspin 4, where the basis index is 2·orbital + spin.
    """

    dimension: int
    matrices: dict[Cell, csr_matrix]
    step: int | None = None  # the STEP of the block kept (the last one), None when the file has no STEP line

    @property
    def is_complex(self) -> bool:
        return any(np.iscomplexobj(m.data) for m in self.matrices.values())


class _Lines:
    """Non-blank lines of a text file, with errors that name the file and line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = read_text(path, AbacusFormatError)
        self.size = len(text)
        self.lines = [(n + 1, line) for n, line in enumerate(text.splitlines()) if line.strip()]
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.lines)

    def peek(self) -> str:
        return self.lines[self.pos][1] if not self.done() else ""

    def next(self, what: str) -> str:
        if self.done():
            raise AbacusFormatError(f"{self.path}: file ends where {what} was expected")
        self.pos += 1
        return self.lines[self.pos - 1][1]

    def error(self, message: str) -> AbacusFormatError:
        line = self.lines[min(self.pos, len(self.lines)) - 1][0] if self.lines else 0
        return AbacusFormatError(f"{self.path}, line {line}: {message}")


def read_csr(path: str | os.PathLike) -> AbacusCsr:
    """Read ``data-{H,S}R-sparse_SPIN*.csr`` or ``{h,s}rs*_nao.csr``; of several ionic steps, the last is kept.

    Two layouts, told apart by the first line: ABACUS ≤ 3.10 (``STEP:`` optional, ``Matrix Dimension of ...``, one
    line per array) and the newer one (``--- Ionic Step n ---``, ``# ...`` comment headers, a unit-cell section,
    arrays wrapped over several lines after ``# CSR values`` / ``# CSR column indices`` / ``# CSR row pointers``).
    """
    lines = _Lines(Path(path))
    read_step = _read_nao_step if "Ionic Step" in lines.peek() else _read_legacy_step
    result = None
    while not lines.done():
        result = read_step(lines)
    if result is None:
        raise AbacusFormatError(f"{path}: empty file")
    return result


def _read_legacy_step(lines: _Lines) -> AbacusCsr:
    step = None
    if lines.peek().lstrip().startswith("STEP:"):
        step = _header_int(lines, lines.next("STEP:"), "STEP:")
    dimension = _header_int(lines, lines.next("'Matrix Dimension of'"), "Matrix Dimension of")
    count = _header_int(lines, lines.next("'Matrix number of'"), "Matrix number of")
    return _read_blocks(lines, dimension, count, step, _legacy_arrays)


def _read_nao_step(lines: _Lines) -> AbacusCsr:
    match = re.search(r"Ionic Step\s+(-?\d+)", lines.next("'--- Ionic Step n ---'"))
    if not match:
        raise lines.error("expected '--- Ionic Step n ---'")
    header: dict[str, int] = {}
    while "CSR Format" not in lines.peek():  # "<int> # <what>" lines, then the unit cell
        numbered = re.fullmatch(r"\s*(-?\d+)\s+#\s*(.*?)\s*", lines.next("the 'CSR Format' banner"))
        if numbered:
            header.setdefault(numbered[2].lower(), int(numbered[1]))
    while lines.peek().lstrip().startswith("#"):
        lines.next("the CSR banner")
    try:
        dimension, count = header["number of localized basis"], header["number of bravais lattice vector r"]
    except KeyError as exc:
        raise lines.error(f"header line '# {exc.args[0]}' is missing") from None
    return _read_blocks(lines, dimension, count, int(match[1]), _nao_arrays)


def _read_blocks(lines: _Lines, dimension: int, count: int, step: int | None, read_arrays) -> AbacusCsr:
    # a real matrix has a non-empty home-cell block, whose dimension + 1 row pointers the file must hold
    if dimension <= 0 or count < 0 or 2 * dimension > lines.size:
        raise lines.error(f"bad dimension {dimension} or block count {count} for a file of {lines.size} bytes")
    matrices: dict[Cell, csr_matrix] = {}
    for _ in range(count):
        cell, nnz = _block_header(lines, dimension)
        if cell in matrices:
            raise lines.error(f"cell {cell} appears twice")
        values, columns, pointers = read_arrays(lines, nnz, dimension)
        matrices[cell] = _csr(lines, values, columns, pointers, dimension)
    return AbacusCsr(dimension, matrices, step)


def _header_int(lines: _Lines, line: str, label: str) -> int:
    match = re.fullmatch(rf"\s*{re.escape(label)}.*?:?\s*(-?\d+)\s*", line)
    if not match:
        raise lines.error(f"expected '{label} ...: <int>', got {line.strip()[:80]!r}")
    return int(match[1])


def _block_header(lines: _Lines, dimension: int) -> tuple[Cell, int]:
    header = lines.next("an 'Rx Ry Rz nnz' line").split()
    if len(header) != 4 or not all(re.fullmatch(r"-?[0-9]+", t) for t in header):
        if len(header) == 3:
            raise lines.error("this is a position-matrix (rR) file, which read_csr does not read")
        raise lines.error(f"expected 'Rx Ry Rz nnz', got {' '.join(header)[:80]!r}")
    rx, ry, rz, nnz = (int(t) for t in header)
    if nnz < 0 or nnz > dimension * dimension:
        raise lines.error(f"impossible number of non-zeros {nnz} for dimension {dimension}")
    return (rx, ry, rz), nnz


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def _legacy_arrays(lines: _Lines, nnz: int, dimension: int) -> Arrays:
    """One line each of values, column indices, row pointers; nothing at all when nnz = 0."""
    if nnz == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(dimension + 1, np.int64)
    values = _parse_values(lines, lines.next("the values line"), nnz)
    columns = _parse_ints(lines, lines.next("the column-index line").split(), nnz, "column indices")
    pointers = _parse_ints(lines, lines.next("the row-pointer line").split(), dimension + 1, "row pointers")
    return values, columns, pointers


def _nao_arrays(lines: _Lines, nnz: int, dimension: int) -> Arrays:
    """``# CSR values``, ``# CSR column indices``, ``# CSR row pointers`` sections, each wrapped over lines."""
    if nnz == 0 and not lines.peek().lstrip().startswith("# CSR values"):
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(dimension + 1, np.int64)
    _expect_marker(lines, "# CSR values")
    values = _parse_values(lines, " ".join(_lines_until(lines, "# CSR column indices")), nnz)
    columns = _parse_ints(lines, " ".join(_lines_until(lines, "# CSR row pointers")).split(), nnz, "column indices")
    tokens: list[str] = []
    while len(tokens) < dimension + 1:
        tokens += lines.next("row pointers").split()
    return values, columns, _parse_ints(lines, tokens, dimension + 1, "row pointers")


def _expect_marker(lines: _Lines, marker: str) -> None:
    if lines.next(f"'{marker}'").strip() != marker:
        raise lines.error(f"expected '{marker}'")


def _lines_until(lines: _Lines, marker: str) -> list[str]:
    """Lines up to the ``marker`` line, which is consumed."""
    collected = []
    while (line := lines.next(f"'{marker}'")).strip() != marker:
        if line.lstrip().startswith("#"):
            raise lines.error(f"expected '{marker}', got {line.strip()[:60]!r}")
        collected.append(line)
    return collected


def _csr(lines: _Lines, values: np.ndarray, columns: np.ndarray, pointers: np.ndarray, dimension: int) -> csr_matrix:
    if pointers[0] != 0 or pointers[-1] != len(values) or np.any(np.diff(pointers) < 0):
        raise lines.error("row pointers must rise from 0 to nnz")
    if np.any(columns >= dimension):
        raise lines.error("column index out of range")
    return csr_matrix((values, columns, pointers), shape=(dimension, dimension))


def _parse_values(lines: _Lines, text: str, nnz: int) -> np.ndarray:
    """``nnz`` real numbers, or ``nnz`` ``(re,im)`` pairs (nspin 4)."""
    complex_ = "(" in text
    plain = text.replace("(", " ").replace(")", " ").replace(",", " ") if complex_ else text
    try:
        numbers = np.array(plain.split(), dtype=np.float64)
    except ValueError as exc:
        raise lines.error(f"bad value ({exc})") from None
    if complex_ and not (text.count("(") == text.count(")") == text.count(",") == nnz):
        raise lines.error(f"expected {nnz} '(re,im)' values")
    if len(numbers) != (2 * nnz if complex_ else nnz) or not np.all(np.isfinite(numbers)):
        raise lines.error(f"expected {nnz} finite values, got {len(numbers) // (2 if complex_ else 1)}")
    return numbers[0::2] + 1j * numbers[1::2] if complex_ else numbers


def _parse_ints(lines: _Lines, tokens: list[str], count: int, what: str) -> np.ndarray:
    if len(tokens) != count or not all(t.isascii() and t.isdigit() for t in tokens):
        raise lines.error(f"expected {count} non-negative integer {what}, got {len(tokens)} tokens")
    return np.array(tokens, dtype=np.int64)


# --------------------------------------------------------------------------------------------------------------
# INPUT, KPT, STRU, .orb
# --------------------------------------------------------------------------------------------------------------
def read_input(path: str | os.PathLike) -> dict[str, str]:
    """INPUT keywords (lower-cased) → value string (the rest of the line, comments removed)."""
    path = Path(path)
    lines = read_text(path, AbacusFormatError).splitlines()
    if not lines or lines[0].strip().upper() != "INPUT_PARAMETERS":
        raise AbacusFormatError(f"{path}: an ABACUS INPUT starts with INPUT_PARAMETERS")
    result = {}
    for line in lines[1:]:
        tokens = _strip_comment(line).split()
        if tokens:
            result[tokens[0].lower()] = " ".join(tokens[1:])
    return result


@dataclass
class AbacusKpt:
    """KPT file: an automatic grid (``mode`` Gamma/MP), an explicit list (Direct/Cartesian) or a Line path."""

    mode: str
    grid: tuple[int, int, int] | None = None
    shift: tuple[float, float, float] | None = None
    kpoints: np.ndarray | None = None  # (nk, 3) for explicit lists and Line mode
    weights: np.ndarray | None = None  # explicit lists: weights; Line mode: points per segment


def read_kpt(path: str | os.PathLike) -> AbacusKpt:
    path = Path(path)
    text = read_text(path, AbacusFormatError)
    lines = [t for t in (_strip_comment(line).split() for line in text.splitlines()) if t]
    try:
        if lines[0][0].upper() not in ("K_POINTS", "KPOINTS"):
            raise AbacusFormatError(f"{path}: a KPT file starts with K_POINTS")
        count, mode = int(lines[1][0]), lines[2][0]
        if count == 0:
            grid = tuple(int(x) for x in lines[3][:3])
            shift = tuple(float(x) for x in lines[3][3:6]) if len(lines[3]) >= 6 else (0.0, 0.0, 0.0)
            return AbacusKpt(mode=mode, grid=grid, shift=shift)
        rows = np.array([[float(x) for x in row[:4]] for row in lines[3:3 + count]])
    except (IndexError, ValueError) as exc:
        raise AbacusFormatError(f"{path}: malformed KPT ({exc})") from None
    if rows.shape != (count, 4):
        raise AbacusFormatError(f"{path}: expected {count} k-point rows of 4 numbers")
    return AbacusKpt(mode=mode, kpoints=rows[:, :3], weights=rows[:, 3])


@dataclass
class AbacusStru:
    """An ABACUS STRU file. Lengths as written: ``lattice_constant`` in Bohr, vectors/positions in its units."""

    species: list[tuple[str, float, str]]  # (label, mass, pseudopotential file)
    orbital_files: list[str]
    lattice_constant: float  # Bohr
    lattice_vectors: np.ndarray | None  # (3, 3) rows, units of lattice_constant; None with LATTICE_PARAMETERS
    coordinate_type: str  # Direct, Cartesian, Cartesian_angstrom, Cartesian_au, ...
    labels: list[str]  # species label per atom
    coordinates: np.ndarray  # (N, 3) as written
    magnetism: list[float] = field(default_factory=list)  # per species

    def cell(self) -> np.ndarray:
        """Lattice vectors (rows, Å); only for ``LATTICE_VECTORS`` (``latname none``)."""
        if self.lattice_vectors is None:
            raise AbacusFormatError("STRU gives LATTICE_PARAMETERS (latname); take the cell from the log instead")
        return self.lattice_vectors * self.lattice_constant * ABACUS_BOHR_TO_ANGSTROM

    def positions(self) -> np.ndarray:
        """Cartesian positions, Å."""
        kind = self.coordinate_type.lower()
        if kind == "direct":
            return self.coordinates @ self.cell()
        if kind == "cartesian":
            return self.coordinates * self.lattice_constant * ABACUS_BOHR_TO_ANGSTROM
        if kind == "cartesian_angstrom":
            return self.coordinates.copy()
        if kind == "cartesian_au":
            return self.coordinates * ABACUS_BOHR_TO_ANGSTROM
        raise AbacusFormatError(f"STRU coordinate type {self.coordinate_type!r} is not supported")


def read_stru(path: str | os.PathLike) -> AbacusStru:
    path = Path(path)
    sections = _stru_sections(path)
    try:
        species = [(row[0], float(row[1]), row[2] if len(row) > 2 else "") for row in sections["ATOMIC_SPECIES"]]
        lattice_constant = float(sections["LATTICE_CONSTANT"][0][0])
        vectors = sections.get("LATTICE_VECTORS")
        lattice_vectors = np.array([[float(x) for x in row[:3]] for row in vectors]) if vectors else None
        labels, coordinates, magnetism, coordinate_type = _stru_atoms(sections["ATOMIC_POSITIONS"], species)
    except (KeyError, IndexError, ValueError) as exc:
        raise AbacusFormatError(f"{path}: malformed STRU ({type(exc).__name__}: {exc})") from None
    if lattice_vectors is not None and lattice_vectors.shape != (3, 3):
        raise AbacusFormatError(f"{path}: LATTICE_VECTORS must be 3 rows of 3 numbers")
    return AbacusStru(
        species=species,
        orbital_files=[row[0] for row in sections.get("NUMERICAL_ORBITAL", [])],
        lattice_constant=lattice_constant,
        lattice_vectors=lattice_vectors,
        coordinate_type=coordinate_type,
        labels=labels,
        coordinates=coordinates,
        magnetism=magnetism,
    )


STRU_SECTIONS = {
    "ATOMIC_SPECIES", "NUMERICAL_ORBITAL", "LATTICE_CONSTANT", "LATTICE_VECTORS", "LATTICE_PARAMETERS",
    "ATOMIC_POSITIONS", "NUMERICAL_DESCRIPTOR", "ABFS_ORBITAL",
}


def _stru_sections(path: Path) -> dict[str, list[list[str]]]:
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in read_text(path, AbacusFormatError).splitlines():
        tokens = _strip_comment(line).split()
        if not tokens:
            continue
        if tokens[0].upper() in STRU_SECTIONS:
            current = tokens[0].upper()
            sections[current] = []
        elif current is None:
            raise AbacusFormatError(f"{path}: text before the first STRU section: {line.strip()[:60]!r}")
        else:
            sections[current].append(tokens)
    return sections


def _stru_atoms(rows: list[list[str]], species: list[tuple[str, float, str]]):
    coordinate_type = rows[0][0]
    labels, coordinates, magnetism = [], [], []
    pos = 1
    for label, _, _ in species:
        if rows[pos][0] != label:
            raise ValueError(f"ATOMIC_POSITIONS lists {rows[pos][0]!r} where species {label!r} was expected")
        magnetism.append(float(rows[pos + 1][0]))
        count = int(rows[pos + 2][0])
        for row in rows[pos + 3:pos + 3 + count]:
            coordinates.append([float(x) for x in row[:3]])
            labels.append(label)
        pos += 3 + count
    if pos != len(rows) or len(coordinates) != len(labels):
        raise ValueError("ATOMIC_POSITIONS has more or fewer atom lines than the counts say")
    return labels, np.array(coordinates).reshape(-1, 3), magnetism, coordinate_type


def read_orb_header(path: str | os.PathLike) -> tuple[str, list[int]]:
    """Element and shells (l per radial function, ABACUS order: by l, then zeta) from a ``.orb`` file header."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            header = [line for _, line in zip(range(40), handle)]
    except (OSError, UnicodeDecodeError) as exc:
        raise AbacusFormatError(f"{path}: cannot read ({exc})") from exc
    text = "".join(header)
    element = re.search(r"^\s*Element\s+(\S+)", text, re.M)
    lmax = re.search(r"^\s*Lmax\s+(\d+)", text, re.M)
    counts = dict(re.findall(r"Number of ([A-Z])orbital-->\s*(\d+)", text))
    if not element or not lmax or not counts:
        raise AbacusFormatError(f"{path}: no 'Element', 'Lmax' or 'Number of Xorbital-->' lines in the header")
    try:
        shells = [l for l in range(int(lmax[1]) + 1) for _ in range(int(counts[SHELL_LETTERS[l]]))]
    except (KeyError, IndexError):
        raise AbacusFormatError(f"{path}: the header lacks a shell count for some l <= Lmax") from None
    return element[1], shells


# --------------------------------------------------------------------------------------------------------------
# running_*.log
# --------------------------------------------------------------------------------------------------------------
@dataclass
class AbacusLog:
    """What aiida-deeph reads from ``running_scf.log``.

    The cell is ``lattice_constant_angstrom × lattice_vectors`` as printed (6 significant digits), which is what
    DeepH-dock writes: with ``latname`` the log's vectors are the standardized ones, not STRU's.
    """

    version: str
    commit: str | None
    nspin: int
    lattice_constant_bohr: float
    lattice_constant_angstrom: float
    lattice_vectors: np.ndarray  # rows, units of the lattice constant
    labels: list[str]  # species label per atom
    coordinate_type: str  # "cartesian" (units of the lattice constant) or "direct"
    coordinates: np.ndarray
    shells: dict[str, list[int]]  # species label → l per radial function
    fermi_energy_eV: float | None
    converged: bool
    electrons: float | None = None

    @property
    def cell(self) -> np.ndarray:
        return self.lattice_vectors * self.lattice_constant_angstrom

    @property
    def positions(self) -> np.ndarray:
        if self.coordinate_type == "direct":
            return self.coordinates @ self.cell
        return self.coordinates * self.lattice_constant_angstrom


def read_running_log(path: str | os.PathLike) -> AbacusLog:
    """Read an ABACUS ``running_*.log`` (v3.x): version, structure, basis, nspin, EFERMI, SCF convergence."""
    path = Path(path)
    lines = read_text(path, AbacusFormatError).splitlines()
    text = "\n".join(lines)
    if not re.search(r"^\s*Total\s+Time\s*:", text, re.M):
        raise AbacusFormatError(f"{path}: no final 'Total Time' line; the run did not finish or the file is cut")
    version = re.search(r"^\s*ABACUS\s+v?(\d+\.\d+\S*)", text, re.M)
    if not version:
        raise AbacusFormatError(f"{path}: no 'ABACUS v3.x.y' header line")
    commit = re.search(r"^\s*Commit:\s*(\S+)", text, re.M)
    shells, counts = _log_species(lines, path)
    labels, coordinate_type, coordinates = _log_atoms(lines, counts, path)
    fermi = re.findall(r"^\s*EFERMI\s*=\s*(\S+)\s*eV", text, re.M)
    electrons = re.search(r"AUTOSET number of electrons:\s*=\s*(\S+)", text)
    return AbacusLog(
        version=version[1],
        commit=commit[1] if commit else None,
        nspin=int(_log_number(text, r"^\s*nspin\s*=\s*(\S+)", path)),
        lattice_constant_bohr=_log_number(text, r"lattice constant \(Bohr\)\s*=\s*(\S+)", path),
        lattice_constant_angstrom=_log_number(text, r"lattice constant \(Angstrom\)\s*=\s*(\S+)", path),
        lattice_vectors=_log_lattice(lines, path),
        labels=labels,
        coordinate_type=coordinate_type,
        coordinates=coordinates,
        shells=shells,
        fermi_energy_eV=_to_float(fermi[-1], path) if fermi else None,
        converged="charge density convergence is achieved" in text,
        electrons=_to_float(electrons[1], path) if electrons else None,
    )


def _to_float(text: str, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AbacusFormatError(f"{path}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise AbacusFormatError(f"{path}: {text!r} is not a finite number")
    return value


def _log_number(text: str, pattern: str, path: Path) -> float:
    match = re.search(pattern, text, re.M)
    if not match:
        raise AbacusFormatError(f"{path}: no line matching {pattern!r}")
    return _to_float(match[1], path)


def _log_species(lines: list[str], path: Path) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per ``READING ATOM TYPE`` section: label, shells from 'L=l, number of zeta = n', number of atoms."""
    shells: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    starts = [n for n, line in enumerate(lines) if re.match(r"\s*READING ATOM TYPE\s+\d+", line)]
    if not starts:
        raise AbacusFormatError(f"{path}: no 'READING ATOM TYPE' section")
    for start in starts:
        label = re.match(r"\s*atom label\s*=\s*(\S+)", lines[start + 1] if start + 1 < len(lines) else "")
        if not label:
            raise AbacusFormatError(f"{path}, line {start + 2}: expected 'atom label = ...'")
        shells[label[1]] = []
        for line in lines[start + 2:]:
            zeta = re.match(r"\s*L=(\d+), number of zeta\s*=\s*(\d+)", line)
            if zeta:
                shells[label[1]] += [int(zeta[1])] * int(zeta[2])
                continue
            number = re.match(r"\s*number of atom for this type\s*=\s*(\d+)", line)
            if not number:
                raise AbacusFormatError(f"{path}: atom type {label[1]} has no 'number of atom for this type' line")
            counts[label[1]] = int(number[1])
            break
    return shells, counts


def _log_atoms(lines: list[str], counts: dict[str, int], path: Path) -> tuple[list[str], str, np.ndarray]:
    """Atoms of the first structure block: ``tauc_<label><n>`` (Cartesian) or ``taud_<label><n>`` (direct) lines.

    The names are matched against the atom types, so labels that end in digits (``Fe1``) are read right.
    """
    start = next((n for n, line in enumerate(lines) if re.match(r"tau[cd]_", line)), None)
    if start is None:
        raise AbacusFormatError(f"{path}: no 'tauc_'/'taud_' atom lines")
    kind = lines[start][:4]
    expected = [(label, f"{kind}_{label}{n}") for label, count in counts.items() for n in range(1, count + 1)]
    labels, coordinates = [], []
    for offset, (label, name) in enumerate(expected):
        tokens = lines[start + offset].split() if start + offset < len(lines) else []
        if len(tokens) < 4 or tokens[0] != name:
            raise AbacusFormatError(f"{path}, line {start + offset + 1}: expected the coordinates of {name}")
        labels.append(label)
        coordinates.append([_to_float(x, path) for x in tokens[1:4]])
    return labels, "cartesian" if kind == "tauc" else "direct", np.array(coordinates).reshape(-1, 3)


def _log_lattice(lines: list[str], path: Path) -> np.ndarray:
    title = "Lattice vectors: (Cartesian coordinate: in unit of a_0)"
    start = next((n for n, line in enumerate(lines) if title in line), None)
    if start is None or start + 3 >= len(lines):
        raise AbacusFormatError(f"{path}: no '{title}' block")
    rows = [lines[start + k].split() for k in (1, 2, 3)]
    if any(len(row) != 3 for row in rows):
        raise AbacusFormatError(f"{path}: the lattice-vector block needs 3 rows of 3 numbers")
    return np.array([[_to_float(x, path) for x in row] for row in rows])


# --------------------------------------------------------------------------------------------------------------
# Conversion to the DeepH format
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Basis:
    elements: list[str]  # per atom
    shells: list[list[int]]  # per atom, ABACUS order
    element_shells: dict[str, list[int]]

    @property
    def offsets(self) -> np.ndarray:
        sizes = [sum(2 * l + 1 for l in ls) for ls in self.shells]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def abacus_to_deeph(folder: str | os.PathLike, suffix: str | None = None) -> DeepHStructure:
    """Convert an ABACUS LCAO calculation folder (INPUT, STRU, ``OUT.<suffix>/`` with ``out_mat_hs2``) to DeepH.

    Without a ``running_*.log`` the structure comes from STRU (``latname none`` only) and the Fermi level is
    unknown (0.0, with a warning).
    """
    folder = Path(folder)
    parameters = read_input(folder / "INPUT")
    out_dir = _output_folder(folder, suffix or parameters.get("suffix", "ABACUS").split()[0])
    stru = read_stru(folder / "STRU")
    log = _find_log(out_dir)
    nspin = log.nspin if log else int(parameters.get("nspin", "1").split()[0])
    if nspin not in (1, 2, 4):
        raise AbacusFormatError(f"{out_dir}: nspin {nspin} is not 1, 2 or 4")
    basis = _basis(folder, parameters, stru, log)
    lattice, positions = (log.cell, log.positions) if log else _stru_geometry(stru, parameters)
    if log and log.labels != stru.labels:
        raise AbacusFormatError(f"{out_dir}: the log's atoms {log.labels} differ from STRU's {stru.labels}")
    overlap = read_csr(_find(out_dir, OVERLAP_FILES, "overlap"))
    hamiltonians = [read_csr(p) for p in _hamiltonian_files(out_dir, nspin)]
    spin_factor = 2 if nspin == 4 else 1
    for matrix in (overlap, *hamiltonians):
        if matrix.dimension != spin_factor * basis.offsets[-1]:
            raise AbacusFormatError(
                f"{out_dir}: matrix dimension {matrix.dimension} but the basis has {basis.offsets[-1]} orbitals"
                + (" (×2 for nspin 4)" if nspin == 4 else "")
            )
    pairs = _overlap_pairs(overlap, basis, spin_factor)
    fermi = log.fermi_energy_eV if log else None
    if fermi is None:
        warnings.warn(f"{out_dir}: no EFERMI in a running log; fermi_energy_eV set to 0.0", stacklevel=2)
    return DeepHStructure(
        lattice=lattice,
        species=basis.elements,
        positions=positions,
        elements_orbital_map=basis.element_shells,
        fermi_energy_eV=fermi if fermi is not None else 0.0,
        spinful=nspin != 1,
        hamiltonian=_hamiltonian_blocks(hamiltonians, pairs, basis, nspin, out_dir),
        overlap=BlockMatrix.from_blocks({key: _overlap_block(overlap, key, basis, spin_factor) for key in pairs}),
        occupation=log.electrons if log else None,
    )


def _output_folder(folder: Path, suffix: str) -> Path:
    out_dir = folder / f"OUT.{suffix}"
    if out_dir.is_dir():
        return out_dir
    candidates = sorted(p for p in folder.glob("OUT.*") if p.is_dir())
    if len(candidates) != 1:
        raise AbacusFormatError(f"{folder}: no OUT.{suffix} folder and {len(candidates)} other OUT.* folders")
    return candidates[0]


def _find_log(out_dir: Path) -> AbacusLog | None:
    for name in LOG_FILES:
        if (out_dir / name).is_file():
            return read_running_log(out_dir / name)
    return None


def _find(out_dir: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (out_dir / name).is_file():
            return out_dir / name
    raise AbacusFormatError(f"{out_dir}: no {what} file ({' or '.join(names)}); was out_mat_hs2 set?")


def _hamiltonian_files(out_dir: Path, nspin: int) -> list[Path]:
    for names in HAMILTONIAN_FILES:
        paths = [out_dir / name for name in names[: 2 if nspin == 2 else 1]]
        if all(p.is_file() for p in paths):
            return paths
    raise AbacusFormatError(
        f"{out_dir}: no Hamiltonian files for nspin {nspin} (data-HR-sparse_SPIN*.csr or hrs*_nao.csr)"
    )


def _stru_geometry(stru: AbacusStru, parameters: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    if parameters.get("latname", "none").split()[0].lower() != "none":
        raise AbacusFormatError("latname is set and there is no running log: the cell cannot be read from STRU")
    return stru.cell(), stru.positions()


def _basis(folder: Path, parameters: dict[str, str], stru: AbacusStru, log: AbacusLog | None) -> _Basis:
    """Shells per species from the ``.orb`` headers when found under the folder, else from the log."""
    per_label: dict[str, tuple[str, list[int]]] = {}
    for (label, _, _), name in zip(stru.species, stru.orbital_files):
        orb = _find_orbital_file(folder, parameters.get("orbital_dir", ""), name)
        if orb is not None:
            per_label[label] = read_orb_header(orb)
        elif log is not None and label in log.shells:
            per_label[label] = (_element_of(label), log.shells[label])
        else:
            raise AbacusFormatError(f"{folder}: orbital file {name} not found and no running log to give its shells")
        if log is not None and log.shells.get(label, per_label[label][1]) != per_label[label][1]:
            raise AbacusFormatError(f"{folder}: the shells of {label} in {name} differ from the log's")
    missing = sorted(set(stru.labels) - set(per_label))
    if missing:
        raise AbacusFormatError(f"{folder}: no NUMERICAL_ORBITAL for species {', '.join(missing)}")
    element_shells: dict[str, list[int]] = {}
    for element, shells in per_label.values():
        if element_shells.setdefault(element, shells) != shells:
            raise AbacusFormatError(f"{folder}: element {element} has two different bases; DeepH needs one per element")
    elements = [per_label[label][0] for label in stru.labels]
    return _Basis(elements, [per_label[label][1] for label in stru.labels], element_shells)


def _find_orbital_file(folder: Path, orbital_dir: str, name: str) -> Path | None:
    """``orbital_dir/name`` or ``name`` relative to the folder, else a file of that name at most 3 levels down."""
    orbital_dir = orbital_dir.split()[0] if orbital_dir else ""
    for candidate in (folder / orbital_dir / name, folder / name):
        if candidate.is_file():
            return candidate
    basename = Path(name).name
    for root, dirs, files in os.walk(folder, followlinks=True):  # links: orbital libraries are often linked in
        if basename in files:
            return Path(root) / basename
        if len(Path(root).relative_to(folder).parts) >= ORBITAL_SEARCH_DEPTH:
            dirs.clear()
        dirs.sort()
    return None


def _element_of(label: str) -> str:
    symbol = re.match(r"[A-Z][a-z]?", label)
    if not symbol or symbol[0] not in chemical_symbols:
        raise AbacusFormatError(f"cannot tell the element of species {label!r}")
    return symbol[0]


def _overlap_pairs(overlap: AbacusCsr, basis: _Basis, spin_factor: int) -> list[tuple[int, int, int, int, int]]:
    """(Rx, Ry, Rz, i, j) of every atom pair with a stored overlap entry: DeepH's pair set."""
    atom_of = np.repeat(np.arange(len(basis.shells)), np.diff(basis.offsets) * spin_factor)
    pairs = []
    for cell, matrix in overlap.matrices.items():
        coo = matrix.tocoo()
        for i, j in sorted(set(zip(atom_of[coo.row].tolist(), atom_of[coo.col].tolist()))):
            pairs.append((*cell, i, j))
    return pairs


def _block(matrix: AbacusCsr, key: tuple[int, ...], basis: _Basis, spin_factor: int) -> np.ndarray:
    """One atom-pair block in the standard orbital order; spin-major (2n_i, 2n_j) when ``spin_factor`` is 2."""
    i, j = key[3], key[4]
    offsets = basis.offsets * spin_factor
    dense = matrix.matrices[key[:3]][offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]].toarray()
    if spin_factor == 2:  # basis index 2·orbital + spin → spin-major (up orbitals, then down orbitals)
        n_i, n_j = dense.shape[0] // 2, dense.shape[1] // 2
        dense = dense.reshape(n_i, 2, n_j, 2).transpose(1, 0, 3, 2).reshape(2 * n_i, 2 * n_j)
    return to_standard(dense, "abacus", basis.shells[i], basis.shells[j])


def _overlap_block(overlap: AbacusCsr, key: tuple[int, ...], basis: _Basis, spin_factor: int) -> np.ndarray:
    """The spinless overlap block: for nspin 4 the ↑↑ quadrant (S is diagonal in spin)."""
    block = _block(overlap, key, basis, spin_factor)
    return block[: len(block) // spin_factor, : block.shape[1] // spin_factor].real


def _hamiltonian_blocks(
    hamiltonians: list[AbacusCsr], pairs: list[tuple[int, ...]], basis: _Basis, nspin: int, out_dir: Path
) -> BlockMatrix:
    """H in eV on the overlap's pairs: real (nspin 1), diag(H↑, H↓) (nspin 2), spin-major complex (nspin 4)."""
    for matrix in hamiltonians:
        missing = {key[:3] for key in pairs} - set(matrix.matrices)
        if missing:
            raise AbacusFormatError(f"{out_dir}: the Hamiltonian lacks cells {sorted(missing)[:3]} of the overlap")
    blocks = {}
    for key in pairs:
        if nspin == 4:
            blocks[key] = _block(hamiltonians[0], key, basis, 2) * ABACUS_RYDBERG_TO_EV
        elif nspin == 2:
            up, down = (_block(h, key, basis, 1) * ABACUS_RYDBERG_TO_EV for h in hamiltonians)
            zero = np.zeros_like(up)
            blocks[key] = np.block([[up, zero], [zero, down]]).astype(np.complex128)
        else:
            blocks[key] = _block(hamiltonians[0], key, basis, 1) * ABACUS_RYDBERG_TO_EV
    return BlockMatrix.from_blocks(blocks)

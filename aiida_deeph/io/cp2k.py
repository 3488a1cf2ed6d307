"""CP2K (2023.1) input sections and output readers for real-space H(R), S(R). No AiiDA import.

CP2K writes one ASCII CSR file per periodic image (``<project>-KS_SPIN_<s>_R_<n>-1_0.csr``, 1-based ``row col
value`` lines, full matrix, Hartree) and prints the image table (``KS CSR write|  N periodic images``) in its main
output. A matrix element of image ``n`` is ⟨φ_μ(r − τ_i)|Ĥ|φ_ν(r − τ_j − R_n)⟩ with τ CP2K's positions wrapped to
fractional [−0.5, 0.5). We write already-wrapped coordinates (:func:`wrap_shifts`) and move every block back to
the structure's own positions, so each block lands on its true R.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .conventions import to_standard
from .deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure
from .units import HARTREE_TO_EV

PROJECT = "aiida"
COORDS_FILE = "aiida.coords.xyz"
L_LETTERS = "spdfghi"
# CP2K writes both halves of S(R) and H(R) from the same numbers: any asymmetry beyond print rounding is damage
OVERLAP_SYMMETRY_TOLERANCE = 1e-10
HAMILTONIAN_SYMMETRY_TOLERANCE_EV = 1e-6


class Cp2kOutputError(DeepHFormatError):
    """CP2K's output or matrix files are missing, truncated or inconsistent."""


class Cp2kMatricesMissing(Cp2kOutputError):
    """CP2K wrote no (or not all) real-space matrix files."""


# --- input ------------------------------------------------------------------------------------------------------
def wrap_shifts(fractional: np.ndarray, pbc: tuple[bool, bool, bool]) -> np.ndarray:
    """Integer cell shifts s with f − s in [−0.5, 0.5) along periodic axes: CP2K's own wrapping, applied before
    CP2K sees the atoms. Non-periodic axes are never wrapped (a slab must not be torn across the vacuum)."""
    shifts = np.floor(np.asarray(fractional) + 0.5).astype(np.int64)
    shifts[:, ~np.asarray(pbc, dtype=bool)] = 0
    return shifts


def cp2k_fractional(fractional: np.ndarray, pbc: tuple[bool, bool, bool]) -> np.ndarray:
    """The fractional coordinates CP2K is given: wrapped along periodic axes, centred on 0 along the others.

    A rigid shift along a non-periodic axis changes no block and no R, so the parser only needs the wrap shifts.
    """
    fractional = np.asarray(fractional, dtype=float)
    result = fractional - wrap_shifts(fractional, pbc)
    for axis in np.flatnonzero(~np.asarray(pbc, dtype=bool)):
        low, high = result[:, axis].min(), result[:, axis].max()
        if high - low >= 1.0:
            raise ValueError(f"the atoms span more than the cell along non-periodic axis {'abc'[axis]}; add vacuum")
        result[:, axis] -= 0.5 * (low + high)
    return result


def matrix_print_section(threshold: float = 1.0e-12) -> dict:
    """The &DFT/&PRINT sections that make CP2K write the real-space KS and overlap matrices."""
    csr = {"REAL_SPACE": True, "THRESHOLD": f"{threshold:.1E}"}
    return {"KS_CSR_WRITE": dict(csr), "S_CSR_WRITE": dict(csr)}


def structure_sections(lattice: np.ndarray, species: list[str], positions: np.ndarray, pbc: tuple[bool, bool, bool],
                       basis: dict[str, str], potential: dict[str, str]) -> tuple[dict, str]:
    """&SUBSYS (cell, topology, one &KIND per element) and the xyz text of the wrapped coordinates."""
    lattice = np.asarray(lattice, dtype=float)
    wrapped = cp2k_fractional(np.asarray(positions, dtype=float) @ np.linalg.inv(lattice), pbc) @ lattice
    periodic = "".join(axis for axis, flag in zip("XYZ", pbc) if flag) or "NONE"
    subsys = {
        "CELL": {**{v: " ".join(f"{x:.12f}" for x in row) for v, row in zip("ABC", lattice)}, "PERIODIC": periodic},
        "TOPOLOGY": {"COORD_FILE_NAME": COORDS_FILE, "COORD_FILE_FORMAT": "XYZ"},
        "KIND": [{"_": el, "BASIS_SET": basis[el], "POTENTIAL": potential[el]} for el in dict.fromkeys(species)],
    }
    lines = [f"{el} {x:.14f} {y:.14f} {z:.14f}" for el, (x, y, z) in zip(species, wrapped)]
    return subsys, f"{len(lines)}\nwrapped to fractional [-0.5, 0.5) by aiida-deeph\n" + "\n".join(lines) + "\n"


def kpoints_section(mesh: tuple[int, int, int]) -> dict:
    # FULL_GRID without symmetry: the real-space matrices do not depend on it, the SCF stays simple and robust.
    return {"SCHEME": "MONKHORST-PACK {} {} {}".format(*mesh), "SYMMETRY": False, "FULL_GRID": True}


def data_file_entries(path: str | Path) -> dict[str, set[str]]:
    """Names (and aliases) per element in a CP2K data file such as BASIS_MOLOPT or GTH_POTENTIALS."""
    entries: dict[str, set[str]] = {}
    pattern = re.compile(r"^\s*([A-Z][a-z]?)\s+([A-Za-z][\w\-.+()]*(?:\s+[A-Za-z][\w\-.+()]*)*)\s*$")
    for line in Path(path).read_text(errors="replace").splitlines():
        match = pattern.match(line)
        if match:
            entries.setdefault(match.group(1), set()).update(match.group(2).split())
    return entries


def valence_electrons(path: str | Path, element: str, name: str) -> int:
    """Valence electrons of pseudopotential ``name`` (or an alias) of ``element`` in a CP2K GTH_POTENTIALS file: the
    sum of the occupation line that follows the entry's header."""
    lines = Path(path).read_text(errors="replace").splitlines()
    for header, occupations in zip(lines, lines[1:]):
        fields = header.split()
        if len(fields) > 1 and fields[0] == element and name in fields[1:]:
            try:
                return sum(int(value) for value in occupations.split())
            except ValueError as exc:
                raise ValueError(f"{path}: no occupation line after {header.strip()!r}") from exc
    raise ValueError(f"{path}: no pseudopotential {name} for {element}")


# --- output -----------------------------------------------------------------------------------------------------
@dataclass
class Cp2kOutput:
    """What the main CP2K output file says about a run."""

    version: str | None = None
    energy_eV: float | None = None
    fermi_energy_eV: float | None = None
    scf_converged: bool = False
    scf_failed: bool = False  # CP2K said the SCF did not converge (it then aborts unless told to ignore it)
    scf_steps: int | None = None
    wall_time_s: float | None = None
    finished: bool = False
    walltime_exceeded: bool = False
    aborted: str | None = None
    images: list[tuple[int, int, int]] = field(default_factory=list)
    kind_shells: dict[str, list[int]] = field(default_factory=dict)
    kind_nsgf: dict[str, int] = field(default_factory=dict)
    warnings: int = 0

    def as_dict(self) -> dict:
        return {
            "cp2k_version": self.version,
            "energy": self.energy_eV,
            "energy_units": "eV",
            "fermi_energy": self.fermi_energy_eV,
            "fermi_energy_units": "eV",
            "scf_converged": self.scf_converged,
            "scf_steps": self.scf_steps,
            "wall_time_seconds": self.wall_time_s,
            "number_of_images": len(self.images),
            "basis_shells": self.kind_shells,
            "number_of_warnings": self.warnings,
        }


def _parse_image_table(lines: list[str], start: int) -> list[tuple[int, int, int]]:
    count = int(lines[start].split("|")[1].split()[0])
    rows = lines[start + 2 : start + 2 + count]
    try:
        table = [tuple(int(x) for x in row.split()) for row in rows]
    except ValueError as exc:
        raise Cp2kOutputError(f"periodic image table is cut short ({exc})") from exc
    if len(table) != count or any(len(row) != 4 or row[0] != n + 1 for n, row in enumerate(table)):
        raise Cp2kOutputError(f"periodic image table is cut short or malformed ({len(table)} of {count} rows)")
    return [row[1:] for row in table]


def _parse_kinds(lines: list[str]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Shells (l per shell, basis order) and spherical function counts of each kind from ATOMIC KIND INFORMATION.

    Read from CP2K's own print-out of the basis (``Set Shell Orbital Exponent Coefficient``), so any basis file works.
    """
    shells: dict[str, list[int]] = {}
    nsgf: dict[str, int] = {}
    kind: str | None = None
    seen: set[tuple[int, int]] = set()
    for line in lines:
        if "Atomic kind:" in line:
            kind, seen = line.split("Atomic kind:")[1].split()[0], set()
            shells[kind] = []
        elif kind is None:
            continue
        elif "Potential information" in line:
            kind = None
        elif "Number of spherical basis functions:" in line:
            nsgf[kind] = int(line.split()[-1])
        else:
            parts = line.split()
            if len(parts) == 5 and parts[0].isdigit() and parts[1].isdigit():
                letter = parts[2].lstrip("0123456789")[:1]
                if (int(parts[0]), int(parts[1])) not in seen and letter in L_LETTERS:
                    seen.add((int(parts[0]), int(parts[1])))
                    shells[kind].append(L_LETTERS.index(letter))
    return shells, nsgf


def read_cp2k_output(path: str | Path) -> Cp2kOutput:
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise Cp2kOutputError(f"{path}: cannot read CP2K output ({exc})") from exc
    out = Cp2kOutput()
    try:
        for n, line in enumerate(lines):
            _read_line(out, lines, n)
        out.kind_shells, out.kind_nsgf = _parse_kinds(lines)
    except (ValueError, IndexError) as exc:  # a number or the image table garbled or cut
        raise Cp2kOutputError(f"{path}: {exc}") from exc
    return out


def _read_line(out: Cp2kOutput, lines: list[str], n: int) -> None:
    """Take what line ``n`` says into ``out``."""
    line = lines[n]
    if "CP2K| version string:" in line:
        out.version = line.split(":", 1)[1].strip()
    elif "ENERGY| Total FORCE_EVAL" in line:
        out.energy_eV = _number(line.split()[-1], n) * HARTREE_TO_EV
    elif line.strip().startswith("Fermi energy:"):
        out.fermi_energy_eV = _number(line.split()[-1], n) * HARTREE_TO_EV
    elif "*** SCF run converged in" in line:
        out.scf_converged, out.scf_steps = True, int(line.split()[-3])
    elif "Leaving inner SCF loop after reaching" in line or "*** SCF run NOT converged ***" in line:
        out.scf_converged, out.scf_failed = False, True
        digits = re.findall(r"\d+", line)
        out.scf_steps = int(digits[0]) if digits else out.scf_steps
    elif line.startswith(" KS CSR write|") and not out.images:
        out.images = _parse_image_table(lines, n)
    elif line.startswith(" CP2K     ") and len(line.split()) == 7:
        out.wall_time_s = _number(line.split()[-1], n)
    elif "PROGRAM ENDED AT" in line:
        out.finished = True
    elif "The number of warnings for this run is" in line:
        out.warnings = int(line.split()[-1])
    elif "exceeded requested execution time" in line.lower() or "MAXIMUM WALLTIME" in line.upper():
        out.walltime_exceeded = True
    elif "ABORT" in line and out.aborted is None:
        out.aborted = line.strip()


def _number(text: str, n: int) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"line {n + 1}: {text!r} is not a finite number")
    return value


def read_csr(path: str | Path, size: int) -> np.ndarray:
    """A dense (size, size) matrix from one CP2K ASCII CSR file (1-based ``row col value`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise Cp2kMatricesMissing(f"{path.name} is missing")
    try:
        values = np.array(path.read_bytes().split(), dtype=float)
    except (OSError, ValueError) as exc:
        raise Cp2kOutputError(f"{path}: unreadable matrix file ({exc})") from exc
    if values.size % 3:
        raise Cp2kOutputError(f"{path}: truncated (the last row/col/value triple is incomplete)")
    triples = values.reshape(-1, 3)
    if not np.all(np.isfinite(triples)) or np.any(triples[:, :2] != np.round(triples[:, :2])):
        raise Cp2kOutputError(f"{path}: non-integer indices or non-finite values")
    rows, cols = triples[:, 0].astype(np.int64) - 1, triples[:, 1].astype(np.int64) - 1
    if triples.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= size or cols.max() >= size):
        raise Cp2kOutputError(f"{path}: indices outside the {size}×{size} matrix")
    matrix = np.zeros((size, size))
    matrix[rows, cols] = triples[:, 2]
    return matrix


def csr_path(folder: Path, kind: str, spin: int, image: int) -> Path:
    return folder / f"{PROJECT}-{kind}_SPIN_{spin}_R_{image}-1_0.csr"


def cp2k_to_deeph(folder: str | Path, lattice: np.ndarray, species: list[str], positions: np.ndarray,
                  pbc: tuple[bool, bool, bool], output: Cp2kOutput) -> tuple[DeepHStructure, dict]:
    """Build the DeepH structure from CP2K's CSR files in ``folder``; returns it and a few diagnostics.

    The pair set is the overlap's (the DeepH convention; inference graphs come from S). Hamiltonian elements on
    pairs without overlap (nonlocal-projector tails) are dropped and their largest magnitude is reported.
    """
    folder = Path(folder)
    if not output.images:
        raise Cp2kMatricesMissing(f"{folder}: the CP2K output has no periodic image table: no matrices were written")
    missing = sorted(set(species) - set(output.kind_shells))
    if missing or any(not output.kind_shells[el] for el in species):
        raise Cp2kOutputError(f"{folder}: no basis description for {', '.join(missing) or 'some kinds'} in the output")
    shells = {el: output.kind_shells[el] for el in dict.fromkeys(species)}
    for el, ls in shells.items():
        if el in output.kind_nsgf and sum(2 * l + 1 for l in ls) != output.kind_nsgf[el]:
            raise Cp2kOutputError(f"{folder}: basis of {el}: shells {ls} do not add up to {output.kind_nsgf[el]} "
                                  "functions")
    structure = DeepHStructure(lattice, species, positions, shells, fermi_energy_eV=output.fermi_energy_eV or 0.0)
    sizes, offsets, size = structure.orbitals_per_atom(), structure.orbital_offsets(), structure.norbitals
    shifts = wrap_shifts(structure.positions @ np.linalg.inv(structure.lattice), pbc)
    nspin = 2 if csr_path(folder, "KS", 2, 1).exists() else 1
    h_blocks: dict = {}
    s_blocks: dict = {}
    dropped = 0.0
    atom_shells = [shells[s] for s in species]
    for n, image in enumerate(output.images, start=1):
        overlap = read_csr(csr_path(folder, "S", 1, n), size)
        ks = [read_csr(csr_path(folder, "KS", spin, n), size) * HARTREE_TO_EV for spin in range(1, nspin + 1)]
        for i in range(structure.natoms):
            rows = slice(offsets[i], offsets[i] + sizes[i])
            for j in range(structure.natoms):
                cols = slice(offsets[j], offsets[j] + sizes[j])
                s_block = overlap[rows, cols]
                h_spin = [h[rows, cols] for h in ks]
                if not s_block.any():
                    dropped = max(dropped, max(float(np.abs(h).max()) for h in h_spin))
                    continue
                key = (*(np.asarray(image) + shifts[i] - shifts[j]).tolist(), i, j)
                if key in s_blocks:
                    raise Cp2kOutputError(f"{folder}: two periodic images map onto block {key}: positions and output "
                                          "disagree")
                s_blocks[key] = to_standard(s_block, "cp2k", atom_shells[i], atom_shells[j])
                h_std = [to_standard(h, "cp2k", atom_shells[i], atom_shells[j]) for h in h_spin]
                if nspin == 2:  # collinear spin: block-diagonal spinful blocks, as the DeepH format stores them
                    zero = np.zeros_like(h_std[0])
                    h_blocks[key] = np.block([[h_std[0], zero], [zero, h_std[1]]]).astype(np.complex128)
                else:
                    h_blocks[key] = h_std[0]
    structure.overlap = BlockMatrix.from_blocks(s_blocks)
    structure.hamiltonian = BlockMatrix.from_blocks(h_blocks)
    structure.spinful = nspin == 2
    hermiticity_error = _check_symmetric(structure, folder)
    diagnostics = {
        "number_of_pairs": len(s_blocks),
        "max_dropped_hamiltonian_eV": dropped,
        "hermiticity_error_eV": hermiticity_error,
    }
    return structure, diagnostics


def _check_symmetric(structure: DeepHStructure, folder: Path) -> float:
    """The CSR files have no header: a file cut at a line end, or a changed digit, shows only as S or H losing
    X_ij(R) = X_ji(−R)ᵀ (CP2K writes both halves), or as a home-cell overlap diagonal that is not positive.
    Returns H's error (eV)."""
    sizes, offsets = structure.orbitals_per_atom(), structure.orbital_offsets()
    diagonal = np.zeros(structure.norbitals)
    for i in range(structure.natoms):
        if (0, 0, 0, i, i) in structure.overlap:
            diagonal[offsets[i]:offsets[i] + sizes[i]] = np.diag(structure.overlap[(0, 0, 0, i, i)])
    if np.any(diagonal <= 0):
        raise Cp2kOutputError(f"{folder}: the home-cell overlap has a non-positive diagonal: a CSR file is cut short")
    errors = {"S": structure.overlap.hermiticity_error(), "H": structure.hamiltonian.hermiticity_error()}
    for name, tolerance in (("S", OVERLAP_SYMMETRY_TOLERANCE), ("H", HAMILTONIAN_SYMMETRY_TOLERANCE_EV)):
        if errors[name] > tolerance:
            raise Cp2kOutputError(f"{folder}: {name}(R) and {name}(−R)ᵀ differ by {errors[name]:.3g} (more than "
                                  f"{tolerance:g}): a CSR file is truncated or corrupted")
    return errors["H"]

"""The DeepH standard data format (DeepH-pack 1.0 / deepx-dock): one folder per structure.

``POSCAR`` (Cartesian, Å), ``info.json``, ``overlap.h5`` and ``hamiltonian.h5``. Each ``.h5`` holds ``atom_pairs``
(P, 5) int64 rows ``[Rx, Ry, Rz, i, j]`` (0-based atoms in POSCAR order), ``chunk_shapes`` (P, 2),
``chunk_boundaries`` (P + 1) and ``entries``: the blocks ⟨φ_i,0|H|φ_j,R⟩ flattened row-major, float64 (spinless) or
complex128 (spinful, spin-major (2n_i, 2n_j) blocks). Orbitals inside a shell are in the standard m = −l..l order
(:mod:`aiida_deeph.io.conventions`); energies in eV.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from .atomic_write import atomic_path, write_text

PairKey = tuple[int, int, int, int, int]  # (Rx, Ry, Rz, i, j)
H5_DATASETS = ("atom_pairs", "chunk_shapes", "chunk_boundaries", "entries")
MAX_SHELL_L = 7  # s … i, the letters the DFT codes print
H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError)  # what h5py raises on a damaged file


class DeepHFormatError(ValueError):
    """A DeepH-format file is missing, truncated or inconsistent."""


def read_h5_datasets(path: Path, names: Sequence[str] | None = None,
                     error: type[DeepHFormatError] = DeepHFormatError) -> dict[str, np.ndarray]:
    """Numeric datasets ``names`` (default: every top-level one) of an HDF5 file, as arrays.

    A damaged file, a missing or non-numeric dataset, or one declaring more bytes than the file holds raises
    ``error`` naming the file.
    """
    try:
        with h5py.File(path, "r") as handle:
            names = list(handle) if names is None else list(names)
            bad = [name for name in names if name not in handle or not _plain_dataset(handle[name], path)]
            if bad:
                raise error(f"{path}: missing or malformed dataset(s) {', '.join(bad)}")
            return {name: np.asarray(handle[name][()]) for name in names}
    except error:
        raise
    except H5_ERRORS as exc:
        raise error(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from exc


def _plain_dataset(item: object, path: Path) -> bool:
    """A numeric dataset whose declared size fits the file (uncompressed: a corrupted shape would allocate it)."""
    if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "biufc":
        return False
    return item.compression is not None or item.size * item.dtype.itemsize <= path.stat().st_size


@dataclass
class BlockMatrix:
    """A sparse real-space operator X_ij(R) stored as the DeepH ``.h5`` datasets."""

    atom_pairs: np.ndarray
    chunk_shapes: np.ndarray
    chunk_boundaries: np.ndarray
    entries: np.ndarray
    _index: dict[PairKey, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.atom_pairs = np.asarray(self.atom_pairs, dtype=np.int64).reshape(-1, 5)
        self.chunk_shapes = np.asarray(self.chunk_shapes, dtype=np.int64).reshape(-1, 2)
        self.chunk_boundaries = np.asarray(self.chunk_boundaries, dtype=np.int64).reshape(-1)
        self.entries = np.asarray(self.entries).reshape(-1)
        npairs = len(self.atom_pairs)
        if len(self.chunk_shapes) != npairs or len(self.chunk_boundaries) != npairs + 1:
            raise DeepHFormatError(
                f"inconsistent datasets: {npairs} atom_pairs, {len(self.chunk_shapes)} chunk_shapes, "
                f"{len(self.chunk_boundaries)} chunk_boundaries (expected {npairs + 1})"
            )
        if np.any(self.chunk_shapes < 0):
            raise DeepHFormatError("negative block shape in chunk_shapes")
        sizes = np.prod(self.chunk_shapes, axis=1)
        if self.chunk_boundaries[0] != 0 or np.any(np.diff(self.chunk_boundaries) != sizes):
            raise DeepHFormatError("chunk_boundaries are not the cumulative sum of the chunk sizes")
        if self.chunk_boundaries[-1] != len(self.entries):
            raise DeepHFormatError(
                f"entries has {len(self.entries)} values but chunk_boundaries ends at {self.chunk_boundaries[-1]}"
            )

    @classmethod
    def from_blocks(cls, blocks: Mapping[PairKey, np.ndarray], sort: bool = True) -> "BlockMatrix":
        """Build from ``{(Rx, Ry, Rz, i, j): block}``; sorted by key unless ``sort`` is False."""
        keys = sorted(blocks) if sort else list(blocks)
        arrays = [np.asarray(blocks[key]) for key in keys]
        complex_ = any(np.iscomplexobj(a) for a in arrays)
        dtype = np.complex128 if complex_ else np.float64
        shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(-1, 2)
        boundaries = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))]).astype(np.int64)
        entries = np.concatenate([a.astype(dtype).ravel() for a in arrays]) if arrays else np.zeros(0, dtype)
        return cls(np.array(keys, dtype=np.int64).reshape(-1, 5), shapes, boundaries, entries)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "BlockMatrix":
        path = Path(path)
        data = read_h5_datasets(path, H5_DATASETS)
        if data["entries"].dtype.kind not in "fc" or not np.all(np.isfinite(data["entries"])):
            raise DeepHFormatError(f"{path}: entries must be finite real or complex numbers")
        try:
            matrix = cls(**data)
        except ValueError as exc:  # our consistency checks, or numpy's on datasets of the wrong shape
            raise DeepHFormatError(f"{path}: {exc}") from exc
        if _has_repeated_rows(matrix.atom_pairs):
            raise DeepHFormatError(f"{path}: an atom pair is listed twice in atom_pairs")
        return matrix

    @classmethod
    def read_selected(cls, path: str | os.PathLike,
                      choose: Callable[["BlockMatrix", int], np.ndarray]) -> tuple["BlockMatrix", np.ndarray]:
        """The blocks that ``choose(chunk, first)`` keeps (a mask over the chunk's pairs, ``first`` its first pair),
        and the mask over every pair; the entries are read a chunk of ~4M at a time, so a large file costs only
        what is kept (e.g. a large cell's overlap pruned by block max)."""
        path = Path(path)
        meta = read_h5_datasets(path, H5_DATASETS[:3])
        try:
            with h5py.File(path, "r") as handle:
                if "entries" not in handle or not _plain_dataset(handle["entries"], path):
                    raise DeepHFormatError(f"{path}: missing or malformed dataset(s) entries")
                entries = handle["entries"]
                boundaries = meta["chunk_boundaries"].reshape(-1)
                if len(boundaries) != len(meta["atom_pairs"]) + 1 or boundaries[-1] != len(entries) \
                        or entries.dtype.kind not in "fc":
                    raise DeepHFormatError(f"{path}: entries do not match chunk_boundaries")
                parts, masks = [], []
                for first, last in _pair_chunks(len(boundaries) - 1, int(boundaries[-1])):
                    values = np.asarray(entries[boundaries[first] : boundaries[last]])
                    if not np.all(np.isfinite(values)):
                        raise DeepHFormatError(f"{path}: entries must be finite real or complex numbers")
                    chunk = cls(meta["atom_pairs"][first:last], meta["chunk_shapes"][first:last],
                                boundaries[first : last + 1] - boundaries[first], values)
                    masks.append(np.asarray(choose(chunk, first), dtype=bool))
                    parts.append(chunk.subset(masks[-1]))
        except DeepHFormatError:
            raise
        except (*H5_ERRORS, MemoryError) as exc:
            raise DeepHFormatError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from exc
        sizes = [np.diff(part.chunk_boundaries) for part in parts]
        matrix = cls(np.concatenate([part.atom_pairs for part in parts]) if parts else np.zeros((0, 5), np.int64),
                     np.concatenate([part.chunk_shapes for part in parts]) if parts else np.zeros((0, 2), np.int64),
                     np.concatenate([[0], np.cumsum(np.concatenate(sizes))]) if parts else np.zeros(1, np.int64),
                     np.concatenate([part.entries for part in parts]) if parts else np.zeros(0))
        if _has_repeated_rows(matrix.atom_pairs):
            raise DeepHFormatError(f"{path}: an atom pair is listed twice in atom_pairs")
        return matrix, np.concatenate(masks) if masks else np.zeros(0, dtype=bool)

    def write(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as handle:
                for name in H5_DATASETS:
                    handle.create_dataset(name, data=getattr(self, name))

    def __len__(self) -> int:
        return len(self.atom_pairs)

    @property
    def is_complex(self) -> bool:
        return np.iscomplexobj(self.entries)

    @property
    def index(self) -> dict[PairKey, int]:
        if self._index is None:
            self._index = {tuple(int(x) for x in row): n for n, row in enumerate(self.atom_pairs)}
        return self._index

    def block(self, n: int) -> np.ndarray:
        start, stop = self.chunk_boundaries[n], self.chunk_boundaries[n + 1]
        return self.entries[start:stop].reshape(self.chunk_shapes[n])

    def __getitem__(self, key: PairKey) -> np.ndarray:
        return self.block(self.index[tuple(key)])

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def items(self) -> Iterable[tuple[PairKey, np.ndarray]]:
        for key, n in self.index.items():
            yield key, self.block(n)

    def to_blocks(self) -> dict[PairKey, np.ndarray]:
        return {key: block.copy() for key, block in self.items()}

    def block_max(self) -> np.ndarray:
        """max |X| of each block, (P,); pairs a chunk at a time, so 10⁸-entry matrices need no full-size temporary."""
        largest = np.zeros(len(self))
        for first, last in self._pair_chunks():
            bounds = self.chunk_boundaries[first : last + 1]
            nonempty = np.diff(bounds) > 0
            values = np.abs(self.entries[bounds[0] : bounds[-1]])
            largest[first:last][nonempty] = np.maximum.reduceat(values, bounds[:-1][nonempty] - bounds[0])
        return largest

    def subset(self, keep: np.ndarray) -> "BlockMatrix":
        """The blocks where the boolean mask ``keep`` (P,) is True, in their order (entries copied)."""
        keep = np.asarray(keep, dtype=bool)
        sizes = np.diff(self.chunk_boundaries)
        boundaries = np.concatenate([[0], np.cumsum(sizes[keep])])
        entries = np.empty(boundaries[-1], dtype=self.entries.dtype)
        written = 0
        for first, last in self._pair_chunks():
            chosen = keep[first:last]
            lengths = sizes[first:last][chosen]
            ends = np.cumsum(lengths)
            gather = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths) \
                + np.repeat(self.chunk_boundaries[first:last][chosen], lengths)
            entries[written : written + len(gather)] = self.entries[gather]
            written += len(gather)
        return BlockMatrix(self.atom_pairs[keep], self.chunk_shapes[keep], boundaries, entries)

    def _pair_chunks(self) -> Iterable[tuple[int, int]]:
        return _pair_chunks(len(self), len(self.entries))

    def hermiticity_error(self) -> float:
        """max |X_ij(R) − X_ji(−R)^†| over the stored pairs; a missing partner counts as an infinite error."""
        worst = 0.0
        for (rx, ry, rz, i, j), block in self.items():
            partner = (-rx, -ry, -rz, j, i)
            if partner not in self.index:
                return float("inf")
            worst = max(worst, float(np.max(np.abs(block - self[partner].conj().T), initial=0.0)))
        return worst

    def at_k(self, kpoint: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
        """Dense X(k) = Σ_R e^{2πi k·R} X(R), k fractional. ``offsets``/``size`` are per-atom orbital offsets."""
        kpoint = np.asarray(kpoint, dtype=float)
        phases = np.exp(2j * np.pi * self.atom_pairs[:, :3] @ kpoint)
        spin = 2 if self.is_complex and self._spin_doubled(offsets, size) else 1
        matrix = np.zeros((spin * size, spin * size), dtype=np.complex128)
        for n, (_, _, _, i, j) in enumerate(self.atom_pairs):
            block = self.block(n) * phases[n]
            ni, nj = block.shape[0] // spin, block.shape[1] // spin
            for si in range(spin):
                for sj in range(spin):
                    rows = slice(si * size + offsets[i], si * size + offsets[i] + ni)
                    cols = slice(sj * size + offsets[j], sj * size + offsets[j] + nj)
                    matrix[rows, cols] += block[si * ni : (si + 1) * ni, sj * nj : (sj + 1) * nj]
        return matrix

    def _spin_doubled(self, offsets: np.ndarray, size: int) -> bool:
        i, j = self.atom_pairs[0, 3], self.atom_pairs[0, 4]
        n_i = (offsets[i + 1] if i + 1 < len(offsets) else size) - offsets[i]
        return bool(self.chunk_shapes[0, 0] == 2 * n_i)


@dataclass
class DeepHStructure:
    """One structure in the DeepH format, in memory."""

    lattice: np.ndarray  # (3, 3), rows are the lattice vectors, Å
    species: list[str]  # per atom, grouped by element in order of first appearance
    positions: np.ndarray  # (N, 3) Cartesian, Å
    elements_orbital_map: dict[str, list[int]]  # element -> l of each shell, in the basis order
    fermi_energy_eV: float = 0.0
    spinful: bool = False
    hamiltonian: BlockMatrix | None = None
    overlap: BlockMatrix | None = None
    occupation: float | None = None
    extra_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lattice = np.asarray(self.lattice, dtype=float).reshape(3, 3)
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        self.species = [str(s) for s in self.species]
        if len(self.species) != len(self.positions):
            raise DeepHFormatError(f"{len(self.species)} species for {len(self.positions)} positions")
        missing = sorted(set(self.species) - set(self.elements_orbital_map))
        if missing:
            raise DeepHFormatError(f"elements_orbital_map has no basis for {', '.join(missing)}")
        seen: list[str] = []
        for element in self.species:
            if element not in seen:
                seen.append(element)
            elif seen[-1] != element:
                raise DeepHFormatError("atoms must be grouped by element (POSCAR order); sort them first")

    # --- sizes -----------------------------------------------------------------------------------------------
    @property
    def natoms(self) -> int:
        return len(self.species)

    def orbitals_per_atom(self) -> np.ndarray:
        return np.array([sum(2 * l + 1 for l in self.elements_orbital_map[s]) for s in self.species], dtype=np.int64)

    def orbital_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.orbitals_per_atom())[:-1]]).astype(np.int64)

    @property
    def norbitals(self) -> int:
        return int(self.orbitals_per_atom().sum())

    @property
    def elements(self) -> list[str]:
        return list(dict.fromkeys(self.species))

    # --- physics -----------------------------------------------------------------------------------------------
    def hk_sk(self, kpoint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dense H(k), S(k) at a fractional k-point (small cells only). Spinful: spin-major (2N, 2N)."""
        if self.hamiltonian is None or self.overlap is None:
            raise DeepHFormatError("H(k) needs both the Hamiltonian and the overlap")
        offsets, size = self.orbital_offsets(), self.norbitals
        hk = self.hamiltonian.at_k(kpoint, offsets, size)
        sk = self.overlap.at_k(kpoint, offsets, size)
        if hk.shape != sk.shape:
            sk = np.kron(np.eye(2), sk)
        return hk, sk

    def eigenvalues(self, kpoints: np.ndarray) -> np.ndarray:
        """Eigenvalues (eV) of H(k)c = εS(k)c for each fractional k-point, shape (nk, nbands)."""
        from scipy.linalg import eigh

        kpoints = np.atleast_2d(np.asarray(kpoints, dtype=float))
        return np.array([eigh(*self.hk_sk(k), eigvals_only=True) for k in kpoints])

    # --- files -------------------------------------------------------------------------------------------------
    def pruned(self, overlap_tolerance: float) -> "DeepHStructure":
        """The same structure without the atom pairs whose overlap block has max |S| < ``overlap_tolerance``.

        The effective parameters of a large cell: the pairs of an exact overlap reach far (|S| ≥ 1e-10: 11.3 Å in
        DZVP-MOLOPT), and the fill of a sparse factorization grows with that range. H keeps the pairs S keeps; the
        two mirror blocks X_ij(R), X_ji(−R) share their max, so H and S stay Hermitian. What the tolerance costs
        in eigenvalues is measured in benchmarks/bench_tbg_bands.py (docs/inference.md).
        """
        if self.overlap is None:
            raise ValueError("pruning by overlap needs the overlap")
        _check_tolerance(overlap_tolerance)
        keep = self.overlap.block_max() >= overlap_tolerance
        overlap = self.overlap.subset(keep)
        hamiltonian = None
        if self.hamiltonian is not None:
            if np.array_equal(self.hamiltonian.atom_pairs, self.overlap.atom_pairs):
                hamiltonian = self.hamiltonian.subset(keep)
            else:
                hamiltonian = self.hamiltonian.subset(_listed_in(self.hamiltonian.atom_pairs, overlap.atom_pairs))
        return replace(self, hamiltonian=hamiltonian, overlap=overlap)

    def info(self) -> dict:
        info = {
            "atoms_quantity": self.natoms,
            "orbits_quantity": self.norbitals,
            "orthogonal_basis": False,
            "spinful": self.spinful,
            "fermi_energy_eV": self.fermi_energy_eV,
            "elements_orbital_map": {el: list(self.elements_orbital_map[el]) for el in self.elements},
        }
        if self.occupation is not None:
            info["occupation"] = self.occupation
        info.update(self.extra_info)
        return info

    def write(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "POSCAR", format_poscar(self.lattice, self.species, self.positions))
        write_text(folder / "info.json", json.dumps(self.info()))
        if self.overlap is not None:
            self.overlap.write(folder / "overlap.h5")
        if self.hamiltonian is not None:
            self.hamiltonian.write(folder / "hamiltonian.h5")
        return folder

    @classmethod
    def read(cls, folder: str | os.PathLike, hamiltonian_file: str = "hamiltonian.h5",
             overlap_tolerance: float | None = None) -> "DeepHStructure":
        """The structure of a DeepH folder; with ``overlap_tolerance`` only the pairs :meth:`pruned` keeps, read a
        chunk at a time (a 10⁴-atom folder of several GB is never whole in memory)."""
        folder = Path(folder)
        for name in ("POSCAR", "info.json"):
            if not (folder / name).is_file():
                raise DeepHFormatError(f"{folder}: {name} is missing; not a DeepH structure folder")
        lattice, species, positions = parse_poscar(read_text(folder / "POSCAR"), str(folder / "POSCAR"))
        info = _read_info(folder / "info.json")
        known = {"atoms_quantity", "orbits_quantity", "orthogonal_basis", "spinful", "fermi_energy_eV",
                 "elements_orbital_map", "occupation"}
        if overlap_tolerance is None:
            matrices = {name: BlockMatrix.read(folder / name) if (folder / name).exists() else None
                        for name in (hamiltonian_file, "overlap.h5")}
        else:
            matrices = _read_pruned(folder, hamiltonian_file, overlap_tolerance)
        try:
            structure = cls(
                lattice=lattice,
                species=species,
                positions=positions,
                elements_orbital_map=info["elements_orbital_map"],
                fermi_energy_eV=float(info.get("fermi_energy_eV", 0.0)),
                spinful=info.get("spinful", False),
                hamiltonian=matrices[hamiltonian_file],
                overlap=matrices["overlap.h5"],
                occupation=info.get("occupation"),
                extra_info={k: v for k, v in info.items() if k not in known},
            )
        except DeepHFormatError as exc:
            raise DeepHFormatError(f"{folder}: {exc}") from exc
        if info.get("atoms_quantity", structure.natoms) != structure.natoms:
            raise DeepHFormatError(f"{folder}: info.json atoms_quantity disagrees with POSCAR")
        if info.get("orbits_quantity", structure.norbitals) != structure.norbitals:
            raise DeepHFormatError(f"{folder}: info.json orbits_quantity disagrees with elements_orbital_map")
        spin = 2 if structure.spinful else 1
        for name, factors in ((hamiltonian_file, {spin}), ("overlap.h5", {1, spin})):  # S may be spin-doubled
            _check_blocks(structure, matrices[name], factors, folder / name)
        return structure


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """One opaque scalar per row of a (P, 5) integer array, equal for equal rows, that numpy sorts and compares
    (a Python set of 10⁶ tuples takes seconds)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(-1)


def _has_repeated_rows(rows: np.ndarray) -> bool:
    return len(np.unique(_row_keys(rows))) != len(rows)


def _pair_chunks(npairs: int, nentries: int, entries_per_chunk: int = 1 << 22) -> Iterable[tuple[int, int]]:
    """(first, last) pair ranges holding about ``entries_per_chunk`` entries each."""
    pairs_per_chunk = max(1, entries_per_chunk * npairs // max(nentries, 1))
    return ((first, min(first + pairs_per_chunk, npairs)) for first in range(0, npairs, pairs_per_chunk))


def _read_pruned(folder: Path, hamiltonian_file: str, overlap_tolerance: float) -> dict[str, BlockMatrix | None]:
    """H and S restricted to the pairs whose overlap block has max |S| ≥ ``overlap_tolerance`` (see
    :meth:`DeepHStructure.pruned`), without reading the dropped blocks into memory."""
    _check_tolerance(overlap_tolerance)
    if not (folder / "overlap.h5").exists():
        raise ValueError("pruning by overlap needs the overlap")
    overlap, keep = BlockMatrix.read_selected(folder / "overlap.h5",
                                              lambda chunk, _: chunk.block_max() >= overlap_tolerance)
    hamiltonian = None
    if (folder / hamiltonian_file).exists():
        pairs = {name: read_h5_datasets(folder / name, ["atom_pairs"])["atom_pairs"]
                 for name in (hamiltonian_file, "overlap.h5")}
        if np.array_equal(pairs[hamiltonian_file], pairs["overlap.h5"]):  # H predicted on S's pairs: the usual case
            hamiltonian, _ = BlockMatrix.read_selected(folder / hamiltonian_file,
                                                       lambda chunk, first: keep[first : first + len(chunk)])
        else:
            hamiltonian, _ = BlockMatrix.read_selected(
                folder / hamiltonian_file, lambda chunk, _: _listed_in(chunk.atom_pairs, overlap.atom_pairs))
    return {hamiltonian_file: hamiltonian, "overlap.h5": overlap}


def _listed_in(pairs: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``pairs`` that are rows of ``kept`` (both (P, 5) atom_pairs)."""
    return np.isin(_row_keys(pairs), _row_keys(kept))


def _check_tolerance(overlap_tolerance: float) -> None:
    if overlap_tolerance <= 0:
        raise ValueError(f"overlap_tolerance must be > 0, got {overlap_tolerance}")


def read_text(path: Path, error: type[DeepHFormatError] = DeepHFormatError) -> str:
    """A UTF-8 text file; an unreadable one raises ``error`` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read as text ({exc})") from exc


def _read_info(path: Path) -> dict:
    """info.json, with the types of the keys the structure is built from checked."""
    try:
        info = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DeepHFormatError(f"{path}: invalid JSON ({exc})") from exc
    shells = info.get("elements_orbital_map") if isinstance(info, dict) else None
    if not isinstance(shells, dict) or not all(
            isinstance(ls, list) and all(type(l) is int and 0 <= l < MAX_SHELL_L for l in ls)
            for ls in shells.values()):
        raise DeepHFormatError(f"{path}: elements_orbital_map must map elements to lists of l (0 ≤ l < {MAX_SHELL_L})")
    numbers = [info.get("fermi_energy_eV", 0.0), info.get("occupation", 0.0)]
    if not all(isinstance(x, (int, float)) and np.isfinite(x) for x in numbers if x is not None) \
            or not isinstance(info.get("spinful", False), bool):
        raise DeepHFormatError(f"{path}: fermi_energy_eV and occupation must be finite numbers, spinful true or false")
    return info


def _check_blocks(structure: "DeepHStructure", matrix: BlockMatrix | None, factors: set[int], path: Path) -> None:
    """Every pair names atoms of the structure and has their orbital counts × one of ``factors`` (2: spinful)."""
    if matrix is None or not len(matrix):
        return
    atoms = matrix.atom_pairs[:, 3:]
    if atoms.min() < 0 or atoms.max() >= structure.natoms:
        raise DeepHFormatError(f"{path}: atom_pairs name atoms outside the {structure.natoms} of POSCAR")
    sizes = structure.orbitals_per_atom()
    shapes = np.stack([sizes[atoms[:, 0]], sizes[atoms[:, 1]]], axis=1)
    if not any(np.array_equal(matrix.chunk_shapes, factor * shapes) for factor in factors):
        raise DeepHFormatError(f"{path}: block shapes disagree with elements_orbital_map")


def format_poscar(lattice: np.ndarray, species: list[str], positions: np.ndarray, comment: str = "") -> str:
    elements = list(dict.fromkeys(species))
    counts = [species.count(el) for el in elements]
    lines = [comment or "POSCAR written by aiida-deeph", "1.0"]
    lines += ["  " + " ".join(repr(float(x)) for x in row) for row in np.asarray(lattice)]
    lines += [" ".join(elements), " ".join(str(c) for c in counts), "Cartesian"]
    lines += ["  " + " ".join(repr(float(x)) for x in row) for row in np.asarray(positions)]
    return "\n".join(lines) + "\n"


def parse_poscar(text: str, source: str = "POSCAR") -> tuple[np.ndarray, list[str], np.ndarray]:
    """Parse a VASP5 POSCAR (symbols line required); returns lattice rows, species and Cartesian positions in Å."""
    lines = text.splitlines()
    try:
        scale = float(lines[1].split()[0])
        lattice = np.array([[float(x) for x in lines[i].split()[:3]] for i in (2, 3, 4)])
        elements = lines[5].split()
        counts = [int(x) for x in lines[6].split()]
        mode_line = 7
        if lines[mode_line].strip()[:1].lower() == "s":  # Selective dynamics
            mode_line += 1
        cartesian = lines[mode_line].strip()[:1].lower() in ("c", "k")
        natoms = sum(counts)
        coords = np.array([[float(x) for x in lines[mode_line + 1 + n].split()[:3]] for n in range(natoms)])
    except (IndexError, ValueError) as exc:
        raise DeepHFormatError(f"{source}: malformed POSCAR ({exc})") from exc
    if len(elements) != len(counts) or min(counts, default=0) < 0 or coords.shape != (natoms, 3):
        raise DeepHFormatError(f"{source}: element and count lines differ, or a count is negative")
    volume = abs(np.linalg.det(lattice)) if np.all(np.isfinite(lattice)) else 0.0
    if not (np.isfinite(scale) and scale != 0 and volume > 0 and np.all(np.isfinite(coords))):
        raise DeepHFormatError(f"{source}: non-finite numbers, a zero scale or a singular lattice")
    if scale < 0:  # negative scale = target volume
        scale = (-scale / volume) ** (1 / 3)
    lattice = lattice * scale
    positions = coords * scale if cartesian else coords @ lattice
    species = [el for el, c in zip(elements, counts) for _ in range(c)]
    return lattice, species, positions

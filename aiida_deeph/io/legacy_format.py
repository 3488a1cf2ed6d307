"""Export to the legacy DeepH format read by DeepH-pack 0.2.x and DeepH-E3, and its block files read back.

Per structure: ``lat.dat`` (lattice vectors as columns, Å), ``rlat.dat``, ``site_positions.dat`` (3 × N, Å),
``element.dat`` (Z), ``orbital_types.dat``, ``R_list.dat``, ``info.json`` and ``hamiltonians.h5`` / ``overlaps.h5``
with one dataset per ``"[Rx, Ry, Rz, i, j]"`` key, **1-based** atoms, blocks in **OpenMX** orbital order. The
overlap-only OpenMX writes its ``overlaps_<rank>.h5`` in the same layout: :func:`read_legacy_blocks` reads both.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
from ase.data import atomic_numbers

from .atomic_write import atomic_path, write_text
from .conventions import LEGACY_CODE, from_standard
from .deeph_format import BlockMatrix, DeepHFormatError, DeepHStructure, PairKey, read_h5_datasets

LEGACY_KEY = re.compile(r"\[\s*(-?\d+),\s*(-?\d+),\s*(-?\d+),\s*(\d+),\s*(\d+)\s*\]")


class LegacyFormatError(DeepHFormatError):
    """A legacy block file is unreadable, or holds something other than ``"[Rx, Ry, Rz, i, j]"`` 2-d blocks."""


def legacy_key(key: tuple[int, int, int, int, int]) -> str:
    rx, ry, rz, i, j = key
    return f"[{rx}, {ry}, {rz}, {i + 1}, {j + 1}]"


def _write_blocks(path: Path, matrix: BlockMatrix, structure: DeepHStructure) -> None:
    shells = [structure.elements_orbital_map[s] for s in structure.species]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for key, block in matrix.items():
            i, j = key[3], key[4]
            handle.create_dataset(legacy_key(key), data=from_standard(block, LEGACY_CODE, shells[i], shells[j]))


def write_legacy(structure: DeepHStructure, folder: str | os.PathLike) -> Path:
    """Write ``structure`` as a legacy DeepH folder; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lat = structure.lattice.T
    with atomic_path(folder / "lat.dat") as tmp:
        np.savetxt(tmp, lat)
    with atomic_path(folder / "rlat.dat") as tmp:
        np.savetxt(tmp, 2 * np.pi * np.linalg.inv(lat).T)
    with atomic_path(folder / "site_positions.dat") as tmp:
        np.savetxt(tmp, structure.positions.T)
    with atomic_path(folder / "element.dat") as tmp:
        np.savetxt(tmp, [atomic_numbers[s] for s in structure.species], fmt="%d")
    write_text(
        folder / "orbital_types.dat",
        "".join(" ".join(str(l) for l in structure.elements_orbital_map[s]) + "\n" for s in structure.species),
    )
    source = structure.overlap if structure.overlap is not None else structure.hamiltonian
    r_list = sorted({tuple(int(x) for x in row[:3]) for row in source.atom_pairs}) if source is not None else []
    write_text(folder / "R_list.dat", "".join(f"{rx} {ry} {rz}\n" for rx, ry, rz in r_list))
    info = {
        "nsites": structure.natoms,
        "isorthogonal": False,
        "isspinful": structure.spinful,
        "fermi_level": structure.fermi_energy_eV,
    }
    write_text(folder / "info.json", json.dumps(info))
    if structure.hamiltonian is not None:
        _write_blocks(folder / "hamiltonians.h5", structure.hamiltonian, structure)
    if structure.overlap is not None:
        _write_blocks(folder / "overlaps.h5", structure.overlap, structure)
    return folder


def read_legacy_blocks(path: str | os.PathLike) -> dict[PairKey, np.ndarray]:
    """Blocks of a legacy ``hamiltonians.h5`` / ``overlaps.h5``: 0-based keys, blocks as stored (OpenMX order)."""
    path = Path(path)
    blocks = {}
    for key, block in read_h5_datasets(path, error=LegacyFormatError).items():
        match = LEGACY_KEY.fullmatch(key)
        if not match or int(match[4]) < 1 or int(match[5]) < 1:
            raise LegacyFormatError(f"{path}: dataset {key[:80]!r} is not an '[Rx, Ry, Rz, i, j]' key (1-based)")
        if block.ndim != 2 or block.dtype.kind not in "fc" or not np.all(np.isfinite(block)):
            raise LegacyFormatError(f"{path}: dataset {key} is not a 2-d block of finite numbers")
        rx, ry, rz, i, j = (int(x) for x in match.groups())
        blocks[(rx, ry, rz, i - 1, j - 1)] = block
    return blocks

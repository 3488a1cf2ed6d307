"""``deeph.hamiltonian``: one structure in the DeepH format, its files kept in the node repository."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from aiida import orm

from aiida_deeph.io.deeph_format import DeepHStructure

from .folder_data import ChecksummedFolderData

DEEPH_FILES = ("POSCAR", "info.json", "hamiltonian.h5", "overlap.h5")


class HamiltonianData(ChecksummedFolderData):
    """H_ij(R) and S_ij(R) of one structure in the DeepH standard format (eV, Å).

    The repository holds the DeepH folder as written by :class:`~aiida_deeph.io.deeph_format.DeepHStructure`,
    so ``export_deeph`` gives DeepH-pack and deepx-dock exactly the files they read. Either matrix may be absent:
    an overlap-only node is the input of inference on a large target.
    """

    def __init__(self, folder: str | os.PathLike | None = None, structure: DeepHStructure | None = None, **kwargs):
        super().__init__(**kwargs)
        if (folder is None) == (structure is None):
            raise ValueError("give exactly one of `folder` (a DeepH structure folder) or `structure`")
        with tempfile.TemporaryDirectory() as tmp:
            if structure is None:
                structure = DeepHStructure.read(folder)  # validates the folder before anything is stored
                source = Path(folder)
            else:
                source = structure.write(tmp)
            self._store_folder(source, DEEPH_FILES)
        self._set_attributes(structure)

    def _set_attributes(self, structure: DeepHStructure) -> None:
        attributes = {
            "natoms": structure.natoms,
            "elements": structure.elements,
            "elements_orbital_map": {el: list(ls) for el, ls in structure.elements_orbital_map.items()},
            "norbitals": structure.norbitals,
            "spinful": structure.spinful,
            "fermi_energy_eV": structure.fermi_energy_eV,
            "has_hamiltonian": structure.hamiltonian is not None,
            "has_overlap": structure.overlap is not None,
            "npairs": len(structure.overlap if structure.overlap is not None else structure.hamiltonian or []),
            "units": {"energy": "eV", "length": "Angstrom"},
        }
        for key, value in attributes.items():
            self.base.attributes.set(key, value)

    # --- attributes -------------------------------------------------------------------------------------------
    @property
    def natoms(self) -> int:
        return self.base.attributes.get("natoms")

    @property
    def elements_orbital_map(self) -> dict[str, list[int]]:
        return self.base.attributes.get("elements_orbital_map")

    @property
    def spinful(self) -> bool:
        return self.base.attributes.get("spinful")

    @property
    def fermi_energy(self) -> float:
        """Fermi level in eV."""
        return self.base.attributes.get("fermi_energy_eV")

    @property
    def npairs(self) -> int:
        return self.base.attributes.get("npairs")

    # --- content ----------------------------------------------------------------------------------------------
    def export_deeph(self, path: str | os.PathLike) -> Path:
        """Write the DeepH folder (POSCAR, info.json, hamiltonian.h5, overlap.h5) to ``path``, sha256-checked."""
        return self.export(path)

    def get_deeph(self) -> DeepHStructure:
        """The content as an in-memory :class:`DeepHStructure`."""
        with tempfile.TemporaryDirectory() as tmp:
            return DeepHStructure.read(self.export_deeph(tmp))

    def get_structure(self) -> orm.StructureData:
        deeph = self.get_deeph()
        structure = orm.StructureData(cell=deeph.lattice.tolist(), pbc=(True, True, True))
        for symbol, position in zip(deeph.species, deeph.positions):
            structure.append_atom(position=position.tolist(), symbols=symbol)
        return structure

    def hk(self, kpoints) -> tuple[np.ndarray, np.ndarray]:
        """Dense H(k), S(k) for fractional k-points, shape (nk, n, n) each (small cells only)."""
        deeph = self.get_deeph()
        pairs = [deeph.hk_sk(k) for k in np.atleast_2d(np.asarray(kpoints, dtype=float))]
        return np.array([h for h, _ in pairs]), np.array([s for _, s in pairs])

    def eigenvalues(self, kpoints) -> np.ndarray:
        """Eigenvalues (eV) of H(k)c = εS(k)c at fractional k-points, shape (nk, nbands) (dense; small cells)."""
        return self.get_deeph().eigenvalues(kpoints)

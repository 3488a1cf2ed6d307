"""Parser of ``deeph.openmx``: ``.out`` → output parameters; ``.scfout``, or overlap-only HDF5 → HamiltonianData."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from aiida_deeph.calculations.lcao import atom_symbols
from aiida_deeph.calculations.openmx import OVERLAP_FILES, SYSTEM_NAME
from aiida_deeph.io.conventions import to_standard
from aiida_deeph.io.deeph_format import BlockMatrix, DeepHStructure
from aiida_deeph.io.legacy_format import read_legacy_blocks
from aiida_deeph.io.openmx import OpenMXFormatError, openmx_to_deeph, read_openmx_out
from aiida_deeph.io.units import OPENMX_HARTREE_TO_EV
from aiida_deeph.parsers.lcao import LcaoParser, OutputMissing, last_number

FINISHED = "The calculation was normally finished."


class DeepHOpenmxParser(LcaoParser):
    def parse_output(self) -> dict:
        if self.overlap_only:
            return self._overlap_run_output()
        with self.retrieved_path(f"{SYSTEM_NAME}.out") as path:
            out = read_openmx_out(path)
            text = path.read_text(encoding="utf-8")
        utot = last_number(text, r"^\s*Utot\.\s+(\S+)")
        return {
            "code": "openmx",
            "version": out.version,
            "fermi_energy": out.chemical_potential * OPENMX_HARTREE_TO_EV,
            "energy": utot * OPENMX_HARTREE_TO_EV if utot is not None else None,
            "converged": out.scf_converged,
            "scf_steps": len(out.scf_band_energies),
            "wall_time": last_number(text, r"^\s*Elapsed\.Time\.\s+(\S+)"),
            "units": {"energy": "eV", "wall_time": "s"},
        }

    def _overlap_run_output(self) -> dict:
        """The overlap-only OpenMX writes no .out: its standard output must end normally."""
        name = self.node.get_option("output_filename")
        with self.retrieved_path(name) as path:
            text = path.read_text(encoding="utf-8", errors="replace")
        if FINISHED not in text:
            raise OpenMXFormatError(f"{name}: no '{FINISHED}' line; the overlap-only run did not finish")
        version = re.search(r"Welcome to OpenMX\s+Ver\.\s*(\S+)", text)
        return {"code": "openmx", "version": version[1] if version else None, "overlap_only": True}

    def convert(self, folder: Path) -> DeepHStructure:
        if self.overlap_only:
            return self._overlap_structure(sorted(folder.glob(Path(OVERLAP_FILES).name)))
        scfout = folder / f"{SYSTEM_NAME}.scfout"
        if not scfout.is_file():
            raise OutputMissing(f"{scfout.name} (was HS.fileout honoured?)")
        return openmx_to_deeph(scfout)

    def _overlap_structure(self, files: list[Path]) -> DeepHStructure:
        """S(R) from the per-rank ``overlaps_<rank>.h5`` on the input structure and orbitals."""
        if not files:
            raise OutputMissing(f"{OVERLAP_FILES} (is the code the overlap-only OpenMX?)")
        structure = self.node.inputs.structure
        species = atom_symbols(structure)
        shells = {el: self.node.inputs.orbitals[el].shells for el in dict.fromkeys(species)}
        blocks = {}
        for path in files:
            for pair, block in read_legacy_blocks(path).items():
                blocks[pair] = self._standard_block(block, pair, species, shells, path)
        return DeepHStructure(
            lattice=np.array(structure.cell),
            species=species,
            positions=np.array([site.position for site in structure.sites]),
            elements_orbital_map=shells,
            overlap=BlockMatrix.from_blocks(blocks),
        )

    @staticmethod
    def _standard_block(block: np.ndarray, pair: tuple[int, ...], species: list[str],
                        shells: dict[str, list[int]], path: Path) -> np.ndarray:
        i, j = pair[3], pair[4]
        if not (0 <= i < len(species) and 0 <= j < len(species)):
            raise OpenMXFormatError(f"{path.name}: pair {pair} names an atom beyond the {len(species)} of the input")
        shells_i, shells_j = shells[species[i]], shells[species[j]]
        expected = (sum(2 * l + 1 for l in shells_i), sum(2 * l + 1 for l in shells_j))
        if block.shape != expected:
            raise OpenMXFormatError(f"{path.name}: block {pair} has shape {block.shape}, the basis gives {expected}")
        return to_standard(block, "openmx", shells_i, shells_j)

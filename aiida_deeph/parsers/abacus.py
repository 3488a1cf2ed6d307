"""Parser of ``deeph.abacus``: ``running_*.log`` → output parameters, ``OUT.ABACUS/*.csr`` → HamiltonianData."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from aiida_deeph.calculations.abacus import OUT_DIR
from aiida_deeph.calculations.lcao import normalize
from aiida_deeph.io.abacus import (
    AbacusFormatError,
    _Basis,
    _overlap_block,
    _overlap_pairs,
    abacus_to_deeph,
    read_csr,
    read_running_log,
    read_stru,
)
from aiida_deeph.io.deeph_format import BlockMatrix, DeepHStructure
from aiida_deeph.parsers.lcao import LcaoParser, OutputMissing, last_number

OVERLAP_NAMES = ("SR.csr", "sr_nao.csr")  # get_S output: ABACUS ≤ 3.10, newer
WALL_TIME = re.compile(r"^\s*Total\s+Time\s*:\s*(\d+)\s*h\s*(\d+)\s*mins?\s*(\d+)\s*secs?", re.M)


class DeepHAbacusParser(LcaoParser):
    def parse_output(self) -> dict:
        name = self._log_name()
        with self.retrieved_path(name) as path:
            text = path.read_text(encoding="utf-8", errors="replace")
            log = None if self.overlap_only else read_running_log(path)
        version = re.search(r"^\s*ABACUS\s+v?(\d+\.\d+\S*)", text, re.M)
        parameters = {"code": "abacus", "version": version[1] if version else None}
        wall_time = WALL_TIME.findall(text)
        if wall_time:
            hours, minutes, seconds = (int(x) for x in wall_time[-1])
            parameters["wall_time"] = 3600 * hours + 60 * minutes + seconds
        if log is None:
            return {**parameters, "overlap_only": True}
        final = last_number(text, r"^\s*!FINAL_ETOT_IS\s+(\S+)\s+eV")  # v3.10; older versions print only the next
        if final is None:
            final = last_number(text, r"final etot is\s+(\S+)\s+eV")
        steps = re.findall(r"ELEC=\s*(\d+)", text)
        return {
            **parameters,
            "fermi_energy": log.fermi_energy_eV,
            "energy": final,
            "converged": log.converged,
            "scf_steps": int(steps[-1]) if steps else 0,
            "units": {"energy": "eV", "wall_time": "s"},
        }

    def _log_name(self) -> str:
        """The ``running_<calculation>.log`` the run left (its name follows the calculation type)."""
        try:
            names = self.retrieved.base.repository.list_object_names(OUT_DIR)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        logs = sorted(name for name in names if name.startswith("running_") and name.endswith(".log"))
        if not logs:
            raise OutputMissing(f"{OUT_DIR}/running_*.log")
        return f"{OUT_DIR}/{logs[0]}"

    def convert(self, folder: Path) -> DeepHStructure:
        matrices = sorted((folder / OUT_DIR).glob("*.csr"))
        if not matrices:
            raise OutputMissing(f"no {OUT_DIR}/*.csr files" + ("" if self.overlap_only else " (out_mat_hs2)"))
        with tempfile.TemporaryDirectory() as tmp:
            # The readers want the calculation folder as ABACUS leaves it: inputs, log and matrices side by side.
            self.node.base.repository.copy_tree(tmp)
            self.retrieved.base.repository.copy_tree(tmp)
            Path(tmp, OUT_DIR).mkdir(exist_ok=True)
            for path in matrices:
                os.symlink(path, Path(tmp, OUT_DIR, path.name))
            return self._overlap_structure(Path(tmp), matrices) if self.overlap_only else abacus_to_deeph(tmp)

    def _overlap_structure(self, folder: Path, matrices: list[Path]) -> DeepHStructure:
        """S(R) of a get_S run on the written STRU, with the shells of the input orbitals (there is no SCF log)."""
        overlap_path = next((p for p in matrices if p.name in OVERLAP_NAMES), None)
        if overlap_path is None:
            raise OutputMissing(f"{' or '.join(OVERLAP_NAMES)} in {OUT_DIR}")
        stru = read_stru(folder / "STRU")
        shells = {label: self.node.inputs.orbitals[label].shells for label, _, _ in stru.species}
        basis = _Basis(stru.labels, [shells[label] for label in stru.labels], shells)
        spin_factor = 2 if str(self._parameter("nspin", 1)) == "4" else 1
        overlap = read_csr(overlap_path)
        if overlap.dimension != spin_factor * basis.offsets[-1]:
            raise AbacusFormatError(
                f"{overlap_path.name}: dimension {overlap.dimension}, the orbitals give "
                f"{spin_factor * basis.offsets[-1]}"
            )
        pairs = _overlap_pairs(overlap, basis, spin_factor)
        return DeepHStructure(
            lattice=stru.cell(),
            species=stru.labels,
            positions=stru.positions(),
            elements_orbital_map=shells,
            spinful=spin_factor == 2,
            overlap=BlockMatrix.from_blocks({key: _overlap_block(overlap, key, basis, spin_factor) for key in pairs}),
        )

    def _parameter(self, key: str, default):
        parameters = self.node.inputs.parameters.get_dict() if "parameters" in self.node.inputs else {}
        return {normalize(k): v for k, v in parameters.items()}.get(key, default)

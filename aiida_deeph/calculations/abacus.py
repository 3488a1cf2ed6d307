"""``deeph.abacus``: an ABACUS LCAO SCF that always writes ``out_mat_hs2`` (H(R), S(R)), or a ``get_S`` overlap run."""

from __future__ import annotations

import numpy as np
from aiida_pseudo.data.pseudo import UpfData

from aiida_deeph.calculations.lcao import LcaoCalculation, atom_symbols, element_order, format_value
from aiida_deeph.io.units import ABACUS_BOHR_TO_ANGSTROM

SUFFIX = "ABACUS"
OUT_DIR = f"OUT.{SUFFIX}"
RESTART_DIR = "restart"  # the parent's charge density (OUT.<suffix>/SPIN*_CHG.cube) is copied here
# The STRU lattice constant is 1 Å in ABACUS's own Bohr, so vectors and positions are written in Å.
ANGSTROM_IN_BOHR = 1 / ABACUS_BOHR_TO_ANGSTROM
# (remote path, local folder, depth): depth 2 keeps the OUT.ABACUS/ prefix the readers expect.
SCF_MATRICES = [(f"{OUT_DIR}/data-*R-sparse_SPIN*.csr", ".", 2), (f"{OUT_DIR}/[hs]rs*_nao.csr", ".", 2)]
OVERLAP_MATRICES = [(f"{OUT_DIR}/SR.csr", ".", 2), (f"{OUT_DIR}/sr_nao.csr", ".", 2)]
LOGS = (f"{OUT_DIR}/running_*.log", ".", 2)
_FILES = "the `pseudos` and `orbitals` files are staged in the working directory"
CONTROLLED = {
    "suffix": f"the output goes to {OUT_DIR}/",
    "ntype": "written from `structure`",
    "calculation": "scf; settings {'overlap_only': True} runs get_S",
    "basis_type": "lcao: the matrices are in the numerical-orbital basis",
    "stru_file": "STRU is written from `structure`",
    "kpoint_file": "KPT is written from `kpoints`",
    "pseudo_dir": _FILES,
    "orbital_dir": _FILES,
    "latname": "the cell is written as LATTICE_VECTORS",
    "kspacing": "the mesh comes from `kpoints`",
    "out_chg": "always 1: the charge density is what a restart starts from",
    "init_chg": "`file` when `parent_folder` is given",
    "read_file_dir": "the parent's output folder when `parent_folder` is given",
    "gamma_only": "the k-points come from `kpoints` (use a 1×1×1 mesh)",
    "out_mat_hs2": "always 1: the parser converts the HR/SR files",
}  # ABACUS keywords are lower-case identifiers: already in normalized form


class DeepHAbacusCalculation(LcaoCalculation):
    """ABACUS (v3.x) LCAO SCF with ``out_mat_hs2 1``; the parser converts ``OUT.ABACUS/`` to a ``HamiltonianData``.

    Species are the elements, with a ``UpfData`` pseudopotential and an ``OrbitalData`` ``.orb`` file each, staged in
    the working directory. STRU gives the cell as LATTICE_VECTORS in Å and the atoms wrapped into the cell, so the
    R of every matrix block is the one of the written positions. ``settings.overlap_only`` runs ``calculation
    get_S``: the overlap S(R) only (``SR.csr``, ``sr_nao.csr`` in newer versions), output as an overlap-only
    ``HamiltonianData``.
    """

    _code = "abacus"
    _pseudo_type = UpfData
    _controlled = CONTROLLED
    _restart_copies = ((f"{OUT_DIR}/SPIN*_CHG.cube", RESTART_DIR),)

    def _retrieve_list(self) -> list:
        return [LOGS]

    def _prepare_restart(self, folder) -> None:
        folder.get_subfolder(RESTART_DIR, create=True)  # the charge files are copied into it

    def _matrix_files(self) -> list:
        return OVERLAP_MATRICES if self.overlap_only else SCF_MATRICES

    def _input_files(self) -> dict[str, str]:
        return {"INPUT": self._input(), "STRU": self._stru(), "KPT": self._kpt()}

    def _input(self) -> str:
        written = {
            "suffix": SUFFIX,
            "ntype": len(element_order(self.inputs.structure)),
            "calculation": "get_S" if self.overlap_only else "scf",
            "basis_type": "lcao",
            "pseudo_dir": "./",
            "orbital_dir": "./",
            **({} if self.overlap_only else {"out_mat_hs2": 1, "out_chg": 1}),  # the charge density for restarts
            **({"init_chg": "file", "read_file_dir": RESTART_DIR} if self.restarting else {}),
            **self.parameters,
        }
        lines = [f"{key:<24} {format_value(value, '1', '0')}" for key, value in written.items()]
        return "\n".join(["INPUT_PARAMETERS", *lines]) + "\n"

    def _stru(self) -> str:
        structure = self.inputs.structure
        elements = element_order(structure)
        symbols = atom_symbols(structure)
        masses = {kind.symbol: kind.mass for kind in reversed(structure.kinds)}  # the first kind of an element
        cell = np.array(structure.cell)
        fractional = np.linalg.solve(cell.T, np.array([site.position for site in structure.sites]).T).T
        # ABACUS wraps atoms into the cell; writing them wrapped keeps the matrices' R consistent with STRU.
        positions = (fractional - np.floor(fractional + 1e-12)) @ cell
        lines = ["ATOMIC_SPECIES"]
        lines += [f"{el:<4} {masses[el]:10.5f} {self.inputs.pseudos[el].filename}" for el in elements]
        lines += ["", "NUMERICAL_ORBITAL", *(self.inputs.orbitals[el].filename for el in elements)]
        lines += ["", "LATTICE_CONSTANT", f"{ANGSTROM_IN_BOHR:.15f}  # 1 Angstrom: the lengths below are in Angstrom"]
        lines += ["", "LATTICE_VECTORS", *(f"{x:18.12f} {y:18.12f} {z:18.12f}" for x, y, z in cell)]
        lines += ["", "ATOMIC_POSITIONS", "Cartesian"]
        for el in elements:
            rows = [positions[n] for n, symbol in enumerate(symbols) if symbol == el]
            lines += ["", el, f"{self.initial_moment(el)}", str(len(rows))]
            lines += [f"{x:18.12f} {y:18.12f} {z:18.12f} 1 1 1" for x, y, z in rows]
        return "\n".join(lines) + "\n"

    def _kpt(self) -> str:
        mesh, _ = self.inputs.kpoints.get_kpoints_mesh()
        return "K_POINTS\n0\nGamma\n" + " ".join(str(int(n)) for n in mesh) + " 0 0 0\n"

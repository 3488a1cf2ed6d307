"""``deeph.openmx``: an OpenMX SCF that always writes the ``.scfout`` (H(R), S(R)) the DeepH format is made from."""

from __future__ import annotations

from aiida_pseudo.data.pseudo import VpsData

from aiida_deeph.calculations.lcao import (
    LcaoCalculation,
    atom_symbols,
    element_order,
    format_value,
    known_keywords,
    normalize,
)
from aiida_deeph.data.orbital import OrbitalData

SYSTEM_NAME = "aiida"
DATA_DIR = "DFT_DATA"  # DATA.PATH: OpenMX reads <DATA.PATH>/VPS/<name>.vps and <DATA.PATH>/PAO/<name>.pao
OVERLAP_FILES = "output/overlaps_*.h5"  # written by the overlap-only OpenMX, one per MPI rank
CONTROLLED = {
    normalize(key): reason
    for keys, reason in (
        (("System.Name",), f"the run is named `{SYSTEM_NAME}`"),
        (("System.CurrentDirectory", "System.CurrrentDirectory"), "the run writes to its working directory"),
        (("DATA.PATH",), f"the `pseudos` and `orbitals` files are staged in {DATA_DIR}/"),
        (("HS.fileout",), "always on: the parser converts the .scfout"),
        (("scf.restart",), "on when `parent_folder` is given (restart from its charge density)"),
        (("Species.Number", "Definition.of.Atomic.Species"), "written from `pseudos` and `orbitals`"),
        (("Atoms.Number", "Atoms.SpeciesAndCoordinates.Unit", "Atoms.SpeciesAndCoordinates", "Atoms.UnitVectors.Unit",
          "Atoms.UnitVectors"), "written from `structure`"),
        (("scf.Kgrid",), "written from `kpoints`"),
    )
    for key in keys
}


def keyword_lines(parameters: dict) -> list[str]:
    """``key value`` lines in the manual's spelling; a list of rows (lists) becomes a ``<key`` ... ``key>`` block."""
    lines = []
    for name, value in parameters.items():
        key = known_keywords("openmx")[normalize(name)]
        if isinstance(value, (list, tuple)) and value and all(isinstance(row, (list, tuple)) for row in value):
            lines += [f"<{key}", *(f"  {format_value(row, 'on', 'off')}" for row in value), f"{key}>"]
        else:
            lines.append(f"{key:<35} {format_value(value, 'on', 'off')}")
    return lines


class DeepHOpenmxCalculation(LcaoCalculation):
    """OpenMX 3.8/3.9 SCF with ``HS.fileout on``; the parser converts the ``.scfout`` to a ``HamiltonianData``.

    Species are the elements; the basis of each is the ``OrbitalData`` ``.pao`` file with its selected radial
    functions (``Fe6.0S-s2p2d1``), the pseudopotential a ``VpsData`` (``pseudo.vps``). Both are staged in
    ``DFT_DATA/{PAO,VPS}`` of the working directory. Initial spin populations split each atom's valence charge by
    ``settings.initial_magnetic_moments`` (non-collinear runs start along z).

    Overlap-only runs (``settings: {overlap_only: True}``) need the DeepH "overlap only" OpenMX
    (https://github.com/mzjb/overlap-only-OpenMX): OpenMX 3.9.9 with its ``openmx.c`` and ``truncation.c`` replaced
    by the patch's, linked against HDF5. It reads the same input but, instead of an SCF, only computes the overlap
    S(R) (fast enough for 10⁴-atom targets of DeepH inference) and writes it to ``output/overlaps_<rank>.h5``, one
    dataset per ``"[Rx, Ry, Rz, i, j]"`` (1-based atoms, OpenMX orbital order); no ``.out`` or ``.scfout``. The
    patch reads no extra keyword, so the code must be that patched binary (the stock OpenMX would run a full SCF);
    the setting makes the plugin retrieve those files and output an overlap-only ``HamiltonianData``.
    """

    _code = "openmx"
    _pseudo_type = VpsData
    _controlled = CONTROLLED
    _restart_copies = ((f"{SYSTEM_NAME}_rst", f"{SYSTEM_NAME}_rst"),)  # OpenMX's charge density of each SCF step
    _input = f"{SYSTEM_NAME}.dat"

    @classmethod
    def _validate_code_specific(cls, inputs, settings: dict) -> str | None:
        pseudos = inputs["pseudos"]
        names = [node.filename for node in pseudos.values() if not node.filename.endswith(".vps")]
        if names:
            return f"OpenMX pseudopotential files must end in .vps: {', '.join(names)}"
        for element, moment in settings.get("initial_magnetic_moments", {}).items():
            valence = pseudos[element].z_valence
            if abs(moment) > valence:
                return f"initial moment {moment} of {element} exceeds its {valence} valence electrons"
        return None

    def _cmdline(self) -> list[str]:
        return [self._input]

    def _pseudo_target(self, pseudo: VpsData) -> str:
        return f"{DATA_DIR}/VPS/{pseudo.filename}"

    def _orbital_target(self, orbital: OrbitalData) -> str:
        return f"{DATA_DIR}/PAO/{orbital.filename}"

    def _retrieve_list(self) -> list:
        return [] if self.overlap_only else [f"{SYSTEM_NAME}.out"]

    def _matrix_files(self) -> list:
        return [OVERLAP_FILES] if self.overlap_only else [f"{SYSTEM_NAME}.scfout"]

    def _input_files(self) -> dict[str, str]:
        structure = self.inputs.structure
        mesh, _ = self.inputs.kpoints.get_kpoints_mesh()
        lines = [
            "# written by aiida-deeph (deeph.openmx)",
            "System.CurrrentDirectory            ./",
            f"System.Name                         {SYSTEM_NAME}",
            f"DATA.PATH                           ./{DATA_DIR}",
            "HS.fileout                          on",
            *(["scf.restart                         on"] if self.restarting else []),
            f"scf.Kgrid                           {' '.join(str(int(n)) for n in mesh)}",
            *keyword_lines(self.parameters),
            *self._species_block(),
            *self._atoms_block(),
            "Atoms.UnitVectors.Unit              Ang",
            "<Atoms.UnitVectors",
            *(f"  {x:18.12f} {y:18.12f} {z:18.12f}" for x, y, z in structure.cell),
            "Atoms.UnitVectors>",
        ]
        return {self._input: "\n".join(lines) + "\n"}

    def _species_block(self) -> list[str]:
        elements = element_order(self.inputs.structure)
        rows = [
            f"  {el:<4} {self.inputs.orbitals[el].basis_name:<20} {self.inputs.pseudos[el].filename.removesuffix('.vps')}"
            for el in elements
        ]
        return [f"Species.Number                      {len(elements)}", "<Definition.of.Atomic.Species", *rows,
                "Definition.of.Atomic.Species>"]

    def _atoms_block(self) -> list[str]:
        """One row per atom: index, species, x y z (Å), initial up and down populations."""
        structure = self.inputs.structure
        spin = {normalize(k): v for k, v in self.parameters.items()}.get("scf_spinpolarization", "off")
        angles = "  0.0 0.0 0.0 0.0 0 off" if str(spin).lower() == "nc" else ""  # spin and orbital moments along z
        rows = []
        for n, (symbol, site) in enumerate(zip(atom_symbols(structure), structure.sites), start=1):
            valence, moment = self.inputs.pseudos[symbol].z_valence, self.initial_moment(symbol)
            x, y, z = site.position
            rows.append(f"  {n:<5} {symbol:<4} {x:18.12f} {y:18.12f} {z:18.12f} "
                        f"{(valence + moment) / 2:8.4f} {(valence - moment) / 2:8.4f}{angles}")
        return [f"Atoms.Number                        {len(rows)}", "Atoms.SpeciesAndCoordinates.Unit    Ang",
                "<Atoms.SpeciesAndCoordinates", *rows, "Atoms.SpeciesAndCoordinates>"]

"""``deeph.overlap``: S(R) of a structure without an SCF, analytic in the embedded engine's Gaussian basis.

The input of inference on large targets: its atom pairs become the graph's edges and S(R) goes with the predicted
H(R) into the band structure. PySCF computes the integrals in chunks, so 10^4 atoms take seconds.
"""

from __future__ import annotations

from aiida import orm

from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.io.deeph_format import format_poscar

from .ml_base import MLCalculation

POSCAR, OVERLAP = "POSCAR", "overlap"


def basis_arguments(basis: orm.Str | orm.Dict) -> list[str]:
    """``--basis NAME`` or ``--basis EL=NAME`` per element, as ``python -m aiida_deeph.ml overlap`` takes them."""
    if isinstance(basis, orm.Str):
        return ["--basis", basis.value]
    return [arg for element, name in basis.get_dict().items() for arg in ("--basis", f"{element}={name}")]


def structure_electrons(structure: orm.StructureData, pseudopotential: orm.Str | orm.Dict) -> int:
    """Valence electrons of ``structure`` with CP2K's GTH ``pseudopotential`` (from the local CP2K data files)."""
    from aiida_deeph.io.cp2k import valence_electrons

    from .cp2k import _local_data_file, _names_per_element

    symbols = structure.get_ase().get_chemical_symbols()
    names = _names_per_element(pseudopotential, list(dict.fromkeys(symbols)))
    path = _local_data_file("GTH_POTENTIALS")
    if path is None:
        raise ValueError("the electron count needs CP2K's GTH_POTENTIALS on this machine (apt-get install cp2k-data)")
    per_element = {el: valence_electrons(path, el, name) for el, name in names.items()}
    return sum(per_element[el] for el in symbols)


def validate_inputs(inputs, _ctx) -> str | None:
    structure, basis = inputs.get("structure"), inputs.get("basis_set")
    if structure is None or basis is None:
        return None
    if "pseudopotential" in inputs:
        try:
            structure_electrons(structure, inputs["pseudopotential"])
        except (ValueError, KeyError) as exc:
            return f"pseudopotential: {exc}"
    from aiida_deeph.io.overlap import basis_shells

    value = basis.value if isinstance(basis, orm.Str) else basis.get_dict()
    for element in sorted(set(structure.get_ase().get_chemical_symbols())):
        try:
            basis_shells(value, element)
        except Exception as exc:  # noqa: BLE001 - PySCF's unknown-basis errors have no common class
            return f"basis {value!r} has no functions for {element}: {exc}"
    return None


class OverlapCalculation(MLCalculation):
    """``overlap`` (HamiltonianData with S only) of ``structure`` in ``basis_set`` (one name, or a Dict per element;
    CP2K names such as ``SZV-MOLOPT-SR-GTH`` or PySCF's). With the DFT's GTH ``pseudopotential`` the valence electron
    count goes into ``info.json`` too, so that the Fermi level of a prediction follows from it."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=orm.StructureData)
        spec.input("basis_set", valid_type=(orm.Str, orm.Dict), help="The DFT data's basis (as given to deeph.cp2k).")
        spec.input("pseudopotential", valid_type=(orm.Str, orm.Dict), required=False,
                   help="The DFT data's GTH pseudopotential (as given to deeph.cp2k): gives the electron count.")
        spec.inputs.validator = validate_inputs
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.overlap")
        spec.output("overlap", valid_type=HamiltonianData)

    def prepare_for_submission(self, folder):
        atoms = self.inputs.structure.get_ase()
        with folder.open(POSCAR, "w", encoding="utf-8") as handle:
            handle.write(format_poscar(atoms.cell.array, atoms.get_chemical_symbols(), atoms.positions))
        arguments = ["overlap", "--structure", POSCAR, "--out", OVERLAP, *basis_arguments(self.inputs.basis_set)]
        if "pseudopotential" in self.inputs:
            arguments += ["--electrons", str(structure_electrons(self.inputs.structure, self.inputs.pseudopotential))]
        return self.calcinfo([self.codeinfo(arguments)], retrieve_temporary=[OVERLAP])

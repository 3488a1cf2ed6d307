"""``deeph.bands``: band structure (dense or shift-invert sparse) and DOS of a DeepH-format Hamiltonian."""

from __future__ import annotations

from aiida import orm

from aiida_deeph.data.hamiltonian import HamiltonianData

from .ml_base import MLCalculation, copy_folder_node

STRUCTURE, BANDS, REFERENCE = "structure", "bands", "reference"
BAND_OPTIONS = ("npoints", "num_bands", "solver", "sigma", "overlap_tolerance", "precision")
DOS_OPTIONS = ("width", "method", "overlap_tolerance")


def validate_parameters(parameters: orm.Dict, _ctx) -> str | None:
    valid = {*BAND_OPTIONS, *DOS_OPTIONS, "kmesh", "dos", "window", "symmetry"}
    unknown = set(parameters.get_dict()) - valid
    if unknown:
        return f"unknown parameters {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}"
    tolerance = parameters.get_dict().get("overlap_tolerance")
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
                                      and tolerance > 0):
        return f"overlap_tolerance must be a number > 0, got {tolerance!r}"
    if not isinstance(parameters.get_dict().get("symmetry", False), bool):
        return f"symmetry must be true or false, got {parameters.get_dict()['symmetry']!r}"
    if parameters.get_dict().get("precision", "double") not in ("double", "single"):
        return f"precision must be 'double' or 'single', got {parameters.get_dict()['precision']!r}"
    return None


def validate_inputs(inputs, _ctx) -> str | None:
    """``symmetry`` needs a spinless Hamiltonian of a structure with a rotation (found from its POSCAR)."""
    if "parameters" not in inputs or not inputs["parameters"].get_dict().get("symmetry"):
        return None
    from aiida_deeph.io.deeph_format import parse_poscar
    from aiida_deeph.ml.symmetry import NO_ROTATION, find_rotation

    hamiltonian = inputs["hamiltonian"]
    if hamiltonian.spinful:
        return "symmetry: the symmetry blocks are for spinless Hamiltonians"
    lattice, species, positions = parse_poscar(hamiltonian.base.repository.get_object_content("POSCAR"))
    if find_rotation(lattice, species, positions) is None:
        return f"symmetry: {NO_ROTATION}"
    return None


class BandsCalculation(MLCalculation):
    """Bands along the standard k-path (``bands`` BandsData, ``band_plot``) and, with ``dos: True``, the density of
    states (``dos`` XyData, ``dos_plot``). ``parameters``: ``npoints``, ``num_bands`` and ``sigma`` (eV; the window
    nearest σ for large cells), ``solver`` (auto|dense|sparse), ``overlap_tolerance`` (drop atom pairs whose
    overlap stays below it, for bands and DOS of large cells), ``precision`` (double|single: the sparse solver's
    factor; single halves its memory, each solve refined to double accuracy), ``symmetry`` (solve Γ in the irrep
    blocks of the cell's rotation: sparse bands, KPM DOS), ``dos``, ``kmesh``, ``width`` (the Gaussians' std, or
    the KPM's resolution), ``method`` (auto|gaussian|kpm). With ``reference`` (a DFT HamiltonianData of the same
    structure) its bands are overlaid on the plot and ``output_parameters`` gets the H and band errors (bands
    within ±``window`` eV, default 2, of the DFT Fermi level)."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("hamiltonian", valid_type=HamiltonianData)
        spec.input("parameters", valid_type=orm.Dict, required=False, validator=validate_parameters)
        spec.input("reference", valid_type=HamiltonianData, required=False,
                   help="DFT H and S of the same structure: validation of a prediction.")
        spec.input("metadata.options.parser_name", valid_type=str, default="deeph.bands")
        spec.inputs.validator = validate_inputs
        spec.output("bands", valid_type=orm.BandsData)
        spec.output("dos", valid_type=orm.XyData, required=False)
        spec.output("band_plot", valid_type=orm.SinglefileData)
        spec.output("dos_plot", valid_type=orm.SinglefileData, required=False)
        spec.output("output_parameters", valid_type=orm.Dict)

    def prepare_for_submission(self, folder):
        params = self.inputs.parameters.get_dict() if "parameters" in self.inputs else {}
        bands = ["bands", STRUCTURE, "--out", BANDS, "--plot"]
        bands += [arg for key in BAND_OPTIONS if key in params for arg in (f"--{key.replace('_', '-')}", str(params[key]))]
        if params.get("symmetry"):
            bands.append("--symmetry")
        copies = copy_folder_node(self.inputs.hamiltonian, STRUCTURE)
        retrieve = [f"{BANDS}/band.h5", f"{BANDS}/band.png"]
        if "reference" in self.inputs:
            from aiida_deeph.ml.validation import BAND_WINDOW_EV  # torch: not at plugin load time

            bands += ["--reference", REFERENCE, "--window", str(params.get("window", BAND_WINDOW_EV))]
            copies += copy_folder_node(self.inputs.reference, REFERENCE)
            retrieve.append(f"{BANDS}/validation.json")
        codeinfos = [self.codeinfo(bands)]
        if params.get("dos"):
            dos = ["dos", STRUCTURE, "--out", BANDS, "--plot", "--kmesh", *(str(n) for n in params.get("kmesh", (1, 1, 1)))]
            dos += [arg for key in DOS_OPTIONS if key in params for arg in (f"--{key.replace('_', '-')}", str(params[key]))]
            if params.get("symmetry"):
                dos.append("--symmetry")
            codeinfos.append(self.codeinfo(dos))
            retrieve += [f"{BANDS}/dos.h5", f"{BANDS}/dos.png"]
        return self.calcinfo(codeinfos, copies, retrieve=retrieve)

"""Bad input is refused before submission with a clear message; damaged output files reach the parsers as 3xx exit
codes, never as an exception.

Refusals run the real CalcJobs (``assert_refused``: a ValueError from the spec validator, no CalcJobNode made) or
the WorkChains' protocol builders. Damaged files are parsed by the real parsers, through replays of the recorded
OpenMX and ABACUS runs or ``parse_from_node`` on a node made here (CP2K, the ML engine).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida_pseudo.data.pseudo import UpfData, VpsData
from aiida_pseudo.groups.family import PseudoPotentialFamily

from aiida_deeph.calculations.abacus import DeepHAbacusCalculation
from aiida_deeph.calculations.cp2k import DeepHCp2kCalculation
from aiida_deeph.calculations.infer import InferCalculation
from aiida_deeph.calculations.ml_base import toml_dumps
from aiida_deeph.calculations.openmx import DeepHOpenmxCalculation
from aiida_deeph.calculations.train import TrainCalculation
from aiida_deeph.data.dataset import DatasetData
from aiida_deeph.data.model import ModelData
from aiida_deeph.data.orbital import OrbitalFamily
from aiida_deeph.io import cp2k as cp2k_io
from aiida_deeph.io.openmx import read_scfout
from aiida_deeph.ml.__main__ import main as engine
from aiida_deeph.parsers.cp2k import DeepHCp2kParser
from aiida_deeph.parsers.infer import InferParser
from aiida_deeph.parsers.train import TrainParser
from aiida_deeph.workflows.abacus_base import AbacusBaseWorkChain
from aiida_deeph.workflows.openmx_base import OpenmxBaseWorkChain

from .calculations.test_abacus import EXPECT as ABACUS_INPUTS
from .calculations.test_abacus import mos2_inputs, mos2_run, mos2_structure
from .calculations.test_openmx import EXPECT as OPENMX_INPUTS
from .calculations.test_openmx import fe_inputs, fe_run, mesh
from .replay import SERIAL, assert_refused, replay_code, write_pao, write_vps  # noqa: F401  (fixture)
from .test_fuzz_readers import GRAPHENE_CELL, MOS2, write_cp2k_run
from .test_fuzz_readers import train_tiny_model as train_tiny

FE = "openmx/fe_bcc_spin_sli43"


# --- structures and inputs --------------------------------------------------------------------------------------------
def graphene(positions: np.ndarray | None = None) -> orm.StructureData:
    """The 2-atom graphene cell of the CP2K seed run, periodic in-plane only."""
    structure = orm.StructureData(cell=GRAPHENE_CELL.tolist(), pbc=(True, True, False))
    default = np.array([[0.0, 0.0, 0.0], [1 / 3, -1 / 3, 0.0]]) @ GRAPHENE_CELL
    for position in default if positions is None else positions:
        structure.append_atom(position=tuple(position), symbols="C")
    return structure


def cp2k_inputs(code, structure: orm.StructureData | None = None, kmesh=(4, 4, 1), **extra) -> dict:
    return {"code": code, "structure": structure or graphene(), "kpoints": mesh(*kmesh),
            "basis_set": orm.Str("SZV-MOLOPT-SR-GTH"), "metadata": {"options": SERIAL}, **extra}


def moved(structure: orm.StructureData, index: int, target: int, distance: float) -> orm.StructureData:
    """A copy with atom ``index`` placed ``distance`` Å from atom ``target`` (along x)."""
    copy = orm.StructureData(cell=structure.cell, pbc=structure.pbc)
    for n, site in enumerate(structure.sites):
        position = np.array(structure.sites[target].position) + [distance, 0, 0] if n == index else site.position
        copy.append_atom(position=tuple(position), symbols=structure.get_kind(site.kind_name).symbol)
    return copy


@pytest.fixture
def fe_dir(dft_fixtures) -> Path:
    return dft_fixtures / FE


@pytest.fixture
def mos2_dir(dft_fixtures) -> Path:
    return dft_fixtures / MOS2


# --- overlapping atoms ------------------------------------------------------------------------------------------------
OVERLAP = r"atoms 0 and 1 overlap: 0\.300 Å apart \(minimum 0\.5 Å\)"


def test_overlapping_atoms_cp2k(aiida_profile, aiida_code_installed):
    close = graphene(np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]]))
    assert_refused(DeepHCp2kCalculation, cp2k_inputs(aiida_code_installed(), close), OVERLAP)


def test_overlapping_atoms_openmx(aiida_profile, aiida_code_installed, fe_dir, tmp_path):
    inputs = fe_inputs(fe_dir, tmp_path, aiida_code_installed())
    assert_refused(DeepHOpenmxCalculation, {**inputs, "structure": moved(inputs["structure"], 1, 0, 0.3)}, OVERLAP)


def test_overlapping_atoms_abacus(aiida_profile, aiida_code_installed, mos2_dir):
    inputs = mos2_inputs(mos2_dir, aiida_code_installed())
    assert_refused(DeepHAbacusCalculation, {**inputs, "structure": moved(inputs["structure"], 1, 0, 0.3)}, OVERLAP)


def test_atom_overlapping_its_own_image(aiida_profile, aiida_code_installed):
    """A cell shorter than 0.5 Å along a periodic axis puts every atom on its own image."""
    structure = orm.StructureData(cell=[[0.4, 0, 0], [0, 5, 0], [0, 0, 12]], pbc=(True, True, False))
    structure.append_atom(position=(0, 0, 0), symbols="C")
    assert_refused(DeepHCp2kCalculation, cp2k_inputs(aiida_code_installed(), structure),
                   r"atom 0 and a periodic image of itself overlap: 0\.400 Å")


# --- an element without a basis or pseudopotential --------------------------------------------------------------------
def test_cp2k_basis_not_in_the_basis_file(aiida_profile, aiida_code_installed):
    inputs = cp2k_inputs(aiida_code_installed(), basis_set=orm.Str("TZV9P-MOLOPT-NOPE"))
    assert_refused(DeepHCp2kCalculation, inputs, r"basis set not in .*BASIS_MOLOPT: C: TZV9P-MOLOPT-NOPE")


def test_cp2k_basis_dict_without_the_element(aiida_profile, aiida_code_installed):
    inputs = cp2k_inputs(aiida_code_installed(), basis_set=orm.Dict({"H": "SZV-MOLOPT-SR-GTH"}))
    assert_refused(DeepHCp2kCalculation, inputs, r"no basis set given for C")


def test_cp2k_pseudopotential_dict_without_the_element(aiida_profile, aiida_code_installed):
    inputs = cp2k_inputs(aiida_code_installed(), pseudopotential=orm.Dict({"H": "GTH-PBE"}))
    assert_refused(DeepHCp2kCalculation, inputs, r"no pseudopotential given for C")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_abacus_families_without_an_element(aiida_profile, aiida_code_installed, mos2_dir, tmp_path):
    """Families holding S only, for MoS2: the protocol builder names the family and the missing element."""
    (tmp_path / "upf").mkdir()
    shutil.copyfile(mos2_dir / "pseudo" / "S_ONCV_PBE-1.0.upf", tmp_path / "upf" / "S_ONCV_PBE-1.0.upf")
    pseudos = PseudoPotentialFamily.create_from_folder(tmp_path / "upf", unique("s-only"), pseudo_type=UpfData)
    orbitals = OrbitalFamily.create_from_folder(mos2_dir / "orbitals" / "S_DZP", unique("s-only-dzp"))
    full_pseudos = PseudoPotentialFamily.create_from_folder(shutil.copytree(mos2_dir / "pseudo", tmp_path / "all"),
                                                           unique("sg15"), pseudo_type=UpfData)
    code, structure = aiida_code_installed(), mos2_structure(mos2_dir)
    with pytest.raises(ValueError, match=r"Mo"):
        AbacusBaseWorkChain.get_builder_from_protocol(code, structure, pseudo_family=pseudos.label,
                                                      orbital_family=orbitals.label)
    with pytest.raises(ValueError, match=rf"orbital family '{orbitals.label}' has no orbital file for Mo"):
        AbacusBaseWorkChain.get_builder_from_protocol(code, structure, pseudo_family=full_pseudos.label,
                                                      orbital_family=orbitals.label)


def test_openmx_families_without_an_element(aiida_profile, aiida_code_installed, fe_dir, tmp_path):
    """Families holding Fe only, for an FeO cell."""
    for folder in ("vps", "pao"):
        (tmp_path / folder).mkdir()
    write_vps(tmp_path / "vps" / "Fe_PBE19S.vps", 26, 14.0)
    write_pao(tmp_path / "pao" / "Fe6.0S.pao", 26, lmax=3, mul=2)
    pseudos = PseudoPotentialFamily.create_from_folder(tmp_path / "vps", unique("fe-vps"), pseudo_type=VpsData)
    orbitals = OrbitalFamily.create_from_folder(tmp_path / "pao", unique("fe-pao"), basis={"Fe": "Fe6.0S-s2p2d1"})
    oxide = orm.StructureData(cell=[[4.3, 0, 0], [0, 4.3, 0], [0, 0, 4.3]])
    oxide.append_atom(position=(0, 0, 0), symbols="Fe")
    oxide.append_atom(position=(2.15, 0, 0), symbols="O")
    with pytest.raises(ValueError, match=r"\bO\b"):
        OpenmxBaseWorkChain.get_builder_from_protocol(aiida_code_installed(), oxide, pseudo_family=pseudos.label,
                                                      orbital_family=orbitals.label)


def test_lcao_jobs_without_the_element(aiida_profile, aiida_code_installed, fe_dir, mos2_dir, tmp_path):
    code = aiida_code_installed()
    inputs = mos2_inputs(mos2_dir, code)
    assert_refused(DeepHAbacusCalculation, {**inputs, "pseudos": {"S": inputs["pseudos"]["S"]}},
                   r"no pseudopotential for Mo: give `pseudos.Mo`")
    inputs = fe_inputs(fe_dir, tmp_path, code)
    assert_refused(DeepHOpenmxCalculation, {**inputs, "orbitals": {}}, r"no orbital file for Fe: give `orbitals.Fe`")


# --- k-point meshes that do not fit the cell --------------------------------------------------------------------------
NON_PERIODIC = r"k-point mesh \[4, 4, 2\] samples non-periodic direction c: use 1 there"


@pytest.mark.parametrize("kmesh, match", [
    ((4, 4, 2), NON_PERIODIC),
    ((0, 4, 1), r"k-point mesh \[0, 4, 1\] must be at least 1 along every direction"),
    ((-2, 4, 1), r"k-point mesh \[-2, 4, 1\] must be at least 1 along every direction"),
])
def test_cp2k_kmesh(aiida_profile, aiida_code_installed, kmesh, match):
    assert_refused(DeepHCp2kCalculation, cp2k_inputs(aiida_code_installed(), kmesh=kmesh), match)


def test_lcao_kmesh(aiida_profile, aiida_code_installed, fe_dir, mos2_dir, tmp_path):
    code = aiida_code_installed()
    slab = mos2_inputs(mos2_dir, code)
    slab["structure"] = mos2_structure(mos2_dir)
    slab["structure"].pbc = (True, True, False)
    assert_refused(DeepHAbacusCalculation, {**slab, "kpoints": mesh(4, 4, 2)}, NON_PERIODIC)
    assert_refused(DeepHOpenmxCalculation, {**fe_inputs(fe_dir, tmp_path, code), "kpoints": mesh(0, 3, 3)},
                   r"must be at least 1 along every direction")


# --- ML jobs ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_training(dft_fixtures, tmp_path_factory) -> Path:
    """dataset/ and outputs/ (checkpoints, model) of one epoch of a tiny model on the s block of the real MoS2."""
    return train_tiny(dft_fixtures / MOS2 / "deeph_ref", tmp_path_factory.mktemp("tiny"))


def test_unknown_training_config_key(aiida_profile, python_code, tiny_training):
    dataset = DatasetData(tiny_training / "dataset")
    parameters = orm.Dict({"process": {"train": {"max_epoch": 3}}})
    assert_refused(TrainCalculation, {"code": python_code, "dataset": dataset, "parameters": parameters},
                   r"\[process\.train\]: unknown key\(s\) max_epoch; valid keys: max_epochs")


def test_model_basis_does_not_cover_the_target(aiida_profile, python_code, tiny_training):
    model = ModelData(tiny_training / "outputs" / "model")
    assert_refused(InferCalculation, {"code": python_code, "model": model, "structure": graphene()},
                   r"the model's basis covers Mo, S but the structure also has C")


# --- damaged files reaching the parsers -------------------------------------------------------------------------------
def calcjob_node(computer: orm.Computer, entry_point: str, retrieved: dict[str, bytes], **inputs: orm.Data):
    """A finished-looking CalcJobNode of ``entry_point`` with ``inputs`` and the ``retrieved`` files."""
    node = orm.CalcJobNode(computer=computer, process_type=f"aiida.calculations:{entry_point}")
    node.set_option("resources", SERIAL["resources"])
    node.set_option("output_filename", "aiida.out")
    for label, data in inputs.items():
        node.base.links.add_incoming(data.store(), LinkType.INPUT_CALC, label)
    node.store()
    folder = orm.FolderData()
    for name, content in retrieved.items():
        folder.base.repository.put_object_from_bytes(content, name)
    folder.base.links.add_incoming(node, LinkType.CREATE, "retrieved")
    folder.store()
    return node


def flip_bytes(path: Path, positions: list[int]) -> Path:
    data = bytearray(path.read_bytes())
    for position in positions:
        data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def cut(path: Path, length: int) -> Path:
    path.write_bytes(path.read_bytes()[:length])
    return path


def cut_inside_a_line(path: Path) -> Path:
    """Half the lines kept, and the row and column (not the value) of the next one."""
    lines = path.read_text().splitlines(keepends=True)
    half = len(lines) // 2
    path.write_text("".join(lines[:half]) + " ".join(lines[half].split()[:2]))
    return path


def cut_at_line_end(path: Path) -> Path:
    """The last third of the lines dropped: a cut no CSR line format can see, only the physics."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 2 * len(lines) // 3]))
    return path


@pytest.mark.parametrize("image, damage, message", [
    (1, cut_inside_a_line, "aiida-S_SPIN_1_R_1-1_0.csr: truncated"),
    (1, lambda p: flip_bytes(p, [30]), "aiida-S_SPIN_1_R_1-1_0.csr: unreadable matrix file"),
    (1, cut_at_line_end, "the home-cell overlap has a non-positive diagonal"),
    (2, cut_at_line_end, "S(R) and S(−R)ᵀ differ"),
], ids=["mid-line cut", "flipped byte", "home cell cut at a line end", "image cut at a line end"])
def test_damaged_cp2k_csr_is_331(aiida_profile, aiida_localhost, tmp_path, image, damage, message):
    run = write_cp2k_run(tmp_path / "run")
    damage(cp2k_io.csr_path(run.folder, "S", 1, image))
    node = calcjob_node(aiida_localhost, "deeph.cp2k", {"aiida.out": (run.folder / "aiida.out").read_bytes()},
                        structure=graphene())
    _, parsing = DeepHCp2kParser.parse_from_node(node, store_provenance=False,
                                                 retrieved_temporary_folder=str(run.folder))
    assert parsing.exit_status == DeepHCp2kCalculation.exit_codes.ERROR_MATRICES_CORRUPT.status == 331
    assert message in parsing.exit_message


def test_intact_cp2k_run_parses(aiida_profile, aiida_localhost, tmp_path):
    """The control of the test above: the undamaged files give the Hamiltonian."""
    run = write_cp2k_run(tmp_path / "run")
    node = calcjob_node(aiida_localhost, "deeph.cp2k", {"aiida.out": (run.folder / "aiida.out").read_bytes()},
                        structure=graphene())
    results, parsing = DeepHCp2kParser.parse_from_node(node, store_provenance=False,
                                                       retrieved_temporary_folder=str(run.folder))
    assert parsing.exit_status == 0 and results["hamiltonian"].natoms == 2


def test_corrupted_scfout_is_321(aiida_profile, replay_code, fe_dir, tmp_path):
    """A flipped byte in the neighbour table (truncation is covered in test_openmx)."""
    start, _ = read_scfout(fe_dir / "fe.scfout").sections["natn"]
    scfout = flip_bytes(shutil.copyfile(fe_dir / "fe.scfout", tmp_path / "fe.scfout"), [start + 6])
    code = replay_code(fe_run(fe_dir, aiida_scfout=scfout), expect=OPENMX_INPUTS)
    _, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code))
    assert node.exit_status == 321 and "aiida.scfout" in node.exit_message, node.exit_message
    assert "neighbour table of atom 1 points outside the atoms" in node.exit_message


def test_corrupted_abacus_csr_is_321(aiida_profile, replay_code, mos2_dir, tmp_path):
    overlap = flip_bytes(shutil.copyfile(mos2_dir / "OUT.ABACUS" / "data-SR-sparse_SPIN0.csr", tmp_path / "sr.csr"),
                         [200, 201, 5000])
    code = replay_code(mos2_run(mos2_dir, **{"data-SR-sparse_SPIN0_csr": overlap}), expect=ABACUS_INPUTS)
    _, node = run_get_node(DeepHAbacusCalculation, **mos2_inputs(mos2_dir, code))
    assert node.exit_status == 321 and "data-SR-sparse_SPIN0.csr" in node.exit_message


def test_truncated_overlap_only_h5_is_321(aiida_profile, replay_code, fe_dir, tmp_path):
    scf = read_scfout(fe_dir / "fe.scfout")
    path = tmp_path / "overlaps_0.h5"
    with h5py.File(path, "w") as handle:
        for (rx, ry, rz, i, j), block in zip(scf.pairs.tolist(), scf.olp):
            handle.create_dataset(f"[{rx}, {ry}, {rz}, {i + 1}, {j + 1}]", data=block)
    cut(path, path.stat().st_size // 2)
    stdout = tmp_path / "overlap.std"
    stdout.write_text("Welcome to OpenMX   Ver. 3.9.9\n The calculation was normally finished.\n")
    code = replay_code({"aiida.std": stdout, "output/overlaps_0.h5": path}, expect=OPENMX_INPUTS)
    _, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code,
                                                                settings={"overlap_only": True}))
    assert node.exit_status == 321 and "overlaps_0.h5: not a readable HDF5 file" in node.exit_message


def test_truncated_predicted_hamiltonian_is_303(aiida_profile, aiida_localhost, dft_fixtures, tmp_path):
    prediction = shutil.copytree(dft_fixtures / MOS2 / "deeph_ref", tmp_path / "prediction",
                                 copy_function=shutil.copyfile)
    cut(prediction / "hamiltonian.h5", 5000)
    node = calcjob_node(aiida_localhost, "deeph.infer", {"infer.out": b"predicted\n", "infer.err": b""})
    _, parsing = InferParser.parse_from_node(node, store_provenance=False, retrieved_temporary_folder=str(tmp_path))
    assert parsing.exit_status == InferCalculation.exit_codes.ERROR_OUTPUT_FILES_MISSING.status == 303
    assert "prediction is unreadable" in parsing.exit_message and "hamiltonian.h5" in parsing.exit_message


def test_corrupted_checkpoint_on_resume_is_304(aiida_profile, aiida_localhost, tiny_training, tmp_path, capsys):
    """The engine refuses a damaged latest.pt (exit status 5); the parser reads its stderr and answers 304."""
    run = shutil.copytree(tiny_training, tmp_path / "run")
    checkpoint = run / "outputs" / "checkpoints" / "latest.pt"
    flip_bytes(checkpoint, [checkpoint.stat().st_size // 2])
    config = run / "config.toml"
    config.write_text(toml_dumps({"system": {"device": "cpu", "num_threads": 1},
                                  "data": {"dataset_dir": str(run / "dataset"), "outputs_dir": str(run / "outputs")},
                                  "model": {"model": "deeph2", "lmax": 1, "channels": 4, "num_blocks": 1,
                                            "num_heads": 1, "num_radial": 4, "radial_hidden": 8},
                                  "process": {"train": {"max_epochs": 2, "progress": False}}}))
    assert engine(["train", str(config), "--resume"]) == 5
    logs = capsys.readouterr()
    assert "latest.pt" in logs.err
    node = calcjob_node(aiida_localhost, "deeph.train",
                        {"train.out": logs.out.encode(), "train.err": logs.err.encode()})
    _, parsing = TrainParser.parse_from_node(node, store_provenance=False)
    assert parsing.exit_status == TrainCalculation.exit_codes.ERROR_CORRUPTED_INPUT.status == 304


def test_corrupted_model_output_is_303(aiida_profile, aiida_localhost, tiny_training, tmp_path):
    """Weights damaged on the way back fail their sha256: no model node, 303."""
    outputs = shutil.copytree(tiny_training / "outputs", tmp_path / "outputs")
    weights = outputs / "model" / "weights.pt"
    flip_bytes(weights, [weights.stat().st_size - 200])
    retrieved = {"train.out": b"", "train.err": b"", "outputs/metrics.json": (outputs / "metrics.json").read_bytes()}
    node = calcjob_node(aiida_localhost, "deeph.train", retrieved)
    results, parsing = TrainParser.parse_from_node(node, store_provenance=False,
                                                   retrieved_temporary_folder=str(tmp_path))
    assert parsing.exit_status == 303 and "outputs/model is corrupted" in parsing.exit_message
    assert "model" not in results


def test_bands_symmetry_needs_a_structure_with_a_rotation(aiida_profile, python_code, dft_fixtures):
    """``symmetry`` is checked before submission: a boolean, and a rotation of the structure (spglib on the
    POSCAR): MoS2 has its 3-fold axis, the same cell with one atom moved has none."""
    from dataclasses import replace

    from aiida_deeph.calculations.bands import BandsCalculation, validate_inputs, validate_parameters
    from aiida_deeph.data.hamiltonian import HamiltonianData
    from aiida_deeph.io.deeph_format import DeepHStructure

    assert "symmetry must be true or false" in validate_parameters(orm.Dict({"symmetry": "yes"}), None)
    assert "precision must be 'double' or 'single'" in validate_parameters(orm.Dict({"precision": "half"}), None)
    assert validate_parameters(orm.Dict({"precision": "single"}), None) is None
    structure = DeepHStructure.read(dft_fixtures / MOS2 / "deeph_ref")
    symmetric = HamiltonianData(structure=structure)
    assert validate_inputs({"hamiltonian": symmetric, "parameters": orm.Dict({"symmetry": True})}, None) is None
    positions = structure.positions.copy()
    positions[0] += [0.3, 0.1, 0.0]
    moved = HamiltonianData(structure=replace(structure, positions=positions))
    with pytest.raises(ValueError, match="no rotation symmetry"):
        run_get_node(BandsCalculation, code=python_code, hamiltonian=moved,
                     parameters=orm.Dict({"solver": "sparse", "symmetry": True}))
    assert validate_inputs({"hamiltonian": moved, "parameters": orm.Dict({"symmetry": False})}, None) is None


@pytest.mark.parametrize("tolerance", [0, -1e-6, "1e-6", True])
def test_bands_overlap_tolerance_must_be_a_positive_number(aiida_profile, tolerance):
    from aiida_deeph.calculations.bands import validate_parameters

    assert "overlap_tolerance must be a number > 0" in validate_parameters(
        orm.Dict({"solver": "sparse", "overlap_tolerance": tolerance}), None)
    assert validate_parameters(orm.Dict({"solver": "sparse", "overlap_tolerance": 1e-6}), None) is None



def test_a_factor_that_will_not_fit_stops_the_bands_at_once_with_420(aiida_profile, aiida_localhost, dft_fixtures,
                                                                    monkeypatch, capsys, tmp_path):
    """PARDISO's analysis is checked against the memory left before the numerical factorization: the engine stops
    with status 6 and the sizes (no phase 22 ran), and the parser answers 420 (out of memory)."""
    from aiida_deeph.ml import pardiso
    from aiida_deeph.parsers.bands import BandsParser

    phases = []
    call = pardiso._pardiso

    def recorded(library, handle, mtype, iparm, phase, *args, **kwargs):
        phases.append(phase)
        return call(library, handle, mtype, iparm, phase, *args, **kwargs)

    monkeypatch.setattr(pardiso, "_pardiso", recorded)
    monkeypatch.setattr(pardiso, "available_memory", lambda: 1000)
    folder = dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "deeph_ref"
    status = engine(["bands", str(folder), "--solver", "sparse", "--num-bands", "4", "--npoints", "2",
                     "--out", str(tmp_path)])
    logs = capsys.readouterr()
    assert status == 6 and 11 in phases and 22 not in phases
    assert "out of memory" in logs.err and "by its analysis, and 0.0 GB are available" in logs.err
    node = calcjob_node(aiida_localhost, "deeph.bands", {"bands.out": logs.out.encode(), "bands.err": logs.err.encode()})
    _, parsing = BandsParser.parse_from_node(node, store_provenance=False)
    assert parsing.exit_status == 420


def test_available_memory_is_what_the_process_can_still_get():
    from aiida_deeph.ml.pardiso import available_memory

    meminfo = Path("/proc/meminfo").read_text()
    total = 1024 * int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1])
    assert 0 < available_memory() <= total + 1024 * int(
        next(line for line in meminfo.splitlines() if line.startswith("SwapTotal")).split()[1])
    import subprocess
    import sys

    capped = subprocess.run([sys.executable, "-c", "import resource; resource.setrlimit(resource.RLIMIT_AS, "
                             "(8 << 30, 8 << 30)); from aiida_deeph.ml.pardiso import available_memory; "
                             "print(available_memory())"], capture_output=True, text=True, timeout=120)
    assert 0 < int(capped.stdout) < 8 << 30, capped.stderr  # within `ulimit -v`, less what is mapped already

"""deeph.openmx: the input writer against the recorded bcc-Fe input, replays of the recorded OpenMX 3.9.9 run through
the engine (CalcJob + parser), failure modes and validation before submission."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from aiida import orm
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida_pseudo.data.pseudo import UpfData, VpsData

from aiida_deeph.calculations.lcao import normalize
from aiida_deeph.calculations.openmx import CONTROLLED, DeepHOpenmxCalculation
from aiida_deeph.data.orbital import OrbitalData
from aiida_deeph.io.openmx import openmx_to_deeph, parse_openmx_input, read_openmx_dat, read_scfout
from aiida_deeph.io.units import OPENMX_HARTREE_TO_EV
from aiida_deeph.parsers.openmx import DeepHOpenmxParser

from ..replay import SERIAL, assert_refused, prepare, replay_code, write_pao, write_vps  # noqa: F401  (fixture)

FE_CHEMICAL_POTENTIAL = -0.202788386382  # Hartree, fe.out


@pytest.fixture
def fe_dir(dft_fixtures) -> Path:
    return dft_fixtures / "openmx" / "fe_bcc_spin_sli43"


def fe_structure(fe_dir: Path) -> orm.StructureData:
    recorded = read_openmx_dat(fe_dir / "Febcc.dat")
    cell = recorded.unit_vectors()
    structure = orm.StructureData(cell=cell.tolist())
    for row in recorded.block("Atoms.SpeciesAndCoordinates"):
        structure.append_atom(position=(np.array(row[2:5], dtype=float) @ cell).tolist(), symbols=row[1])
    return structure


def fe_data(tmp_path: Path) -> tuple[VpsData, OrbitalData]:
    """Fe_PBE19S.vps (14 valence electrons, as the recorded 8.0 + 6.0 populations) and Fe6.0S.pao, synthetic."""
    vps = VpsData(write_vps(tmp_path / "Fe_PBE19S.vps", 26, 14.0))
    pao = OrbitalData(write_pao(tmp_path / "Fe6.0S.pao", 26, lmax=3, mul=2), basis="s2p2d1")
    return vps, pao


def mesh(*sizes: int) -> orm.KpointsData:
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh(list(sizes))
    return kpoints


def fe_inputs(fe_dir: Path, tmp_path: Path, code=None, parameters: dict | None = None, settings: dict | None = None,
              structure: orm.StructureData | None = None) -> dict:
    vps, pao = fe_data(tmp_path)
    inputs = {
        "structure": structure or fe_structure(fe_dir),
        "kpoints": mesh(11, 11, 11),
        "parameters": orm.Dict(parameters or {"scf_XcType": "GGA-PBE", "scf_SpinPolarization": "on",
                                             "scf_criterion": 1.0e-9}),
        "pseudos": {"Fe": vps},
        "orbitals": {"Fe": pao},
        "settings": orm.Dict({"initial_magnetic_moments": {"Fe": 2.0}, **(settings or {})}),
        "metadata": {"options": SERIAL},
    }
    if code is not None:
        inputs["code"] = code
    return inputs


# --- input writer ---------------------------------------------------------------------------------------------------
def test_input_reproduces_recorded_fe_input(aiida_profile, aiida_code_installed, fe_dir, tmp_path):
    recorded = read_openmx_dat(fe_dir / "Febcc.dat")
    # AiiDA Dict keys cannot hold dots: the recorded keywords are given with "_" and written back with dots.
    parameters = {key.replace(".", "_"): value for key, value in recorded.keywords.items()
                  if normalize(key) not in CONTROLLED}
    parameters["Band_kpath"] = recorded.block("Band.kpath")
    (tmp_path / "run").mkdir()
    inputs = fe_inputs(fe_dir, tmp_path, aiida_code_installed(), parameters=parameters)
    calcinfo = prepare(DeepHOpenmxCalculation, inputs, tmp_path / "run")
    written = parse_openmx_input((tmp_path / "run" / "aiida.dat").read_text().splitlines())

    assert written.get("scf.XcType") == "GGA-PBE" and written.get("MD.Type") == "nomd"
    for key, value in recorded.keywords.items():
        if normalize(key) not in CONTROLLED:
            assert written.get(key) == value, key
    assert written.block("Band.kpath") == recorded.block("Band.kpath")
    assert written.species() == recorded.species() == {"Fe": ("Fe6.0S-s2p2d1", "Fe_PBE19S")}
    assert written.get("HS.fileout") == "on" and written.get("scf.Kgrid") == recorded.get("scf.Kgrid") == "11 11 11"
    assert written.get("System.Name") == "aiida" and written.get("DATA.PATH") == "./DFT_DATA"
    np.testing.assert_allclose(written.unit_vectors(), recorded.unit_vectors(), atol=1e-12)
    cell = recorded.unit_vectors()
    atoms, reference = written.block("Atoms.SpeciesAndCoordinates"), recorded.block("Atoms.SpeciesAndCoordinates")
    assert written.get("Atoms.SpeciesAndCoordinates.Unit") == "Ang" and len(atoms) == len(reference) == 2
    for row, ref in zip(atoms, reference):
        assert row[:2] == ref[:2]
        np.testing.assert_allclose(np.array(row[2:5], float) @ np.linalg.inv(cell), np.array(ref[2:5], float),
                                   atol=1e-12)
        assert [float(x) for x in row[5:7]] == [float(x) for x in ref[5:7]] == [8.0, 6.0]
    assert sorted(target for _, _, target in calcinfo.local_copy_list) == [
        "DFT_DATA/PAO/Fe6.0S.pao", "DFT_DATA/VPS/Fe_PBE19S.vps"]
    assert calcinfo.retrieve_temporary_list == ["aiida.scfout"]
    assert calcinfo.codes_info[0].cmdline_params == ["aiida.dat"]


# --- replays --------------------------------------------------------------------------------------------------------
EXPECT = ("aiida.dat", "DFT_DATA/VPS/Fe_PBE19S.vps", "DFT_DATA/PAO/Fe6.0S.pao")


def fe_run(fe_dir: Path, **replaced: Path) -> dict[str, Path]:
    """The recorded files under the names of the plugin's run, with some replaced by modified copies."""
    return {"aiida.std": fe_dir / "out.std", "aiida.out": fe_dir / "fe.out", "aiida.scfout": fe_dir / "fe.scfout",
            **{name.replace("_", "."): path for name, path in replaced.items()}}


def truncated(source: Path, target: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def unconverged(fe_dir: Path, target: Path) -> Path:
    """fe.out with the last SCF step's band energy moved by 1e-6 Ha, above scf.criterion (1e-9 Ha)."""
    text = (fe_dir / "fe.out").read_text()
    last = "SCF=  26  NormRD=  0.000000009405  Uele= -30.438467365226"
    assert text.count(last) == 1
    target.write_text(text.replace(last, "SCF=  26  NormRD=  0.000000009405  Uele= -30.438468365226"))
    return target


def test_replay_fe_run(aiida_profile, replay_code, fe_dir, tmp_path):
    code = replay_code(fe_run(fe_dir), expect=EXPECT)
    results, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    params = results["output_parameters"].get_dict()
    assert params["version"] == "3.9.9" and params["converged"] and params["scf_steps"] == 26
    assert params["fermi_energy"] == pytest.approx(FE_CHEMICAL_POTENTIAL * OPENMX_HARTREE_TO_EV, abs=1e-9)
    assert params["energy"] == pytest.approx(-179.142122855951 * OPENMX_HARTREE_TO_EV, abs=1e-9)
    assert params["wall_time"] == pytest.approx(208.439)

    deeph, reference = results["hamiltonian"].get_deeph(), openmx_to_deeph(fe_dir)
    for name in ("hamiltonian", "overlap"):
        ours, ref = getattr(deeph, name), getattr(reference, name)
        np.testing.assert_array_equal(ours.atom_pairs, ref.atom_pairs)
        np.testing.assert_array_equal(ours.entries, ref.entries)
    assert len(deeph.hamiltonian) == 226 and deeph.spinful
    np.testing.assert_allclose(deeph.positions, reference.positions, atol=1e-12)
    assert deeph.elements_orbital_map == {"Fe": [0, 0, 1, 1, 2]}
    assert "aiida.scfout" not in node.outputs.retrieved.base.repository.list_object_names()


def test_keep_matrices_remote(aiida_profile, replay_code, fe_dir, tmp_path):
    code = replay_code(fe_run(fe_dir), expect=EXPECT)
    results, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(
        fe_dir, tmp_path, code, settings={"keep_matrices_remote": True}))
    assert node.is_finished_ok and "hamiltonian" not in results
    assert results["output_parameters"]["converged"]
    assert "aiida.scfout" in node.outputs.remote_folder.listdir()


@pytest.mark.parametrize(
    "replace, status, message",
    [
        ("out", 310, "did not finish or the file is cut"),
        ("scfout", 321, "file ends inside"),
        ("missing_scfout", 320, "aiida.scfout"),
        ("unconverged", 410, None),
    ],
)
def test_failure_modes(aiida_profile, replay_code, fe_dir, tmp_path, replace, status, message):
    run = fe_run(fe_dir)
    if replace == "out":
        run["aiida.out"] = truncated(fe_dir / "fe.out", tmp_path / "fe.out")
    elif replace == "scfout":
        run["aiida.scfout"] = truncated(fe_dir / "fe.scfout", tmp_path / "fe.scfout", 0.7)
    elif replace == "missing_scfout":
        del run["aiida.scfout"]
    else:
        run["aiida.out"] = unconverged(fe_dir, tmp_path / "fe.out")
    results, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, replay_code(run, expect=EXPECT)))
    assert node.exit_status == status, node.exit_message
    if message:
        assert message in node.exit_message
    if status == 410:
        assert results["output_parameters"]["converged"] is False and "hamiltonian" not in results


def test_truncated_output_of_walltime_killed_job_is_400(aiida_profile, aiida_localhost, fe_dir, tmp_path):
    """An unreadable output of a job the scheduler stopped for walltime (exit status 120) is 400, not 310."""
    node = orm.CalcJobNode(computer=aiida_localhost, process_type="aiida.calculations:deeph.openmx")
    node.set_option("resources", SERIAL["resources"])
    node.set_option("output_filename", "aiida.std")
    node.store()
    retrieved = orm.FolderData()
    retrieved.base.repository.put_object_from_file(str(truncated(fe_dir / "fe.out", tmp_path / "fe.out")), "aiida.out")
    retrieved.base.links.add_incoming(node, LinkType.CREATE, "retrieved")
    retrieved.store()
    node.set_exit_status(DeepHOpenmxCalculation.exit_codes.ERROR_SCHEDULER_OUT_OF_WALLTIME.status)
    _, calcfunction = DeepHOpenmxParser.parse_from_node(node, store_provenance=False)
    assert calcfunction.exit_status == DeepHOpenmxCalculation.exit_codes.ERROR_OUT_OF_WALLTIME.status


def test_overlap_only_run(aiida_profile, replay_code, fe_dir, tmp_path):
    """The overlap-only OpenMX writes output/overlaps_<rank>.h5; built here from the recorded S(R) over 2 ranks."""
    scf = read_scfout(fe_dir / "fe.scfout")
    files = [tmp_path / f"overlaps_{rank}.h5" for rank in (0, 1)]
    for rank, path in enumerate(files):
        with h5py.File(path, "w") as handle:
            for (rx, ry, rz, i, j), block in zip(scf.pairs.tolist(), scf.olp):
                if i == rank:  # each rank writes the pairs of its own atoms
                    handle.create_dataset(f"[{rx}, {ry}, {rz}, {i + 1}, {j + 1}]", data=block)
    stdout = tmp_path / "overlap.std"
    stdout.write_text((fe_dir / "out.std").read_text().split("Welcome")[0]
                      + "Welcome to OpenMX   Ver. 3.9.9\n Calc. OLP ...\n The calculation was normally finished.\n")
    run = {"aiida.std": stdout, **{f"output/{path.name}": path for path in files}}
    code = replay_code(run, expect=EXPECT)
    results, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code,
                                                                      settings={"overlap_only": True}))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results["output_parameters"].get_dict() == {"code": "openmx", "version": "3.9.9", "overlap_only": True}
    hamiltonian = results["hamiltonian"]
    assert hamiltonian.base.attributes.get("has_hamiltonian") is False
    overlap, reference = hamiltonian.get_deeph().overlap, openmx_to_deeph(fe_dir).overlap
    np.testing.assert_array_equal(overlap.atom_pairs, reference.atom_pairs)
    np.testing.assert_array_equal(overlap.entries, reference.entries)


# --- validation before submission -----------------------------------------------------------------------------------
def _refused(inputs: dict, match: str) -> None:
    assert_refused(DeepHOpenmxCalculation, inputs, match)


@pytest.mark.parametrize(
    "parameters, match",
    [
        ({"scf_maxIteration": 50}, r"unknown openmx keyword `scf_maxIteration`; did you mean scf_maxIter\?"),
        ({"scf_XcTipe": "GGA-PBE"}, r"did you mean scf_XcType\?"),
        ({"HS_fileout": "off"}, r"`HS_fileout` is set by the plugin \(always on"),
        ({"system_name": "fe"}, r"`system_name` is set by the plugin"),
        ({"Atoms_UnitVectors": [[1, 0, 0]]}, r"written from `structure`"),
        ({"scf_Kgrid": "3 3 3"}, r"written from `kpoints`"),
        ({"scf_maxIter": 10, "SCF_MAXITER": 20}, r"keyword given twice: `scf_maxIter` and `SCF_MAXITER`"),
    ],
)
def test_parameters_refused(aiida_profile, aiida_code_installed, fe_dir, tmp_path, parameters, match):
    _refused(fe_inputs(fe_dir, tmp_path, aiida_code_installed(), parameters=parameters), match)


def test_lower_case_keywords_accepted(aiida_profile, aiida_code_installed, fe_dir, tmp_path):
    prepare(DeepHOpenmxCalculation, fe_inputs(fe_dir, tmp_path, aiida_code_installed(),
                                             parameters={"scf_maxiter": 10, "SCF_XCTYPE": "GGA-PBE"}), tmp_path)
    written = parse_openmx_input((tmp_path / "aiida.dat").read_text().splitlines())
    assert "scf.maxIter                         10" in (tmp_path / "aiida.dat").read_text()
    assert written.get("scf.XcType") == "GGA-PBE"


def test_inputs_refused(aiida_profile, aiida_code_installed, fe_dir, dft_fixtures, tmp_path):
    code = aiida_code_installed()
    inputs = fe_inputs(fe_dir, tmp_path, code)
    _refused({**inputs, "orbitals": {}}, r"no orbital file for Fe: give `orbitals.Fe`")
    _refused({**inputs, "pseudos": {}}, r"no pseudopotential for Fe")
    orb = dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "orbitals" / "S_DZP" / "S_gga_8au_100Ry_2s2p1d.orb"
    sulfur = orm.StructureData(cell=[[4, 0, 0], [0, 4, 0], [0, 0, 4]])
    sulfur.append_atom(position=(0, 0, 0), symbols="S")
    _refused({**inputs, "structure": sulfur, "orbitals": {"S": OrbitalData(orb)},
              "pseudos": {"S": VpsData(write_vps(tmp_path / "S_PBE19.vps", 16, 6.0))},
              "settings": orm.Dict()}, r"orbitals.S is an abacus file")
    ungrouped = orm.StructureData(cell=[[6, 0, 0], [0, 6, 0], [0, 0, 6]])
    for symbol, x in (("Fe", 0.0), ("S", 1.5), ("Fe", 3.0)):
        ungrouped.append_atom(position=(x, 0, 0), symbols=symbol)
    _refused({**inputs, "structure": ungrouped}, r"grouped by element.*Fe S Fe")
    _refused({**inputs, "settings": orm.Dict({"initial_magnetic_moments": {"Fe": 20.0}})}, r"exceeds its 14")
    _refused({**inputs, "settings": orm.Dict({"overlap_ony": True})}, r"unknown settings overlap_ony")
    shifted = mesh(2, 2, 2)
    shifted.set_kpoints_mesh([2, 2, 2], offset=[0.5, 0.5, 0.5])
    _refused({**inputs, "kpoints": shifted}, r"Γ-centred")
    upf = dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock" / "pseudo" / "S_ONCV_PBE-1.0.upf"
    with pytest.raises(ValueError, match="valid type|VpsData"):
        run_get_node(DeepHOpenmxCalculation, **{**inputs, "pseudos": {"Fe": UpfData(upf)}})


def test_replay_text_only_mote2_run(aiida_profile, replay_code, fe_dir, tmp_path, dft_fixtures):
    """The MoTe2 fixture kept only its text outputs (no .scfout): the parser reads them and says the matrices are
    missing, the exit code a WorkChain reports rather than retries."""
    mote2 = dft_fixtures / "openmx" / "MoTe2_deeph_dock_textonly"
    code = replay_code({"aiida.std": mote2 / "openmx.std", "aiida.out": mote2 / "openmx.out"}, expect=EXPECT)
    results, node = run_get_node(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code))
    assert node.exit_status == DeepHOpenmxCalculation.exit_codes.ERROR_MATRICES_MISSING.status, node.exit_message

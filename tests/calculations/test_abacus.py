"""deeph.abacus: the input writer against the recorded MoS2 input, replays of the recorded ABACUS v3.10 run through the
engine (CalcJob + parser), get_S, failure modes and validation before submission."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiida import orm
from aiida.engine import run_get_node
from aiida_pseudo.data.pseudo import UpfData

from aiida_deeph.calculations.abacus import CONTROLLED, DeepHAbacusCalculation
from aiida_deeph.data.orbital import OrbitalData
from aiida_deeph.io.abacus import abacus_to_deeph, read_input, read_kpt, read_running_log, read_stru
from aiida_deeph.io.deeph_format import parse_poscar

from ..replay import SERIAL, assert_refused, prepare, replay_code  # noqa: F401  (fixture)

EFERMI = -2.3123356452  # eV, running_scf.log


@pytest.fixture
def mos2_dir(dft_fixtures) -> Path:
    return dft_fixtures / "abacus" / "MoS2_v3.10_deeph_dock"


def mos2_structure(mos2_dir: Path) -> orm.StructureData:
    """The run's structure as ABACUS used it (latname hexagonal standardizes the cell): DeepH-dock's POSCAR."""
    lattice, species, positions = parse_poscar((mos2_dir / "deeph_ref" / "POSCAR").read_text())
    structure = orm.StructureData(cell=lattice.tolist())
    for symbol, position in zip(species, positions):
        structure.append_atom(position=position.tolist(), symbols=symbol)
    return structure


def mos2_inputs(mos2_dir: Path, code=None, parameters: dict | None = None, settings: dict | None = None) -> dict:
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([4, 1, 1])
    inputs = {
        "structure": mos2_structure(mos2_dir),
        "kpoints": kpoints,
        "parameters": orm.Dict(parameters or {"ecutwfc": 60, "scf_thr": 1e-8, "scf_nmax": 50}),
        "pseudos": {el: UpfData(mos2_dir / "pseudo" / f"{el}_ONCV_PBE-1.0.upf") for el in ("Mo", "S")},
        "orbitals": {el: OrbitalData(next((mos2_dir / "orbitals").rglob(f"{el}_gga_*.orb"))) for el in ("Mo", "S")},
        "metadata": {"options": SERIAL},
    }
    if settings:
        inputs["settings"] = orm.Dict(settings)
    if code is not None:
        inputs["code"] = code
    return inputs


# --- input writer ---------------------------------------------------------------------------------------------------
def test_input_reproduces_recorded_mos2_input(aiida_profile, aiida_code_installed, mos2_dir, tmp_path):
    recorded = read_input(mos2_dir / "INPUT")
    parameters = {key: value for key, value in recorded.items() if key not in CONTROLLED}
    assert set(parameters) == {"ecutwfc", "scf_thr", "scf_nmax", "smearing_sigma", "out_bandgap", "out_mat_r",
                               "out_dm1"}
    calcinfo = prepare(DeepHAbacusCalculation, mos2_inputs(mos2_dir, aiida_code_installed(), parameters), tmp_path)

    written = read_input(tmp_path / "INPUT")
    assert {key: written[key] for key in parameters} == parameters
    assert {key: written[key] for key in ("calculation", "basis_type", "out_mat_hs2")} == {
        "calculation": recorded["calculation"], "basis_type": recorded["basis_type"], "out_mat_hs2": "1"}
    assert written["suffix"] == "ABACUS" and written["ntype"] == "2" and "latname" not in written

    stru, reference = read_stru(tmp_path / "STRU"), read_stru(mos2_dir / "STRU")
    assert [(label, pseudo) for label, _, pseudo in stru.species] == [
        (label, pseudo) for label, _, pseudo in reference.species]
    assert stru.orbital_files == [Path(name).name for name in reference.orbital_files]
    assert stru.labels == reference.labels == ["Mo", "S", "S"]
    log = read_running_log(mos2_dir / "OUT.ABACUS" / "running_scf.log")  # the cell ABACUS made of LATTICE_PARAMETERS
    np.testing.assert_allclose(stru.cell(), log.cell, atol=1e-10)
    np.testing.assert_allclose(stru.positions(), log.positions, atol=1e-10)
    assert stru.magnetism == [0.0, 0.0]

    kpt, recorded_kpt = read_kpt(tmp_path / "KPT"), read_kpt(mos2_dir / "KPT")
    assert (kpt.mode, kpt.grid, kpt.shift) == (recorded_kpt.mode, recorded_kpt.grid, recorded_kpt.shift) == (
        "Gamma", (4, 1, 1), (0.0, 0.0, 0.0))
    assert sorted(target for _, _, target in calcinfo.local_copy_list) == [
        "Mo_ONCV_PBE-1.0.upf", "Mo_gga_8au_100Ry_4s2p2d1f.orb", "S_ONCV_PBE-1.0.upf", "S_gga_8au_100Ry_2s2p1d.orb"]


def test_positions_are_wrapped_into_the_cell(aiida_profile, aiida_code_installed, mos2_dir, tmp_path):
    inputs = mos2_inputs(mos2_dir, aiida_code_installed())
    structure = inputs["structure"]
    cell = np.array(structure.cell)
    moved = orm.StructureData(cell=structure.cell)
    for n, site in enumerate(structure.sites):  # each atom moved by other lattice vectors
        moved.append_atom(position=(np.array(site.position) + (n - 1) * cell[0] - cell[2]).tolist(),
                          symbols=structure.get_kind(site.kind_name).symbol)
    prepare(DeepHAbacusCalculation, {**inputs, "structure": moved}, tmp_path)
    np.testing.assert_allclose(read_stru(tmp_path / "STRU").positions(), structure.get_ase().positions, atol=1e-10)


# --- replays --------------------------------------------------------------------------------------------------------
EXPECT = ("INPUT", "STRU", "KPT", "Mo_ONCV_PBE-1.0.upf", "S_ONCV_PBE-1.0.upf", "Mo_gga_8au_100Ry_4s2p2d1f.orb",
          "S_gga_8au_100Ry_2s2p1d.orb")


def mos2_run(mos2_dir: Path, **replaced: Path) -> dict[str, Path]:
    """The recorded OUT.ABACUS/ files, with some replaced (keyword: file name with '.' as '_') or dropped (None)."""
    run = {f"OUT.ABACUS/{path.name}": path for path in sorted((mos2_dir / "OUT.ABACUS").iterdir())}
    for name, path in replaced.items():
        target = f"OUT.ABACUS/{name.replace('_csr', '.csr').replace('_log', '.log')}"
        if path is None:
            del run[target]
        else:
            run[target] = path
    return run


def test_replay_mos2_run(aiida_profile, replay_code, mos2_dir):
    code = replay_code(mos2_run(mos2_dir), expect=EXPECT)
    results, node = run_get_node(DeepHAbacusCalculation, **mos2_inputs(mos2_dir, code))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    params = results["output_parameters"].get_dict()
    assert params["version"] == "3.10.0" and params["converged"] and params["scf_steps"] == 27
    assert params["fermi_energy"] == EFERMI and params["wall_time"] == 19
    assert params["energy"] == pytest.approx(-2423.217181100656, abs=1e-9)  # AiiDA keeps 14 significant digits

    deeph, reference = results["hamiltonian"].get_deeph(), abacus_to_deeph(mos2_dir)
    for name in ("hamiltonian", "overlap"):
        ours, ref = getattr(deeph, name), getattr(reference, name)
        np.testing.assert_array_equal(ours.atom_pairs, ref.atom_pairs)
        np.testing.assert_array_equal(ours.entries, ref.entries)
    assert len(deeph.overlap) == 239 and deeph.fermi_energy_eV == EFERMI
    np.testing.assert_allclose(deeph.lattice, reference.lattice, atol=1e-12)
    retrieved = node.outputs.retrieved.base.repository
    assert retrieved.list_object_names("OUT.ABACUS") == ["running_scf.log"]  # the matrices are not stored as such


def test_get_s_overlap_only(aiida_profile, replay_code, mos2_dir):
    """calculation get_S writes SR.csr, the format of the SCF's data-SR-sparse file, which stands in for it here."""
    code = replay_code({"OUT.ABACUS/SR.csr": mos2_dir / "OUT.ABACUS" / "data-SR-sparse_SPIN0.csr",
                        "OUT.ABACUS/running_get_S.log": mos2_dir / "OUT.ABACUS" / "running_scf.log"}, expect=EXPECT)
    inputs = mos2_inputs(mos2_dir, code, settings={"overlap_only": True})
    results, node = run_get_node(DeepHAbacusCalculation, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert "calculation              get_S" in node.base.repository.get_object_content("INPUT")
    assert "out_mat_hs2" not in node.base.repository.get_object_content("INPUT")
    assert results["output_parameters"]["overlap_only"] and results["output_parameters"]["version"] == "3.10.0"
    deeph, reference = results["hamiltonian"].get_deeph(), abacus_to_deeph(mos2_dir)
    assert deeph.hamiltonian is None
    np.testing.assert_array_equal(deeph.overlap.atom_pairs, reference.overlap.atom_pairs)
    np.testing.assert_array_equal(deeph.overlap.entries, reference.overlap.entries)
    np.testing.assert_allclose(deeph.positions, reference.positions, atol=1e-9)


def cut(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("log", 310, "no final 'Total Time' line"),
        ("hr", 321, "data-HR-sparse_SPIN0.csr"),
        ("no_matrices", 320, "OUT.ABACUS/*.csr"),
        ("no_log", 302, "running_*.log"),
        ("unconverged", 410, None),
    ],
)
def test_failure_modes(aiida_profile, replay_code, mos2_dir, tmp_path, case, status, message):
    out = mos2_dir / "OUT.ABACUS"
    replaced = {
        "log": {"running_scf_log": cut(out / "running_scf.log", tmp_path / "running_scf.log", 0.5)},
        "hr": {"data-HR-sparse_SPIN0_csr": cut(out / "data-HR-sparse_SPIN0.csr", tmp_path / "hr.csr", 0.6)},
        "no_matrices": {"data-HR-sparse_SPIN0_csr": None, "data-SR-sparse_SPIN0_csr": None},
        "no_log": {"running_scf_log": None},
        "unconverged": {"running_scf_log": tmp_path / "running_scf.log"},
    }[case]
    if case == "unconverged":
        text = (out / "running_scf.log").read_text()
        assert text.count("charge density convergence is achieved") == 1
        (tmp_path / "running_scf.log").write_text(
            text.replace("charge density convergence is achieved", "!! CONVERGENCE HAS NOT BEEN ACHIEVED !!"))
    code = replay_code(mos2_run(mos2_dir, **replaced), expect=EXPECT)
    results, node = run_get_node(DeepHAbacusCalculation, **mos2_inputs(mos2_dir, code))
    assert node.exit_status == status, node.exit_message
    if message:
        assert message in node.exit_message
    if status == 410:
        params = results["output_parameters"].get_dict()
        assert params["converged"] is False and params["scf_steps"] == 27 and "hamiltonian" not in results


# --- validation before submission -----------------------------------------------------------------------------------
def _refused(inputs: dict, match: str) -> None:
    assert_refused(DeepHAbacusCalculation, inputs, match)


@pytest.mark.parametrize(
    "parameters, match",
    [
        ({"ecutwfcc": 60}, r"unknown abacus keyword `ecutwfcc`; did you mean ecutwfc\?"),
        ({"scf_thrs": 1e-6}, r"did you mean scf_thr\?"),
        ({"out_mat_hs2": 0}, r"`out_mat_hs2` is set by the plugin \(always 1"),
        ({"latname": "hexagonal"}, r"LATTICE_VECTORS"),
        ({"calculation": "get_S"}, r"settings \{'overlap_only': True\} runs get_S"),
        ({"Suffix": "MoS2"}, r"`Suffix` is set by the plugin"),
    ],
)
def test_parameters_refused(aiida_profile, aiida_code_installed, mos2_dir, parameters, match):
    _refused(mos2_inputs(mos2_dir, aiida_code_installed(), parameters), match)


def test_inputs_refused(aiida_profile, aiida_code_installed, mos2_dir, tmp_path):
    inputs = mos2_inputs(mos2_dir, aiida_code_installed())
    _refused({**inputs, "orbitals": {"Mo": inputs["orbitals"]["Mo"]}}, r"no orbital file for S: give `orbitals.S`")
    _refused({**inputs, "pseudos": {"S": inputs["pseudos"]["S"]}}, r"no pseudopotential for Mo")
    _refused({**inputs, "orbitals": {"Mo": inputs["orbitals"]["S"], "S": inputs["orbitals"]["S"]}},
             r"`orbitals` entries of another element: Mo \(S\)")
    ungrouped = orm.StructureData(cell=inputs["structure"].cell)
    for symbol, x in (("S", 0.0), ("Mo", 1.5), ("S", 3.0)):
        ungrouped.append_atom(position=(x, 0.0, 8.0), symbols=symbol)
    _refused({**inputs, "structure": ungrouped}, r"grouped by element.*S Mo S")


def test_restart_from_parent_charge_density(aiida_profile, aiida_code_installed, mos2_dir, tmp_path):
    code = aiida_code_installed()
    parent = orm.RemoteData(remote_path="/scratch/parent", computer=code.computer).store()
    inputs = {**mos2_inputs(mos2_dir, code), "parent_folder": parent}
    calcinfo = prepare(DeepHAbacusCalculation, inputs, tmp_path)
    written = read_input(tmp_path / "INPUT")
    assert (written["init_chg"], written["read_file_dir"], written["out_chg"]) == ("file", "restart", "1")
    assert calcinfo.remote_copy_list == [(code.computer.uuid, "/scratch/parent/OUT.ABACUS/SPIN*_CHG.cube", "restart")]
    assert (tmp_path / "restart").is_dir()


def test_replay_v36_log_without_matrices(aiida_profile, replay_code, mos2_dir, dft_fixtures):
    """The ABACUS 3.6 fixture kept only its log: read through the real parser, the matrices are reported missing."""
    log = dft_fixtures / "abacus" / "MoS2_v3.6_deeptb_logonly" / "OUT.ABACUS" / "running_scf.log"
    code = replay_code({"OUT.ABACUS/running_scf.log": log}, expect=EXPECT)
    results, node = run_get_node(DeepHAbacusCalculation, **mos2_inputs(mos2_dir, code))
    assert node.exit_status == DeepHAbacusCalculation.exit_codes.ERROR_MATRICES_MISSING.status, node.exit_message

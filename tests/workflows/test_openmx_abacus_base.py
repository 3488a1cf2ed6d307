"""deeph.openmx.base and deeph.abacus.base: protocols with pseudopotential and orbital families, restarts of a
replayed SCF that did not converge, the walltime handler."""

from __future__ import annotations

import shutil
import uuid

import pytest
from aiida import orm
from aiida.engine import ProcessHandlerReport, run_get_node
from aiida.engine.utils import instantiate_process
from aiida.manage import get_manager
from aiida_pseudo.data.pseudo import UpfData, VpsData
from aiida_pseudo.groups.family import PseudoPotentialFamily

from aiida_deeph.data.orbital import OrbitalFamily
from aiida_deeph.workflows.abacus_base import AbacusBaseWorkChain
from aiida_deeph.workflows.openmx_base import OpenmxBaseWorkChain

from ..calculations.test_abacus import EXPECT as ABACUS_INPUTS
from ..calculations.test_abacus import mos2_run, mos2_structure
from ..calculations.test_openmx import EXPECT as OPENMX_INPUTS
from ..calculations.test_openmx import fe_run, fe_structure, unconverged
from ..replay import SERIAL, replay_code, write_pao, write_vps  # noqa: F401  (fixture)

MOS2 = "abacus/MoS2_v3.10_deeph_dock"
FE = "openmx/fe_bcc_spin_sli43"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def abacus_families(aiida_profile, dft_fixtures, tmp_path) -> tuple[str, str]:
    """An aiida-pseudo family of the SG15 UPF files and an orbital family of the DZP .orb files of the MoS2 run."""
    pseudo_dir = shutil.copytree(dft_fixtures / MOS2 / "pseudo", tmp_path / "upf")
    pseudos = PseudoPotentialFamily.create_from_folder(pseudo_dir, unique("sg15"), pseudo_type=UpfData)
    orbitals = OrbitalFamily.create_from_folder(dft_fixtures / MOS2 / "orbitals", unique("sg15-dzp"))
    return pseudos.label, orbitals.label


@pytest.fixture
def openmx_families(aiida_profile, tmp_path) -> tuple[str, str]:
    """Families of a synthetic Fe_PBE19S.vps and Fe6.0S.pao (the OpenMX library is not among the fixtures)."""
    (tmp_path / "vps").mkdir()
    (tmp_path / "pao").mkdir()
    write_vps(tmp_path / "vps" / "Fe_PBE19S.vps", 26, 14.0)
    write_pao(tmp_path / "pao" / "Fe6.0S.pao", 26, lmax=3, mul=2)
    pseudos = PseudoPotentialFamily.create_from_folder(tmp_path / "vps", unique("pbe19-vps"), pseudo_type=VpsData)
    orbitals = OrbitalFamily.create_from_folder(tmp_path / "pao", unique("pbe19-pao"), basis={"Fe": "Fe6.0S-s2p2d1"})
    return pseudos.label, orbitals.label


SERIAL_OVERRIDES = {"metadata": {"options": SERIAL}}


def test_protocols(abacus_families, aiida_code_installed, dft_fixtures):
    assert set(AbacusBaseWorkChain.get_available_protocols()) == {"fast", "moderate", "precise"}
    assert set(OpenmxBaseWorkChain.get_available_protocols()) == {"fast", "moderate", "precise"}
    pseudo_family, orbital_family = abacus_families
    overrides = {"abacus": {"parameters": {"scf_nmax": 7}}}
    builder = AbacusBaseWorkChain.get_builder_from_protocol(
        aiida_code_installed(), mos2_structure(dft_fixtures / MOS2), "precise", overrides,
        pseudo_family=pseudo_family, orbital_family=orbital_family)
    parameters = builder.abacus.parameters.get_dict()
    assert parameters["scf_nmax"] == 7 and parameters["ecutwfc"] == 100 and parameters["scf_thr"] == 1e-9
    assert {el: node.filename for el, node in builder.abacus.orbitals.items()} == {
        "Mo": "Mo_gga_8au_100Ry_4s2p2d1f.orb", "S": "S_gga_8au_100Ry_2s2p1d.orb"}
    assert {el: node.element for el, node in builder.abacus.pseudos.items()} == {"Mo": "Mo", "S": "S"}
    assert builder.kpoints_distance.value == 0.15
    with pytest.raises(ValueError, match="unknown protocol"):
        AbacusBaseWorkChain.get_builder_from_protocol(aiida_code_installed(), mos2_structure(dft_fixtures / MOS2),
                                                      "ultra", pseudo_family=pseudo_family,
                                                      orbital_family=orbital_family)


def test_missing_or_wrong_families(abacus_families, openmx_families, aiida_code_installed, dft_fixtures):
    code, structure = aiida_code_installed(), mos2_structure(dft_fixtures / MOS2)
    pseudo_family, orbital_family = abacus_families
    with pytest.raises(ValueError, match=r"'SG15-ONCV-PBE-1.0' is not installed.*aiida-pseudo install family "
                                         r"<folder> SG15-ONCV-PBE-1.0 -P pseudo.upf"):
        AbacusBaseWorkChain.get_builder_from_protocol(code, structure)
    with pytest.raises(ValueError, match=r"orbital family 'nope' is not installed.*OrbitalFamily.create_from_folder"):
        AbacusBaseWorkChain.get_builder_from_protocol(code, structure, pseudo_family=pseudo_family,
                                                      orbital_family="nope")
    with pytest.raises(ValueError, match="does not contain pseudo for element `Mo`"):
        AbacusBaseWorkChain.get_builder_from_protocol(code, structure, pseudo_family=openmx_families[0],
                                                      orbital_family=orbital_family)
    fe = fe_structure(dft_fixtures / FE)
    with pytest.raises(ValueError, match="holds .*not openmx orbital files|has no orbital file for Fe"):
        OpenmxBaseWorkChain.get_builder_from_protocol(code, fe, pseudo_family=openmx_families[0],
                                                      orbital_family=orbital_family)


def test_abacus_scf_not_converged_is_restarted(abacus_families, replay_code, dft_fixtures, tmp_path):
    """A replayed ABACUS run that did not converge is rerun with twice scf_nmax and half mixing_beta."""
    source = dft_fixtures / MOS2 / "OUT.ABACUS" / "running_scf.log"
    failed_log = tmp_path / "running_scf.log"
    failed_log.write_text(source.read_text().replace("charge density convergence is achieved",
                                                     "!! CONVERGENCE HAS NOT BEEN ACHIEVED !!"))
    code = replay_code(mos2_run(dft_fixtures / MOS2, running_scf_log=failed_log), mos2_run(dft_fixtures / MOS2),
                       expect=ABACUS_INPUTS)
    pseudo_family, orbital_family = abacus_families
    builder = AbacusBaseWorkChain.get_builder_from_protocol(
        code, mos2_structure(dft_fixtures / MOS2), "fast", {"abacus": SERIAL_OVERRIDES},
        pseudo_family=pseudo_family, orbital_family=orbital_family)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    first, second = sorted(node.called, key=lambda n: n.ctime)
    assert first.exit_status == 410 and second.is_finished_ok
    assert first.inputs.parameters["scf_nmax"] == 100 and first.inputs.parameters["mixing_beta"] == 0.4
    assert second.inputs.parameters["scf_nmax"] == 200 and second.inputs.parameters["mixing_beta"] == 0.2
    assert results["hamiltonian"].npairs == 239
    assert any("SCF not converged; restarting with scf_nmax 200, mixing_beta 0.2" in log.message
               for log in orm.Log.collection.get_logs_for(node))


def test_openmx_scf_not_converged_is_restarted(openmx_families, replay_code, dft_fixtures, tmp_path):
    fe_dir = dft_fixtures / FE
    code = replay_code(fe_run(fe_dir, aiida_out=unconverged(fe_dir, tmp_path / "fe.out")), fe_run(fe_dir),
                       expect=OPENMX_INPUTS)
    kpoints = orm.KpointsData()
    kpoints.set_kpoints_mesh([11, 11, 11])
    builder = OpenmxBaseWorkChain.get_builder_from_protocol(
        code, fe_structure(fe_dir), "fast", {"openmx": {**SERIAL_OVERRIDES, "parameters": {"scf_maxIter": 30}}},
        pseudo_family=openmx_families[0], orbital_family=openmx_families[1])
    parameters = builder.openmx.parameters.get_dict()
    parameters["scf_maxiter"] = parameters.pop("scf_maxIter")  # a user's spelling: keywords ignore case
    builder.openmx.parameters = orm.Dict(parameters)
    builder.kpoints = kpoints
    del builder.kpoints_distance
    results, node = run_get_node(builder)
    assert node.is_finished_ok, node.exit_status
    first, second = sorted(node.called, key=lambda n: n.ctime)
    assert first.exit_status == 410
    parameters = second.inputs.parameters.get_dict()
    # the user's lower-case spelling is kept, and the protocol's mixing weights are halved
    assert parameters["scf_maxiter"] == 60 and "scf_maxIter" not in parameters
    assert parameters["scf_Init_Mixing_Weight"] == 0.05 and parameters["scf_Max_Mixing_Weight"] == 0.2
    assert "scf.maxIter                         60" in second.base.repository.get_object_content("aiida.dat")
    assert results["output_parameters"]["converged"] and results["hamiltonian"].npairs == 226


def test_walltime_handler(abacus_families, aiida_code_installed, aiida_localhost, dft_fixtures):
    pseudo_family, orbital_family = abacus_families
    builder = AbacusBaseWorkChain.get_builder_from_protocol(
        aiida_code_installed(), mos2_structure(dft_fixtures / MOS2), "fast", {"abacus": SERIAL_OVERRIDES},
        pseudo_family=pseudo_family, orbital_family=orbital_family)
    process = instantiate_process(get_manager().get_runner(), AbacusBaseWorkChain, **builder)
    process.setup()
    failed = orm.CalcJobNode(computer=aiida_localhost, process_type="aiida.calculations:deeph.abacus")
    failed.set_exit_status(AbacusBaseWorkChain._process_class.exit_codes.ERROR_OUT_OF_WALLTIME.status)
    failed.store()
    report = process.handle_out_of_walltime(failed)
    assert isinstance(report, ProcessHandlerReport) and report.do_break
    assert process.ctx.inputs.metadata["options"]["max_wallclock_seconds"] == 900  # 1.5 × 600 s
    assert process.handle_scf_not_converged(failed) is None  # handlers act on their own exit codes only


def test_deeph_chain_on_a_cluster_with_abacus(abacus_families, aiida_code_installed, dft_fixtures):
    """The end-to-end WorkChain wired for ABACUS on SLURM: the target's overlap is an overlap-only ABACUS run, the
    training asks SLURM for GPUs and runs torchrun, and the whole builder passes the WorkChain's validation."""
    from aiida_deeph.tools.launch import cluster_overrides
    from aiida_deeph.workflows.deeph import DeepHWorkChain

    pseudo_family, orbital_family = abacus_families
    structure = mos2_structure(dft_fixtures / MOS2)
    overrides = cluster_overrides("abacus", machines=2, mpiprocs=32, walltime=7200, queue="gpu", gpus=4)
    builder = DeepHWorkChain.get_builder_from_protocol(
        aiida_code_installed(), aiida_code_installed(), structure, structure, "moderate", overrides,
        validation_structure=structure, engine="abacus", pseudo_family=pseudo_family, orbital_family=orbital_family)
    inference = builder.inference
    assert "code" not in inference.overlap
    assert inference.overlap_dft.abacus.abacus.settings.get_dict() == {"overlap_only": True}
    assert "settings" not in inference.validation.abacus.abacus  # the validation is a full SCF
    dft_options = builder.dataset.abacus.abacus.metadata["options"]
    assert dft_options["resources"] == {"num_machines": 2, "num_mpiprocs_per_machine": 32}
    assert dft_options["queue_name"] == "gpu" and dft_options["max_wallclock_seconds"] == 7200
    train = builder.training.train
    assert train.metadata["options"]["custom_scheduler_commands"] == "#SBATCH --gres=gpu:4"
    assert train.settings.get_dict() == {"torchrun": {"nproc_per_node": 4, "nnodes": 1}}
    assert train.parameters["system"]["device"] == "cuda"
    assert DeepHWorkChain.spec().inputs.validate(builder._inputs(prune=True)) is None

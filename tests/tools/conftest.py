"""Fixtures of the provenance-query tests: the real ML chain, and a dataset made from a remote OpenMX folder."""

from __future__ import annotations

import pytest
from aiida import orm

from aiida_deeph.calculations.openmx import DeepHOpenmxCalculation
from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.data.dataset import DatasetData

from ..calculations.test_openmx import EXPECT, fe_inputs, fe_run
from ..chain import ml_chain, run_ok  # noqa: F401  (fixture)
from ..replay import replay_script


@pytest.fixture
def openmx_dataset(python_code, aiida_code_installed, dft_fixtures, tmp_path) -> DatasetData:
    """The recorded OpenMX Fe run replayed with ``keep_matrices_remote``; its remote folder → ``deeph.preprocess``
    through ``dft_folders`` (no HamiltonianData between the DFT and the dataset)."""
    fe_dir = dft_fixtures / "openmx" / "fe_bcc_spin_sli43"
    script = replay_script(tmp_path, [fe_run(fe_dir)], EXPECT)
    # on the computer of the ML code: deeph.preprocess links remote folders of its own computer only
    code = aiida_code_installed(filepath_executable=str(script), computer=python_code.computer, with_mpi=False)
    parameters = {"scf_XcType": "GGA-PBE", "scf_SpinPolarization": "on", "scf_criterion": 1e-9,
                  "scf_EnergyCutoff": 150.0}
    _, dft = run_ok(DeepHOpenmxCalculation, **fe_inputs(fe_dir, tmp_path, code, parameters=parameters,
                                                         settings={"keep_matrices_remote": True}))
    results, _ = run_ok(PreprocessCalculation, code=python_code, dft_folders={"fe": dft.outputs.remote_folder},
                        parameters=orm.Dict({"split": [1.0, 0.0, 0.0]}))
    return results["dataset"]

"""deeph.training: a run stopped by its walltime is resumed from its checkpoint until the epochs are done."""

from __future__ import annotations

import json

import pytest
from aiida import orm
from aiida.engine import run_get_node

from aiida_deeph.calculations.preprocess import PreprocessCalculation
from aiida_deeph.data.hamiltonian import HamiltonianData
from aiida_deeph.workflows.training import TrainingWorkChain

pytestmark = pytest.mark.cp2k

OPTIONS = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": 600}


@pytest.fixture(scope="module")
def dataset(python_code, cp2k_graphene):
    structures = {f"s{n}": HamiltonianData(folder=folder) for n, folder in enumerate(cp2k_graphene(2))}
    results, node = run_get_node(PreprocessCalculation, code=python_code, structures=structures,
                                 parameters=orm.Dict({"split": [0.5, 0.5, 0.0]}), metadata={"options": OPTIONS})
    assert node.is_finished_ok
    return results["dataset"]


def test_walltime_stops_are_resumed_to_the_last_epoch(python_code, dataset):
    # a run always trains one epoch; a 1 ms limit then stops it, however fast the machine
    overrides = {"train": {"parameters": {"process": {"train": {"max_epochs": 3, "walltime_s": 0.001,
                                                                "checkpoint_every": 1}}}}}
    builder = TrainingWorkChain.get_builder_from_protocol(python_code, dataset, "test", overrides)
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    runs = sorted(node.called, key=lambda calc: calc.ctime)
    assert len(runs) == 3, "a 1 ms walltime stops every run after its first epoch"
    assert all(run.exit_status == 400 for run in runs[:-1]) and runs[-1].exit_status == 0
    assert all(later.inputs.parent_folder.uuid == earlier.outputs.remote_folder.uuid
               for earlier, later in zip(runs, runs[1:]))
    assert results["output_parameters"]["epochs"] == 3
    epochs = results["training_curve"].get_x()[1]
    assert list(epochs) == [1, 2, 3]  # every epoch once over the three runs: nothing lost, nothing repeated
    # the model cutoff covers the dataset's longest pair with the margin
    longest = max(json.loads(dataset.base.repository.get_object_content("dataset.json"))["pair_cutoffs"].values())
    assert longest + 0.5 <= runs[0].inputs.parameters["model"]["cutoff"] < longest + 1.5


def test_launch_and_watch_from_the_command_line(python_code, dataset, aiida_profile):
    from click.testing import CliRunner

    from aiida_deeph.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["launch", "training", str(dataset.pk), "--protocol", "test", "--foreground",
                                 "--python-code", python_code.full_label, "--profile", aiida_profile.name])
    assert result.exit_code == 0, result.output
    assert "TrainingWorkChain<" in result.output and "model" in result.output
    pk = int(result.output.split("TrainingWorkChain<")[1].split(">")[0])
    watched = runner.invoke(cli, ["watch", str(pk), "--profile", aiida_profile.name])
    assert watched.exit_code == 0, watched.output
    assert "model cutoff" in watched.output and "finished, exit status 0" in watched.output

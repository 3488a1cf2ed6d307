"""``aiida-deeph model|provenance|plot`` on a real CP2K → preprocess → train → infer → bands chain."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from aiida_deeph.cli import cli
from aiida_deeph.cli.plot import parity_points
from aiida_deeph.cli.provenance import format_mev
from aiida_deeph.ml.checkpoint import load_model

from ..chain import ml_chain  # noqa: F401  (fixture)

pytestmark = pytest.mark.cp2k
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def deeph(aiida_profile):
    """``deeph(*args)`` → the result of ``aiida-deeph ARGS --profile <test profile>``."""

    def invoke(*args):
        return CliRunner().invoke(cli, [*(str(arg) for arg in args), "--profile", aiida_profile.name])

    return invoke


def output_of(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_model_list(deeph, ml_chain):
    model = ml_chain.model
    rows = {line.split()[0]: line.split() for line in output_of(deeph("model", "list")).splitlines()[2:]}
    metrics = model.base.attributes.get("metrics")
    assert rows[str(model.pk)][1:5] == ["deeph2", "C", format_mev(metrics["val"]["mae_meV"]),
                                        format_mev(metrics["test"]["mae_meV"])]
    assert rows[str(model.pk)][5] == f"{model.ctime:%Y-%m-%d}"
    assert f"\n  {model.pk} " not in output_of(deeph("model", "list", "--element", "N"))


def test_model_show(deeph, ml_chain):
    text = output_of(deeph("model", "show", ml_chain.model.pk))
    assert text.startswith(f"ModelData<{ml_chain.model.pk}>: deeph2 on C")
    assert "config: model deeph2, num_blocks 1" in text and "channels 8" in text and "\nbasis: C s p\n" in text
    assert f"val MAE {format_mev(ml_chain.train.outputs.output_parameters['val_mae_meV'])}" in text
    assert f"trained by deeph.train<{ml_chain.train.pk}> [exit 0] 2 epochs" in text
    assert f"dataset DatasetData<{ml_chain.dataset.pk}>: 2 structures (C), split train 1 / val 0 / test 1" in text
    version = ml_chain.dft[0].outputs.output_parameters["cp2k_version"]
    for calc in ml_chain.dft:
        assert (f"  deeph.cp2k<{calc.pk}> [exit 0] cp2k@localhost-deeph [{version}]: C8, basis SZV-MOLOPT-SR-GTH, "
                "pseudopotential GTH-PBE, cutoff 250 Ry\n") in text
    assert f"predictions (1): HamiltonianData<{ml_chain.prediction.pk}>" in text


def test_model_export_loads(deeph, ml_chain, tmp_path):
    text = output_of(deeph("model", "export", ml_chain.model.pk, tmp_path / "model"))
    assert "basis.json, config.json, metrics.json, weights.pt (sha256 verified)" in text
    network = load_model(tmp_path / "model")
    assert sum(p.numel() for p in network.parameters()) == ml_chain.train.outputs.output_parameters["num_parameters"]
    refused = deeph("model", "export", ml_chain.model.pk, tmp_path / "model")
    assert refused.exit_code != 0 and "is not empty" in refused.output


def test_commands_refuse_the_wrong_node(deeph, ml_chain):
    for args, message in ((("model", "show", ml_chain.dataset.pk), "is a DatasetData, not a ModelData"),
                          (("provenance", 10**9), "no node with PK"),
                          (("plot", "curve", ml_chain.infer.pk, "-o", "x.png"), "neither a deeph.train"),
                          (("plot", "bands", ml_chain.train.pk, "-o", "x.png"), "deeph.train, not a deeph.bands"),
                          (("plot", "parity", ml_chain.model.pk, "--split", "val", "-o", "x.png"),
                           f"the val split of DatasetData<{ml_chain.dataset.pk}>: 2 structures (C), split train 1 / "
                           "val 0 / test 1 is empty")):
        result = deeph(*args)
        assert result.exit_code != 0 and message in result.output, (args, result.output)


def test_unknown_profile_is_a_clean_error(aiida_profile):
    result = CliRunner().invoke(cli, ["model", "list", "--profile", "no-such-profile"])
    assert result.exit_code == 1 and "no-such-profile" in result.output and "Traceback" not in result.output


def test_provenance_from_prediction_to_dft(deeph, ml_chain):
    lines = output_of(deeph("provenance", ml_chain.prediction.pk)).splitlines()
    assert lines[0] == f"HamiltonianData<{ml_chain.prediction.pk}>: 8 atoms (C), H and S"
    steps = [f"← deeph.infer<{ml_chain.infer.pk}>", f"model: ModelData<{ml_chain.model.pk}>",
             f"← deeph.train<{ml_chain.train.pk}>", f"dataset: DatasetData<{ml_chain.dataset.pk}>",
             "← deeph.preprocess<", f"structures.s0: HamiltonianData<{ml_chain.hamiltonians[0].pk}>",
             f"← deeph.cp2k<{ml_chain.dft[0].pk}>", "structure: StructureData<"]
    found = [next(n for n, line in enumerate(lines) if line.lstrip().startswith(step)) for step in steps]
    assert found == sorted(found)
    depths = [len(lines[n]) - len(lines[n].lstrip()) for n in found]
    assert depths == [2 * level for level in range(1, len(steps) + 1)]  # each step one level further up
    dft = lines[found[6]]
    assert ml_chain.dft[0].outputs.output_parameters["cp2k_version"] in dft
    assert "basis SZV-MOLOPT-SR-GTH" in dft and "cutoff 250 Ry" in dft
    assert sum(line.lstrip().startswith("← deeph.cp2k<") for line in lines) == 2
    target = ml_chain.hamiltonians[0]
    assert lines[-2:] == [f"    overlap: HamiltonianData<{target.pk}>: 8 atoms (C), H and S (see above)",
                          f"    structure: StructureData<{target.creator.inputs.structure.pk}>: C8 (see above)"]


def test_provenance_from_model(deeph, ml_chain):
    lines = output_of(deeph("provenance", ml_chain.model.pk)).splitlines()
    assert lines[:2] == [f"ModelData<{ml_chain.model.pk}>: deeph2 on C",
                         f"  ← deeph.train<{ml_chain.train.pk}> [exit 0] 2 epochs, val MAE "
                         f"{format_mev(ml_chain.train.outputs.output_parameters['val_mae_meV'])} meV"]


@pytest.mark.parametrize("command, node", [("curve", "train"), ("curve", "model"), ("parity", "model"),
                                           ("bands", "bands"), ("bands", "bands_data")])
def test_plots_are_png(deeph, ml_chain, tmp_path, command, node):
    pk = ml_chain.bands.outputs.bands.pk if node == "bands_data" else getattr(ml_chain, node).pk
    output = tmp_path / "plot.png"
    assert output_of(deeph("plot", command, pk, "-o", output)).strip() == f"wrote {output}"
    assert output.read_bytes()[:8] == PNG and output.stat().st_size > 10_000


def test_parity_points_give_the_test_mae_of_training(ml_chain):
    predicted, reference = parity_points(ml_chain.model, ml_chain.dataset, "test")
    assert len(predicted) == len(reference) > 0
    mae = 1000 * abs(predicted - reference).mean()
    assert mae == pytest.approx(ml_chain.train.outputs.output_parameters["test_mae_meV"], rel=1e-4)

"""``model`` commands: list the trained models, show one with the data and DFT behind it, export its folder."""

from __future__ import annotations

from pathlib import Path

import click

from .provenance import PK, PROFILE, describe_calc, describe_data, describe_dft, format_mev, load_node, use_profile

SHELLS = "spdfgh"
SPLITS = ("train", "val", "test")


def _mae(model, split: str) -> float | None:
    return (model.base.attributes.get("metrics").get(split) or {}).get("mae_meV")


@click.group("model")
def model() -> None:
    """Trained DeepH models in the AiiDA database."""


@model.command("list")
@click.option("--element", default=None, help="Only models trained on a dataset holding this element.")
@PROFILE
def list_command(element: str | None, profile: str | None) -> None:
    """Table of the models: PK, architecture, elements, validation and test MAE, creation time."""
    from tabulate import tabulate

    from aiida_deeph.tools.queries import all_models, models_trained_on_element

    use_profile(profile)
    models = models_trained_on_element(element) if element else all_models()
    rows = [(m.pk, m.architecture, " ".join(m.base.attributes.get("elements")), format_mev(_mae(m, "val")),
             format_mev(_mae(m, "test")), m.ctime.strftime("%Y-%m-%d %H:%M")) for m in models]
    headers = ("PK", "architecture", "elements", "val MAE (meV)", "test MAE (meV)", "created")
    click.echo(tabulate(rows, headers=headers) if rows else "no models")


@model.command("show")
@PK
@PROFILE
def show_command(pk: int, profile: str | None) -> None:
    """Configuration, basis and metrics of model PK, the dataset it was trained on and the DFT runs behind that."""
    from aiida_deeph.data.model import ModelData
    from aiida_deeph.tools.queries import dft_behind_model, predictions_of_model, training_dataset

    node = load_node(pk, profile, ModelData)
    click.echo(f"{describe_data(node)}, created {node.ctime:%Y-%m-%d %H:%M}")
    click.echo("config: " + ", ".join(f"{key} {value}" for key, value in node.base.attributes.get("model").items()
                                      if value is not None))
    click.echo("basis: " + "; ".join(f"{el} {' '.join(SHELLS[l] for l in shells)}"
                                     for el, shells in node.elements_orbital_map.items()))
    metrics = node.base.attributes.get("metrics")
    click.echo("metrics (meV): " + "; ".join(
        f"{split} MAE {format_mev(metrics[split]['mae_meV'])} RMSE {format_mev(metrics[split]['rmse_meV'])}"
        for split in SPLITS if split in metrics))
    if node.creator is not None:
        click.echo(f"trained by {describe_calc(node.creator)}")
    dataset = training_dataset(node)
    if dataset is not None:
        click.echo(f"dataset {describe_data(dataset)}")
    summaries = dft_behind_model(node)
    click.echo(f"DFT behind the dataset ({len(summaries)}):")
    for summary in summaries:
        click.echo(f"  {describe_dft(summary)}")
    predictions = predictions_of_model(node)
    click.echo(f"predictions ({len(predictions)}): " + ", ".join(describe_data(p) for p in predictions))


@model.command("export")
@PK
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@PROFILE
def export_command(pk: int, directory: Path, profile: str | None) -> None:
    """Write the model folder of PK to DIRECTORY (new or empty), each file checked against its recorded sha256."""
    from aiida_deeph.data.model import ModelData

    if directory.is_dir() and any(directory.iterdir()):
        raise click.ClickException(f"{directory} is not empty; give a new or empty folder")
    node = load_node(pk, profile, ModelData)
    try:
        node.export(directory)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {directory}: {', '.join(sorted(node.checksums))} (sha256 verified)")

"""``plot`` commands: training curve, parity of predicted against DFT H entries, band structure — each a PNG."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np

from .provenance import PK, PROFILE, describe_data, entry_point, load_node

_OUTPUT = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                       help="PNG file to write.")
CURVES = {"train_mae_meV": "train", "val_mae_meV": "validation"}


def _axes(size: tuple[float, float] = (5.0, 4.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, output: Path) -> None:
    figure.tight_layout()
    figure.savefig(output, format="png", dpi=150)
    click.echo(f"wrote {output}")


def _created_by(node, name: str):
    """``node`` if it is a CalcJob of entry point ``name``, else the one that created it; None when neither."""
    from aiida import orm

    calc = node if isinstance(node, orm.CalcJobNode) else node.creator
    return calc if calc is not None and entry_point(calc) == name else None


@click.group("plot")
def plot() -> None:
    """Plots of stored training runs, models and band structures."""


@plot.command("curve")
@PK
@_OUTPUT
@PROFILE
def curve_command(pk: int, output: Path, profile: str | None) -> None:
    """Train and validation MAE against epoch (log scale) of a deeph.train PK or of the model PK it made."""
    from aiida import orm

    from aiida_deeph.data.model import ModelData

    calc = _created_by(load_node(pk, profile, orm.CalcJobNode, ModelData), "deeph.train")
    if calc is None or "training_curve" not in calc.outputs:
        raise click.ClickException(f"node {pk} is neither a deeph.train with a training curve nor a model it made")
    curve = calc.outputs.training_curve
    epochs = curve.get_x()[1]
    figure, axes = _axes()
    for name, values, _ in curve.get_y():
        if name in CURVES:
            axes.plot(epochs, values, marker="o", label=CURVES[name])
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("MAE of H (meV)")
    axes.set_title(f"deeph.train<{calc.pk}>")
    axes.legend()
    _save(figure, output)


def parity_points(model, dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, DFT) H entries in eV of the structures in ``split`` of ``dataset``, where DFT gives a target."""
    import torch

    from aiida_deeph.ml.dataset import GraphDataset

    network = model.load()
    predicted, reference = [], []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        graphs = GraphDataset(dataset.export(tmp))
        for index in graphs.split(split):
            graph = graphs[index]
            predicted.append(network(graph)[graph.mask])
            reference.append(graph.target[graph.mask])
    if not reference:
        return np.empty(0), np.empty(0)
    return np.real(torch.cat(predicted).double().numpy()), np.real(torch.cat(reference).double().numpy())


@plot.command("parity")
@PK
@click.option("--split", type=click.Choice(("train", "val", "test")), default="test", show_default=True)
@_OUTPUT
@PROFILE
def parity_command(pk: int, split: str, output: Path, profile: str | None) -> None:
    """Predicted against DFT H entries of model PK on a split of the dataset it was trained on."""
    from aiida_deeph.data.model import ModelData
    from aiida_deeph.tools.queries import training_dataset

    model = load_node(pk, profile, ModelData)
    dataset = training_dataset(model)
    if dataset is None:
        raise click.ClickException(f"model {pk} was not made by a deeph.train: no dataset to compare with")
    predicted, reference = parity_points(model, dataset, split)
    if not len(reference):
        raise click.ClickException(f"the {split} split of {describe_data(dataset)} is empty")
    figure, axes = _axes((4.5, 4.5))
    limits = (min(reference.min(), predicted.min()), max(reference.max(), predicted.max()))
    axes.plot(limits, limits, color="grey", linewidth=0.8)
    axes.scatter(reference, predicted, s=4, alpha=0.5)
    axes.set_xlabel("DFT H entry (eV)")
    axes.set_ylabel("predicted H entry (eV)")
    mae = 1000 * np.abs(predicted - reference).mean()
    axes.set_title(f"model {pk}, {split} split: MAE {mae:.3g} meV")
    _save(figure, output)


@plot.command("bands")
@PK
@click.option("--window", nargs=2, type=float, default=(-6.0, 6.0), show_default=True,
              help="Energy range around the Fermi level (eV).")
@_OUTPUT
@PROFILE
def bands_command(pk: int, window: tuple[float, float], output: Path, profile: str | None) -> None:
    """Band structure of BandsData PK or of the bands a deeph.bands PK computed, E_F at 0 when it is known."""
    from aiida import orm

    node = load_node(pk, profile, orm.BandsData, orm.CalcJobNode)
    calc = _created_by(node, "deeph.bands")
    if not isinstance(node, orm.BandsData):
        if calc is None:
            raise click.ClickException(f"node {pk} is a {entry_point(node)}, not a deeph.bands")
        node = calc.outputs.bands
    fermi = calc.outputs.output_parameters["fermi_energy"] if calc is not None else 0.0
    node.export(output, fileformat="mpl_png", overwrite=True, y_origin=fermi, y_min_lim=window[0],
                y_max_lim=window[1], title=f"BandsData<{node.pk}>")
    click.echo(f"wrote {output}")

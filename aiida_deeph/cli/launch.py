"""``launch`` commands: the WorkChains from structure files and protocols; ``watch``: follow a running one."""

from __future__ import annotations

from pathlib import Path

import click

from .provenance import PK, PROFILE, load_node, use_profile

PROTOCOL = click.option("--protocol", type=click.Choice(["test", "fast", "moderate", "precise"]), default="fast",
                        show_default=True, help="Protocol of every step (see aiida_deeph/workflows/protocols).")
DFT_CODE = click.option("--dft-code", default="cp2k@localhost-deeph", show_default=True, help="DFT code label.")
PYTHON_CODE = click.option("--python-code", default="deeph-python@localhost-deeph", show_default=True,
                           help="Python with aiida-deeph installed, on the computer that trains and predicts.")
ENGINE = click.option("--engine", type=click.Choice(["cp2k", "openmx", "abacus"]), default="cp2k", show_default=True)
PSEUDO_FAMILY = click.option("--pseudo-family", default=None, help="OpenMX/ABACUS: aiida-pseudo family label.")
ORBITAL_FAMILY = click.option("--orbital-family", default=None, help="OpenMX/ABACUS: deeph.orbital.family label.")
FOREGROUND = click.option("--foreground", is_flag=True, help="Run in this process even if the daemon runs.")
STRUCTURE_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def options(*decorators):
    """One decorator applying ``decorators`` in the order listed (top first, as when stacked)."""
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


DFT_OPTIONS = options(PROTOCOL, DFT_CODE, PYTHON_CODE, ENGINE, PSEUDO_FAMILY, ORBITAL_FAMILY, FOREGROUND, PROFILE)


def read_structure(path: Path | None):
    """A StructureData from any file ase reads (POSCAR, cif, xyz, ...); None for no path."""
    if path is None:
        return None
    from aiida import orm
    from ase.io import read

    return orm.StructureData(ase=read(path))


def engine_kwargs(pseudo_family: str | None, orbital_family: str | None) -> dict:
    return {key: value for key, value in (("pseudo_family", pseudo_family), ("orbital_family", orbital_family))
            if value}


def start(builder, foreground: bool) -> None:
    from aiida_deeph.tools.launch import check_finished, run_or_submit

    node = run_or_submit(builder, foreground, echo=click.echo)
    check_finished(node)
    click.echo(f"{node.process_label}<{node.pk}> finished; outputs: {', '.join(sorted(node.outputs))}")


@click.group("launch")
def launch() -> None:
    """Run a WorkChain (submitted to the daemon and followed when it runs, else here)."""


@launch.command("deeph")
@click.argument("structure", type=STRUCTURE_FILE)
@click.argument("target", type=STRUCTURE_FILE)
@click.option("--validation", type=STRUCTURE_FILE, help="A small cell to run DFT on and compare with the model.")
@DFT_OPTIONS
def launch_deeph(structure, target, validation, protocol, dft_code, python_code, engine, pseudo_family,
                 orbital_family, foreground, profile) -> None:
    """End to end: dataset from STRUCTURE → model → prediction and bands of TARGET."""
    from aiida import orm

    from aiida_deeph.tools.launch import deeph_summary, run_or_submit
    from aiida_deeph.workflows.deeph import DeepHWorkChain

    use_profile(profile)
    builder = DeepHWorkChain.get_builder_from_protocol(
        orm.load_code(dft_code), orm.load_code(python_code), read_structure(structure), read_structure(target),
        protocol, validation_structure=read_structure(validation), engine=engine,
        **engine_kwargs(pseudo_family, orbital_family))
    node = run_or_submit(builder, foreground, echo=click.echo)
    if not node.is_finished_ok:
        raise click.ClickException(f"DeepHWorkChain<{node.pk}> failed: {node.exit_status} {node.exit_message}")
    click.echo("\n".join(deeph_summary(node, Path(f"deeph-{node.pk}"))))


@launch.command("dataset")
@click.argument("structure", type=STRUCTURE_FILE)
@click.option("--samples", type=int, help="Number of perturbed samples (default: the protocol's).")
@click.option("--supercell", type=int, nargs=3, help="Supercell of the samples, e.g. 2 2 1.")
@DFT_OPTIONS
def launch_dataset(structure, samples, supercell, protocol, dft_code, python_code, engine, pseudo_family,
                   orbital_family, foreground, profile) -> None:
    """DFT on perturbed copies of STRUCTURE → a deeph.dataset."""
    from aiida import orm

    from aiida_deeph.workflows.dataset import DatasetWorkChain

    use_profile(profile)
    perturbation = {key: value for key, value in (("samples", samples), ("supercell", list(supercell or ())))
                    if value}
    builder = DatasetWorkChain.get_builder_from_protocol(
        orm.load_code(dft_code), orm.load_code(python_code), read_structure(structure), protocol,
        {"perturbation": perturbation}, engine=engine, **engine_kwargs(pseudo_family, orbital_family))
    start(builder, foreground)


@launch.command("training")
@click.argument("dataset", type=int)
@options(PROTOCOL, PYTHON_CODE, FOREGROUND, PROFILE)
def launch_training(dataset, protocol, python_code, foreground, profile) -> None:
    """Train a DeepH-2 model on the deeph.dataset of pk DATASET."""
    from aiida import orm

    from aiida_deeph.data.dataset import DatasetData
    from aiida_deeph.workflows.training import TrainingWorkChain

    node = load_node(dataset, profile, DatasetData)
    start(TrainingWorkChain.get_builder_from_protocol(orm.load_code(python_code), node, protocol), foreground)


@launch.command("inference")
@click.argument("model", type=int)
@click.argument("structure", type=STRUCTURE_FILE)
@click.option("--basis", required=True, help="The training data's Gaussian basis, e.g. SZV-MOLOPT-SR-GTH.")
@click.option("--validation", type=STRUCTURE_FILE, help="A small cell to run DFT on and compare with the model.")
@options(PROTOCOL, DFT_CODE, PYTHON_CODE, FOREGROUND, PROFILE)
def launch_inference(model, structure, basis, validation, protocol, dft_code, python_code, foreground,
                     profile) -> None:
    """Predict H(R) and the bands of STRUCTURE with the deeph.model of pk MODEL."""
    from aiida import orm

    from aiida_deeph.data.model import ModelData
    from aiida_deeph.workflows.dataset import DatasetWorkChain
    from aiida_deeph.workflows.inference import InferenceWorkChain

    node = load_node(model, profile, ModelData)
    builder = InferenceWorkChain.get_builder_from_protocol(
        orm.load_code(python_code), node, read_structure(structure), basis, protocol,
        validation_structure=read_structure(validation), dft_code=orm.load_code(dft_code) if validation else None,
        dft_protocol=DatasetWorkChain.get_protocol_inputs(protocol)["dft_protocol"])  # the DFT a dataset would use
    start(builder, foreground)


@click.command("watch")
@PK
@click.option("--interval", type=float, default=10.0, show_default=True, help="Seconds between checks.")
@PROFILE
def watch(pk: int, interval: float, profile: str | None) -> None:
    """Follow process PK: its reports and the training's epoch lines, until it terminates."""
    from aiida import orm

    from aiida_deeph.tools.watch import follow

    use_profile(profile)
    node = follow(orm.load_node(pk), interval, echo=click.echo)
    click.echo(f"{node.process_label}<{node.pk}>: {node.process_state.value}, exit status {node.exit_status}")

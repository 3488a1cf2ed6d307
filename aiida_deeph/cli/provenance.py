"""``aiida-deeph provenance PK``: a prediction, model or dataset traced back to its DFT inputs as an indented tree.

Also the pieces the other database commands share: the ``--profile`` option, loading a node by PK, and one-line
descriptions of the nodes of the DeepH chain.
"""

from __future__ import annotations

from typing import Any

import click

PROFILE = click.option("--profile", default=None, help="AiiDA profile (default: the default profile).")
PK = click.argument("pk", type=int)
INDENT = "  "


def use_profile(profile: str | None) -> None:
    """Load ``profile`` (only when a command runs: importing the CLI touches no database)."""
    from aiida import load_profile
    from aiida.common.exceptions import ProfileConfigurationError

    try:
        load_profile(profile, allow_switch=True)
    except ProfileConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def load_node(pk: int, profile: str | None, *types: type):
    """Node ``pk`` of ``profile``, of one of ``types``."""
    from aiida import orm
    from aiida.common.exceptions import NotExistent

    use_profile(profile)
    try:
        node = orm.load_node(pk)
    except NotExistent:
        raise click.ClickException(f"no node with PK {pk}") from None
    if types and not isinstance(node, types):
        expected = " or ".join(t.__name__ for t in types)
        raise click.ClickException(f"node {pk} is a {type(node).__name__}, not a {expected}")
    return node


def entry_point(calc) -> str:
    """``deeph.train`` for a CalcJob of that entry point; the class name for other processes."""
    return (calc.process_type or "").partition(":")[2] or type(calc).__name__


def format_mev(value: float | None) -> str:
    """An error in meV for tables and lines; ``-`` when there is none (no such split)."""
    return "-" if value is None or value != value else f"{value:.3g}"


def describe_data(node) -> str:
    """``Type<pk>: what it holds`` in a few words."""
    from aiida import orm

    from aiida_deeph.data.dataset import DatasetData
    from aiida_deeph.data.hamiltonian import HamiltonianData
    from aiida_deeph.data.model import ModelData

    attributes = node.base.attributes
    if isinstance(node, HamiltonianData):
        matrices = [name for name, key in (("H", "has_hamiltonian"), ("S", "has_overlap")) if attributes.get(key)]
        what = f"{node.natoms} atoms ({', '.join(attributes.get('elements'))}), {' and '.join(matrices)}"
    elif isinstance(node, DatasetData):
        split = " / ".join(f"{name} {count}" for name, count in attributes.get("split").items())
        what = f"{node.num_structures} structures ({', '.join(node.elements)}), split {split}"
    elif isinstance(node, ModelData):
        what = f"{node.architecture} on {', '.join(attributes.get('elements'))}"
    elif isinstance(node, orm.StructureData):
        what = node.get_formula()
    elif isinstance(node, orm.RemoteData):
        what = f"{node.computer.label}:{node.get_remote_path()}"
    else:
        return f"{type(node).__name__}<{node.pk}>"
    return f"{type(node).__name__}<{node.pk}>: {what}"


def describe_dft(summary: dict[str, Any]) -> str:
    """One line of :func:`aiida_deeph.tools.queries.dft_summary`: code, version, basis, pseudopotential, cutoff."""
    def names(value: str | dict) -> str:
        return value if isinstance(value, str) else ", ".join(f"{el} {name}" for el, name in value.items())

    cutoff = f", cutoff {summary['cutoff_Ry']} Ry" if summary["cutoff_Ry"] is not None else ""
    return (f"deeph.{summary['engine']}<{summary['pk']}> [exit {summary['exit_status']}] {summary['code']} "
            f"[{summary['version'] or 'version unknown'}]: {summary['structure']}, basis {names(summary['basis'])}, "
            f"pseudopotential {names(summary['pseudopotential'])}{cutoff}")


def describe_calc(calc) -> str:
    """``deeph.train<pk> [exit 0]`` and, for DFT and training, what was run."""
    from aiida_deeph.tools.queries import DFT_ENGINES, dft_summary

    name = entry_point(calc)
    if name in {f"deeph.{engine}" for engine in DFT_ENGINES}:
        return describe_dft(dft_summary(calc))
    line = f"{name}<{calc.pk}> [exit {calc.exit_status}]"
    if name == "deeph.train" and "output_parameters" in calc.outputs:
        result = calc.outputs.output_parameters
        return f"{line} {result.get('epochs')} epochs, val MAE {format_mev(result.get('val_mae_meV'))} meV"
    return line


def _upstream(calc) -> list[tuple[str, Any]]:
    """(link label, node) of the inputs the chain came through: data with content, not parameters or codes."""
    from aiida import orm
    from aiida.common.links import LinkType

    from aiida_deeph.data.folder_data import ChecksummedFolderData

    followed = (ChecksummedFolderData, orm.StructureData, orm.RemoteData)
    links = calc.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()
    return sorted((link.link_label.replace("__", "."), link.node) for link in links
                  if isinstance(link.node, followed))


def provenance_lines(node, label: str = "", depth: int = 0, seen: set[int] | None = None) -> list[str]:
    """The tree above ``node``: each data node, ``← `` the calculation that created it, then that one's inputs."""
    from aiida import orm

    seen = set() if seen is None else seen
    indent = INDENT * depth
    if isinstance(node, orm.CalculationNode):
        lines = [f"{indent}← {describe_calc(node)}"]
        for child_label, child in _upstream(node):
            lines += provenance_lines(child, child_label, depth + 1, seen)
        return lines
    line = f"{indent}{label + ': ' if label else ''}{describe_data(node)}"
    if node.pk in seen:
        return [f"{line} (see above)"]
    seen.add(node.pk)
    creator = node.creator
    return [line] + (provenance_lines(creator, depth=depth + 1, seen=seen) if creator is not None else [])


@click.command("provenance")
@PK
@PROFILE
def provenance(pk: int, profile: str | None) -> None:
    """Trace node PK (a prediction, model, dataset or any calculation) back to the DFT runs and structures."""
    click.echo("\n".join(provenance_lines(load_node(pk, profile))))

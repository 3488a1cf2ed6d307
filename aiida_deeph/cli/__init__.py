"""The ``aiida-deeph`` command line."""

from __future__ import annotations

import click

from .convert import convert
from .launch import launch, watch
from .model import model
from .plot import plot
from .provenance import provenance
from .setup import setup
from .structure import structure


@click.group()
def cli() -> None:
    """aiida-deeph: DeepH Hamiltonians with AiiDA provenance."""


cli.add_command(convert)
cli.add_command(launch)
cli.add_command(model)
cli.add_command(plot)
cli.add_command(provenance)
cli.add_command(setup)
cli.add_command(structure)
cli.add_command(watch)

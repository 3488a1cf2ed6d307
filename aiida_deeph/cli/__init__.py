"""The ``aiida-deeph`` command line."""

from __future__ import annotations

import click

from .convert import convert
from .setup import setup
from .structure import structure


@click.group()
def cli() -> None:
    """aiida-deeph: DeepH Hamiltonians with AiiDA provenance."""


cli.add_command(convert)
cli.add_command(setup)
cli.add_command(structure)

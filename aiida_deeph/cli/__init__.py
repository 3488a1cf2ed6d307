"""The ``aiida-deeph`` command line."""

from __future__ import annotations

import click

from .setup import setup


@click.group()
def cli() -> None:
    """aiida-deeph: DeepH Hamiltonians with AiiDA provenance."""


cli.add_command(setup)

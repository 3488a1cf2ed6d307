"""``convert`` commands: DFT calculation folders to the DeepH format, and the DeepH format to the legacy one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from aiida_deeph.io import DeepHStructure, write_legacy
from aiida_deeph.io.abacus import abacus_to_deeph
from aiida_deeph.io.deeph_format import DeepHFormatError
from aiida_deeph.io.openmx import openmx_to_deeph

_SOURCE = click.argument("source", type=click.Path(exists=True, path_type=Path))
_DESTINATION = click.argument("destination", type=click.Path(file_okay=False, path_type=Path))


def _conversion(command: Callable) -> Callable:
    """Refuse a non-empty destination, and report format errors of the source as clean CLI errors."""

    @functools.wraps(command)
    def wrapper(source: Path, destination: Path, **kwargs):
        if destination.is_dir() and any(destination.iterdir()):
            raise click.ClickException(f"{destination} is not empty; give a new or empty folder")
        try:
            return command(source, destination, **kwargs)
        except DeepHFormatError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _report(structure: DeepHStructure, destination: Path) -> None:
    matrices = [name for name, matrix in (("H", structure.hamiltonian), ("S", structure.overlap)) if matrix is not None]
    pairs = len(structure.overlap if structure.overlap is not None else structure.hamiltonian)
    click.echo(
        f"wrote {destination}: {structure.natoms} atoms, {structure.norbitals} orbitals, {pairs} atom pairs "
        f"({' and '.join(matrices)}), spinful={structure.spinful}, E_F = {structure.fermi_energy_eV:.6f} eV"
    )


@click.group("convert")
def convert() -> None:
    """Convert DFT outputs to the DeepH format (eV, Å, standard orbital order)."""


@convert.command("openmx")
@_SOURCE
@_DESTINATION
@_conversion
def openmx_command(source: Path, destination: Path) -> None:
    """OpenMX: SOURCE is the calculation folder (with one *.scfout, HS.fileout on) or the .scfout itself."""
    structure = openmx_to_deeph(source)
    _report(structure, structure.write(destination))


@convert.command("abacus")
@_SOURCE
@_DESTINATION
@click.option("--suffix", default=None, help="ABACUS suffix of OUT.<suffix>/ [default: from INPUT, else ABACUS].")
@_conversion
def abacus_command(source: Path, destination: Path, suffix: str | None) -> None:
    """ABACUS: SOURCE is the calculation folder (INPUT, STRU, OUT.<suffix>/ written with out_mat_hs2 1)."""
    if not source.is_dir():
        raise click.ClickException(f"{source} is not a folder; give the ABACUS calculation folder")
    structure = abacus_to_deeph(source, suffix)
    _report(structure, structure.write(destination))


@convert.command("legacy")
@_SOURCE
@_DESTINATION
@_conversion
def legacy_command(source: Path, destination: Path) -> None:
    """DeepH format (SOURCE: POSCAR, info.json, *.h5) to the legacy format of DeepH-pack 0.2 / DeepH-E3."""
    structure = DeepHStructure.read(source)
    write_legacy(structure, destination)
    click.echo(f"wrote the legacy DeepH folder {destination} ({structure.natoms} atoms)")

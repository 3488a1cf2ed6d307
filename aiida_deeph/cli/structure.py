"""``structure`` commands: build twisted bilayers, point defects and perturbed training structures as ase files."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.io import read, write
from ase.io.formats import filetype, ioformats

from aiida_deeph.structures import (
    MATERIALS,
    group_by_element,
    interlayer_shift_grid,
    interstitial,
    perturbed_supercells,
    random_alloy,
    substitution,
    twisted_bilayer,
    vacancy,
)
from aiida_deeph.structures.perturb import DISTRIBUTIONS
from aiida_deeph.structures.twisted import STACKINGS

_INPUT = click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
_SUPERCELL = click.option(
    "--supercell", nargs=3, type=int, default=(1, 1, 1), show_default=True, help="Diagonal supercell of the input."
)
_SEED = click.option("--seed", type=int, default=None, help="Random seed, for reproducible output.")
_OUTPUT = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output file."
)
_FORMAT = click.option("--format", "fmt", default=None, help="ase format [default: guessed from the output name].")


def _usage_errors(command: Callable) -> Callable:
    """Report the builders' ValueErrors as clean CLI errors instead of tracebacks."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def _write(images: Sequence[Atoms], output: Path, fmt: str | None) -> list[Path]:
    """Write ``images`` to ``output``, or to ``<stem>_000<suffix>``, ... if the format holds one structure only."""
    fmt = fmt or filetype(str(output), read=False)
    if fmt not in ioformats or not ioformats[fmt].can_write:
        raise ValueError(f"ase cannot write format {fmt!r}")
    if len(images) == 1 or not ioformats[fmt].single:
        write(output, list(images), format=fmt)
        return [output]
    paths = [output.with_name(f"{output.stem}_{i:03d}{output.suffix}") for i in range(len(images))]
    for path, atoms in zip(paths, images):
        write(path, atoms, format=fmt)
    return paths


def _report(images: Sequence[Atoms], paths: list[Path]) -> None:
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} … {paths[-1]}"
    click.echo(f"wrote {len(images)} structure(s) of {len(images[0])} atoms to {where}")


def _read_supercell(source: Path, supercell: tuple[int, int, int]) -> Atoms:
    return group_by_element(make_supercell(read(source), np.diag(supercell), order="atom-major"))


@click.group("structure")
def structure() -> None:
    """Build structures for DeepH training sets."""


@structure.command("twisted-bilayer")
@click.option(
    "--material", type=click.Choice(MATERIALS, case_sensitive=False), help="Built-in layer [default: graphene]."
)
@click.option(
    "--layer", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Hexagonal layer file instead."
)
@click.option("--angle", type=float, help="Target twist angle (°); the nearest commensurate (m, n) is used.")
@click.option("--mn", nargs=2, type=int, default=None, help="Commensurate indices M N.")
@click.option("--distance", type=float, help="Gap (Å) between the facing atomic planes [default: per material].")
@click.option("--stacking", type=click.Choice(STACKINGS), default="AA", show_default=True)
@click.option("--vacuum", type=float, default=15.0, show_default=True, help="Total vacuum (Å) along z.")
@click.option(
    "--max-cells", type=int, default=10_000, show_default=True, help="Largest moiré cell for --angle, in unit cells."
)
@_OUTPUT
@_FORMAT
@_usage_errors
def twisted_bilayer_command(material, layer, angle, mn, distance, stacking, vacuum, max_cells, output, fmt) -> None:
    """Build a commensurate twisted bilayer.

    Example: --material graphene --angle 1.05 --distance 3.35 --vacuum 15 -o tbg.vasp
    """
    if material and layer:
        raise ValueError("give --material or --layer, not both")
    m, n = mn if mn else (None, None)
    atoms = twisted_bilayer(
        read(layer) if layer else material or "graphene",
        m,
        n,
        angle=angle,
        distance=distance,
        stacking=stacking,
        vacuum=vacuum,
        max_cells=max_cells,
    )
    _report([atoms], _write([atoms], output, fmt))
    click.echo(f"(m, n) = ({atoms.info['m']}, {atoms.info['n']}), twist angle {atoms.info['twist_angle']:.4f}°")


@structure.command("defect")
@_INPUT
@_SUPERCELL
@click.option("--vacancy", "vacancies", type=int, multiple=True, help="Remove the atom at this site (repeatable).")
@click.option("--substitute", nargs=2, type=(int, str), default=None, help="SITE ELEMENT: replace one atom.")
@click.option("--interstitial", "inserted", help="ELEMENT to insert at --position or the largest empty site.")
@click.option("--position", nargs=3, type=float, default=None, help="Fractional interstitial position.")
@click.option("--alloy", nargs=3, type=(str, str, float), default=None, help="HOST DOPANT CONCENTRATION: random alloy.")
@_SEED
@_OUTPUT
@_FORMAT
@_usage_errors
def defect_command(source, supercell, vacancies, substitute, inserted, position, alloy, seed, output, fmt) -> None:
    """Add one kind of point defect to SOURCE.

    Site indices refer to the supercell, grouped by element.
    """
    chosen = [bool(vacancies), substitute is not None, inserted is not None, alloy is not None]
    if sum(chosen) != 1:
        raise ValueError("give exactly one of --vacancy, --substitute, --interstitial, --alloy")
    if position is not None and inserted is None:
        raise ValueError("--position needs --interstitial")
    atoms = _read_supercell(source, supercell)
    if vacancies:
        result = vacancy(atoms, list(vacancies))
    elif substitute is not None:
        result = substitution(atoms, *substitute)
    elif inserted is not None:
        result = interstitial(atoms, inserted, position)
    else:
        result = random_alloy(atoms, *alloy, seed=seed)
    _report([result], _write([result], output, fmt))


@structure.command("perturb")
@_INPUT
@_SUPERCELL
@click.option("-n", "--n-samples", type=int, default=10, show_default=True)
@click.option(
    "--displacement", type=float, default=0.1, show_default=True, help="Uniform half-width or Gaussian σ (Å)."
)
@click.option("--distribution", type=click.Choice(DISTRIBUTIONS), default="uniform", show_default=True)
@click.option("--strain", nargs=2, type=float, default=None, help="MIN MAX of the random symmetric strain components.")
@click.option("--min-distance", type=float, help="Overlap limit (Å) [default: half the shortest distance].")
@_SEED
@_OUTPUT
@_FORMAT
@_usage_errors
def perturb_command(
    source, supercell, n_samples, displacement, distribution, strain, min_distance, seed, output, fmt
) -> None:
    """Randomly displaced and strained supercells of SOURCE.

    Formats holding one structure get numbered files (out_000.vasp, out_001.vasp, ...).
    """
    samples = perturbed_supercells(
        read(source),
        supercell,
        n_samples,
        displacement=displacement,
        distribution=distribution,
        strain=strain,
        seed=seed,
        min_distance=min_distance,
    )
    _report(samples, _write(samples, output, fmt))


@structure.command("interlayer-shift")
@_INPUT
@click.option("--grid", nargs=2, type=int, required=True, help="N1 N2 in-plane fractional shifts of the top layer.")
@click.option("--z-threshold", type=float, help="Top layer: atoms above this z (Å) [default: widest z gap].")
@click.option("--displacement", type=float, default=0.0, show_default=True, help="Optional random displacement (Å).")
@click.option("--distribution", type=click.Choice(DISTRIBUTIONS), default="uniform", show_default=True)
@_SEED
@_OUTPUT
@_FORMAT
@_usage_errors
def interlayer_shift_command(source, grid, z_threshold, displacement, distribution, seed, output, fmt) -> None:
    """Shift the top layer of bilayer SOURCE over an N1×N2 grid of the in-plane cell."""
    shifted = interlayer_shift_grid(
        read(source), *grid, z_threshold=z_threshold, displacement=displacement, distribution=distribution, seed=seed
    )
    _report(shifted, _write(shifted, output, fmt))

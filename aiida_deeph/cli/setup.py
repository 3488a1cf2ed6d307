"""``aiida-deeph setup``: the localhost computer and the CP2K code of the embedded engine."""

from __future__ import annotations

import click


@click.command("setup")
@click.option("--profile", default=None, help="AiiDA profile (default: the default profile).")
@click.option("--mpiprocs", default=2, show_default=True, help="MPI ranks per CP2K job.")
def setup(profile: str | None, mpiprocs: int) -> None:
    """Create (once) the computer `localhost-deeph` and the code `cp2k@localhost-deeph`."""
    from aiida import load_profile

    from aiida_deeph.tools.local_setup import setup_cp2k, setup_localhost

    load_profile(profile, allow_switch=True)
    computer = setup_localhost(mpiprocs=mpiprocs)
    code = setup_cp2k(computer)
    click.echo(f"[setup] computer {computer.label}, code {code.full_label} ({code.filepath_executable})")

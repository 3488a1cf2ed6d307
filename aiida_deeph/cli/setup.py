"""``aiida-deeph setup``: the localhost computer and the CP2K code of the embedded engine."""

from __future__ import annotations

import click


@click.command("setup")
@click.option("--profile", default=None, help="AiiDA profile (default: the default profile).")
@click.option("--mpiprocs", default=2, show_default=True, help="MPI ranks per CP2K job.")
def setup(profile: str | None, mpiprocs: int) -> None:
    """Create (once) the computer `localhost-deeph` and the codes `cp2k@` and `deeph-python@localhost-deeph`, and
    enable caching of DFT jobs in the profile (a rerun of a dataset reuses the DFT already done)."""
    from aiida import load_profile

    from aiida_deeph.tools.local_setup import enable_caching, setup_cp2k, setup_localhost, setup_python

    loaded = load_profile(profile, allow_switch=True)
    enable_caching(loaded.name)
    computer = setup_localhost(mpiprocs=mpiprocs)
    for code in (setup_cp2k(computer), setup_python(computer)):
        click.echo(f"[setup] computer {computer.label}, code {code.full_label} ({code.filepath_executable})")

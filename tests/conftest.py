"""Shared pytest fixtures: real DFT outputs from ../shared/fixtures, AiiDA profile with a ZeroMQ broker, codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dft_fixtures() -> Path:
    """Folder of recorded real DFT outputs (env ``AIIDA_DEEPH_FIXTURES``, default ``../shared/fixtures``)."""
    root = Path(os.environ.get("AIIDA_DEEPH_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures")).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"DFT fixtures not found at {root}; set AIIDA_DEEPH_FIXTURES")
    return root


pytest_plugins = ["aiida.tools.pytest_fixtures"]


@pytest.fixture(scope="session")
def aiida_profile(aiida_config, aiida_profile_factory):
    """SQLite storage with the built-in ZeroMQ broker, so ``submit`` and the daemon work without services."""
    with aiida_profile_factory(aiida_config, storage_backend="core.sqlite_dos", broker_backend="core.zeromq") as profile:
        yield profile


@pytest.fixture(scope="session")
def cp2k_code(aiida_profile, tmp_path_factory):
    """``cp2k@localhost-deeph``: the real CP2K binary under MPI (2 ranks)."""
    from aiida_deeph.tools.local_setup import setup_cp2k, setup_localhost

    computer = setup_localhost(workdir=tmp_path_factory.mktemp("aiida_work"))
    return setup_cp2k(computer)

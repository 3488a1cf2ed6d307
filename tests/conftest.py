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


SERVICES = os.environ.get("AIIDA_DEEPH_SERVICES") == "1"  # set by `scripts/test.sh --services`


def pytest_collection_modifyitems(config, items):
    """The default run has no services; the services stage runs only the tests marked ``services``."""
    selected = [item for item in items if (item.get_closest_marker("services") is not None) == SERVICES]
    if len(selected) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in selected])
        items[:] = selected


def _psql_storage_config(name: str, repository: Path) -> dict:
    """A fresh PostgreSQL database (server started by scripts/services.sh, user postgres/postgres)."""
    import subprocess

    env = {**os.environ, "PGPASSWORD": "postgres"}
    subprocess.run(["psql", "-h", "localhost", "-U", "postgres", "-q", "-c",
                    f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"],
                   check=True, env=env)
    return {"database_engine": "postgresql_psycopg", "database_hostname": "localhost", "database_port": 5432,
            "database_username": "postgres", "database_password": "postgres", "database_name": name,
            "repository_uri": f"file://{repository}"}


@pytest.fixture(scope="session")
def aiida_profile(aiida_config, aiida_profile_factory, tmp_path_factory):
    """SQLite + the built-in ZeroMQ broker by default (``submit`` and the daemon work without services);
    PostgreSQL + RabbitMQ in the services stage."""
    if SERVICES:
        import secrets

        name = f"deeph_test_{secrets.token_hex(6)}"
        storage = _psql_storage_config(name, tmp_path_factory.mktemp("repository"))
        factory = aiida_profile_factory(aiida_config, storage_backend="core.psql_dos", storage_config=storage,
                                        broker_backend="core.rabbitmq", name=name)
    else:
        factory = aiida_profile_factory(aiida_config, storage_backend="core.sqlite_dos", broker_backend="core.zeromq")
    with factory as profile:
        # circus answers slowly on a loaded 2-core machine; the 2 s default makes daemon start/stop flaky there
        aiida_config.set_option("daemon.timeout", 60, scope=profile.name)
        aiida_config.store()
        yield profile


@pytest.fixture(scope="session")
def localhost_deeph(aiida_profile, tmp_path_factory):
    from aiida_deeph.tools.local_setup import setup_localhost

    return setup_localhost(workdir=tmp_path_factory.mktemp("aiida_work"))


@pytest.fixture(scope="session")
def cp2k_code(localhost_deeph):
    """``cp2k@localhost-deeph``: the real CP2K binary under MPI (2 ranks)."""
    from aiida_deeph.tools.local_setup import setup_cp2k

    return setup_cp2k(localhost_deeph)


@pytest.fixture(scope="session")
def python_code(localhost_deeph):
    """``deeph-python@localhost-deeph``: this interpreter, running ``python -m aiida_deeph.ml`` jobs."""
    from aiida_deeph.tools.local_setup import setup_python

    return setup_python(localhost_deeph)


@pytest.fixture(scope="session")
def cp2k_graphene(cp2k_code, tmp_path_factory):
    """Factory: ``cp2k_graphene(n)`` → DeepH folders of n perturbed 2×2 graphene cells from real ``deeph.cp2k`` runs.

    SZV basis (4 orbitals per C), fast protocol, 4×4×1 k-points: ~10 s per structure on 2 cores. Results are cached
    for the session, so tests asking for fewer structures reuse the first ones.
    """
    from aiida import orm
    from aiida.engine import run_get_node
    from ase.build import graphene

    from aiida_deeph.workflows.cp2k_base import Cp2kBaseWorkChain

    root = tmp_path_factory.mktemp("cp2k_graphene")
    folders: list[Path] = []

    def make(count: int) -> list[Path]:
        while len(folders) < count:
            seed = len(folders)
            atoms = graphene(a=2.46, vacuum=6.0).repeat((2, 2, 1))
            atoms.rattle(0.05, seed=seed)
            atoms.pbc = (True, True, False)
            builder = Cp2kBaseWorkChain.get_builder_from_protocol(cp2k_code, orm.StructureData(ase=atoms), "fast")
            kpoints = orm.KpointsData()
            kpoints.set_kpoints_mesh([4, 4, 1])
            builder.kpoints = kpoints
            del builder.kpoints_distance
            results, node = run_get_node(builder)
            assert node.is_finished_ok, f"CP2K run {seed} failed: {node.exit_status}"
            folders.append(results["hamiltonian"].export_deeph(root / f"structure_{seed:03d}"))
        return folders[:count]

    return make

"""Sphinx configuration of the aiida-deeph documentation.

Build: ``bash scripts/docs.sh`` (``sphinx-build -W --keep-going -b html docs docs/_build/html`` in ``.venv``).
Autodoc imports the real modules; AiiDA needs no profile for that. A temporary in-memory profile (``core.sqlite_temp``,
configuration under ``docs/_build/.aiida``) is loaded only so that the ``process-spec`` directive can show port
defaults that are built by callables; the user's own profiles are never touched.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

os.environ["AIIDA_PATH"] = str(DOCS / "_build" / ".aiida")
(DOCS / "_build" / ".aiida").mkdir(parents=True, exist_ok=True)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _load_temporary_profile() -> None:
    from aiida import load_profile
    from aiida.storage.sqlite_temp import SqliteTempBackend

    load_profile(SqliteTempBackend.create_profile("docs"), allow_switch=True)


_load_temporary_profile()

# autodoc reads attributes that aiida-core marks deprecated (``Node.objects``, ``Model``): not our warnings to show.
from aiida.common.warnings import AiidaDeprecationWarning  # noqa: E402

warnings.filterwarnings("ignore", category=AiidaDeprecationWarning)

project = "aiida-deeph"
author = "aiida-deeph developers"
copyright = "aiida-deeph developers"  # noqa: A001 - Sphinx's name
release = metadata.version("aiida-deeph")

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
    "process_spec",
    "docstring_fixes",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_inherit_docstrings = False  # an override without a docstring is not listed with aiida-core's text
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = "aiida-deeph"

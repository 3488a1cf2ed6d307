"""Sphinx configuration of the aiida-deeph documentation (build: sphinx-build docs docs/_build)."""

project = "aiida-deeph"
author = "aiida-deeph developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
html_theme = "furo"
exclude_patterns = ["_build"]

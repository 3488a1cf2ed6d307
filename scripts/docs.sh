#!/usr/bin/env bash
# Builds the documentation (Sphinx + MyST) into docs/_build/html with warnings as errors: exits non-zero on any
# warning. Usage: bash scripts/docs.sh [extra sphinx-build options]
# The environment comes from scripts/bootstrap.sh (.venv with the project); the `docs` extra is installed when missing.
# Every build starts from scratch, so warnings of unchanged pages and of changed docstrings are never skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO"
if ! "$PY" -c 'import sphinx, myst_parser, furo, sphinx_click' 2>/dev/null; then
  echo "[docs] installing the docs extra"
  "$PY" -m pip install -q -e "$REPO[dev,docs]"
fi
rm -rf docs/_build/html
start=$(date +%s)
"$REPO/.venv/bin/sphinx-build" -W --keep-going -b html "$@" docs docs/_build/html
echo "[docs] built docs/_build/html/index.html in $(( $(date +%s) - start )) s, no warnings"

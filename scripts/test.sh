#!/usr/bin/env bash
# The test suite (real CP2K runs included). Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO"
python -m pytest -q -p no:cacheprovider --durations=15 "$@"

#!/usr/bin/env bash
# The main job on the embedded default, end to end: CP2K DFT on perturbed graphene defect cells → DeepH-2 trained
# on the CPU → prediction and bands of a larger defect supercell, validated against direct CP2K.
# Usage: bash scripts/demo.sh [--protocol test|fast|moderate|precise] [other options of workflows/graphene_defect.py]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO"
verdi -p "$PROFILE" daemon status >/dev/null 2>&1 || verdi -p "$PROFILE" daemon start 1 >/dev/null
verdi -p "$PROFILE" run workflows/graphene_defect.py "$@"

#!/usr/bin/env bash
# The main job on the embedded default: a real CP2K DFT of a perturbed graphene supercell through AiiDA,
# written in the DeepH format. Usage: bash scripts/demo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO"
verdi -p "$PROFILE" run workflows/graphene_dft.py

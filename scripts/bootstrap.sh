#!/usr/bin/env bash
# Installs what aiida-deeph needs on a fresh Debian/Ubuntu machine; safe to run again (each step checks first).
# Sourced by scripts/demo.sh and scripts/test.sh. Leaves: .venv/, an AiiDA profile `deeph` under .aiida/
# (SQLite + built-in ZeroMQ broker, no services), the computer `localhost-deeph` and the code `cp2k@localhost-deeph`.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIIDA_PATH="${AIIDA_PATH:-$REPO/.aiida}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PROFILE="${AIIDA_DEEPH_PROFILE:-deeph}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { as_root apt-get update -q >/dev/null; APT_UPDATED=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# 1. CP2K, the embedded DFT engine (Debian's 2023.1 with cp2k-data and OpenMPI).
command -v cp2k.psmp >/dev/null || { echo "[bootstrap] installing Debian's cp2k"; apt_install cp2k; }

# 2. Python environment: torch first (the CPU build), then the project.
if [ ! -x "$REPO/.venv/bin/python" ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python >= 3.10 is required" >&2; exit 1; }
  python3 -m venv "$REPO/.venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$REPO/.venv"; }
fi
PY="$REPO/.venv/bin/python"
"$PY" -c 'import torch' 2>/dev/null || { echo "[bootstrap] installing torch 2.13.0"; "$PY" -m pip install -q torch==2.13.0; }
STAMP="$REPO/.venv/.aiida-deeph-installed"
if [ ! -f "$STAMP" ] || [ "$REPO/pyproject.toml" -nt "$STAMP" ]; then
  echo "[bootstrap] installing aiida-deeph and its dependencies"
  "$PY" -m pip install -q -e "$REPO[dev]"
  touch "$STAMP"
fi
export PATH="$REPO/.venv/bin:$PATH"

# 3. AiiDA profile (SQLite + ZeroMQ: daemon and submit work with no services), computer and codes.
mkdir -p "$AIIDA_PATH"
if ! verdi profile show "$PROFILE" >/dev/null 2>&1; then
  echo "[bootstrap] creating AiiDA profile $PROFILE in $AIIDA_PATH"
  verdi presto --use-zeromq --profile-name "$PROFILE" --email deeph@localhost >/dev/null
fi
verdi profile set-default "$PROFILE" >/dev/null
aiida-deeph setup --profile "$PROFILE"

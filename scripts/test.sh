#!/usr/bin/env bash
# The test suite (real CP2K runs included). Usage: bash scripts/test.sh [--services] [pytest args]
#   --services  also start PostgreSQL, RabbitMQ and SLURM (root) and run the tests marked `services`
#               (psql_dos + RabbitMQ profile, daemon, submission through sbatch)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO"
if [ "${1:-}" = "--services" ]; then
  shift
  bash scripts/services.sh start
  AIIDA_DEEPH_SERVICES=1 python -m pytest -q -p no:cacheprovider --durations=10 "$@"
else
  python -m pytest -q -p no:cacheprovider --durations=15 "$@"
fi

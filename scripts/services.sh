#!/usr/bin/env bash
# Start (or stop) the services of a production-like AiiDA setup on this machine, without systemd:
# PostgreSQL 15, RabbitMQ and a single-node test SLURM (munge, slurmctld, slurmd; restarted with an empty queue).
# Root required (Debian/Ubuntu).
#   bash scripts/services.sh start    # idempotent: installs what is missing, starts what is not running
#   bash scripts/services.sh stop
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
action="${1:-start}"

start() {
  local missing=()
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[services] installing ${missing[*]}"
    apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null
  fi

  # PostgreSQL (cluster made by the package's postinst); the tests log in as postgres/postgres.
  local cluster; cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
  # shellcheck disable=SC2086
  pg_ctlcluster $cluster status >/dev/null 2>&1 || pg_ctlcluster $cluster start
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -c "ALTER USER postgres PASSWORD 'postgres';"

  # RabbitMQ without the consumer timeout that kills long AiiDA tasks.
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    printf '%s\n' '[{rabbit, [{consumer_timeout, undefined}]}].' > /etc/rabbitmq/advanced.config
    rabbitmq-server -detached
    for _ in $(seq 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
    rabbitmqctl -q await_startup
  fi

  # munge + single-node SLURM; node name and memory are read off this machine.
  if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
  fi
  # SLURM is always (re)started with a config read off this machine, so a stale one never survives.
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
  local host mem cpus
  host=$(hostname -s); mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cpus=$(getconf _NPROCESSORS_ONLN)  # not nproc: it honours OMP_NUM_THREADS, which the test scripts set to 1
  install -d -m 0755 /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=deeph
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  /usr/sbin/slurmctld -c  # -c: a test cluster starts with an empty queue (no jobs left from an earlier run)
  /usr/sbin/slurmd
  for _ in $(seq 30); do sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)' && break; sleep 1; done
  echo "[services] PostgreSQL, RabbitMQ and SLURM ($(sinfo -h -o '%N %T')) are up"
}

stop() {
  [ -f /run/slurmd.pid ] && kill "$(cat /run/slurmd.pid)" 2>/dev/null || true
  [ -f /run/slurmctld.pid ] && kill "$(cat /run/slurmctld.pid)" 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  rabbitmqctl -q stop 2>/dev/null || true
  epmd -kill >/dev/null 2>&1 || true
  local cluster; cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
  # shellcheck disable=SC2086
  [ -n "$cluster" ] && pg_ctlcluster $cluster stop 2>/dev/null || true
  echo "[services] stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

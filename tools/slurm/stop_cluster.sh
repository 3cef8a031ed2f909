#!/usr/bin/env bash
# Stops the daemons tools/slurm/start_cluster.sh started, newest layer first; config and accounting data stay,
# so the next start_cluster.sh resumes the same cluster. Safe to run when nothing is running.
set -uo pipefail
stop_pidfile() {
  local pidfile=$1
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  echo "stop_cluster: $pidfile ($pid) did not exit after 30s" >&2
  return 1
}
stop_pidfile /run/slurm/slurmd.pid
stop_pidfile /run/slurm/slurmctld.pid
stop_pidfile /run/slurm/slurmdbd.pid
echo "stop_cluster: slurm daemons stopped (munge and mariadb keep running for other users)"

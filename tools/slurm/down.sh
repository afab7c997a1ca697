#!/usr/bin/env bash
# Stop the slurmd, slurmctld and munged that tools/slurm/up.sh started (only
# those: up.sh records their pids in $STATE_DIR).  Idempotent.
# Jobs still in the queue are cancelled first (the cluster is ours).
set -euo pipefail

STATE_DIR=${SLURM_CI_STATE_DIR:-/run/slurm-ci}
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { echo "[slurm-down] $*" >&2; }

# our_pid NAME -> prints the recorded pid if that process is alive and named NAME
our_pid() {
    local name=$1 pf="$STATE_DIR/$1.pid" pid
    [ -s "$pf" ] || return 1
    pid=$(tr -dc '0-9' < "$pf")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
    echo "$pid"
}

stop() {   # stop NAME
    local name=$1 pid
    if pid=$(our_pid "$name"); then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        if [ -d "/proc/$pid" ]; then
            log "$name (pid $pid) ignored SIGTERM for 15s -> SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    else
        log "$name: not running or not started by up.sh -> nothing to do"
    fi
    rm -f "$STATE_DIR/$name.pid"
}

if our_pid slurmctld >/dev/null && command -v squeue >/dev/null 2>&1; then
    jobs=$(timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        log "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(timeout 10 squeue -h -t PENDING,RUNNING,COMPLETING -o '%i' 2>/dev/null || true)" ] && break
            sleep 0.5
        done
    fi
fi

stop slurmd
stop slurmctld
stop munged
rmdir "$STATE_DIR" 2>/dev/null || true
log "done"

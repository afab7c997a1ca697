#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster (slurmctld + slurmd + munged) on
# this Debian machine, with two fake GPUs, for CI / local testing of the
# snakemake SLURM executor plugin.  See README.md next to this file.
#
# Idempotent: safe to run again; running daemons are reused, a changed
# configuration restarts the daemons this script started.
#
# Exit codes:
#   0  cluster up and verified (node idle, GPUs give CUDA_VISIBLE_DEVICES)
#   3  SLURM/munge is not installed and cannot be installed here
#      (not root, no apt-get, package install failed) -> caller may skip
#   1  installed but broken (daemon did not start, node not idle, GPU check
#      failed, ...) -> caller should fail
set -euo pipefail

STATE_DIR=${SLURM_CI_STATE_DIR:-/run/slurm-ci}   # pids of daemons WE started
LOG_DIR=/var/log/slurm
CONF_DIR=/etc/slurm
SLURM_CONF=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
CTLD_STATE=/var/lib/slurm/slurmctld
SLURMD_SPOOL=/var/lib/slurm/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
NGPU=2
WAIT_IDLE=${SLURM_CI_WAIT_IDLE:-60}     # seconds to wait for the node to be idle
SRUN_TIMEOUT=${SLURM_CI_SRUN_TIMEOUT:-60}

export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log()   { echo "[slurm-up] $*" >&2; }
skip()  { echo "[slurm-up] CANNOT INSTALL SLURM: $*" >&2; exit 3; }
die()   { echo "[slurm-up] ERROR: $*" >&2; exit 1; }

tail_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -f "$f" ]; then
            echo "----- last 30 lines of $f -----" >&2
            tail -n 30 "$f" >&2 || true
        fi
    done
}
die_logs() { echo "[slurm-up] ERROR: $*" >&2; tail_logs; exit 1; }

# ---------------------------------------------------------------- install --
have_all() {
    local f
    for f in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sinfo /usr/bin/srun \
             /usr/bin/sbatch /usr/bin/squeue /usr/bin/scontrol \
             /usr/sbin/munged /usr/bin/munge /usr/bin/unmunge; do
        [ -x "$f" ] || return 1
    done
}

install_pkgs() {
    [ "$(id -u)" -eq 0 ] || skip "not root (uid $(id -u)); need root to apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null 2>&1 || skip "apt-get not available (not a Debian-like system)"
    export DEBIAN_FRONTEND=noninteractive
    # Keep postinst scripts from starting munge/slurm services on their own
    # (we start the daemons ourselves and only stop what we started).
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 cand
    cand=$(apt-cache policy slurm-wlm munge 2>/dev/null | awk '/Candidate:/ {print $2}' | tr '\n' ' ')
    if [ -z "$cand" ] || echo "$cand" | grep -q '(none)'; then
        log "package lists lack slurm-wlm/munge -> apt-get update"
        apt-get update -qq >&2 || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        log "apt-get install -y slurm-wlm munge"
        if ! apt-get install -y -qq slurm-wlm munge >&2; then
            log "install failed; retrying after apt-get update"
            rc=0
            apt-get update -qq >&2 || rc=$?
            [ "$rc" -eq 0 ] && { apt-get install -y -qq slurm-wlm munge >&2 || rc=$?; }
        fi
    fi
    [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || skip "apt-get failed (rc=$rc); no package registry reachable?"
    have_all || skip "packages installed but SLURM/munge binaries still missing"
}

if ! have_all; then
    install_pkgs
fi
[ "$(id -u)" -eq 0 ] || skip "not root (uid $(id -u)); need root to run slurmctld/slurmd"
id munge >/dev/null 2>&1 || die "user 'munge' does not exist although munge is installed"

mkdir -p "$STATE_DIR"

# pid_alive PIDFILE NAME -> prints pid if the process in PIDFILE is alive and named NAME
pid_alive() {
    local pf=$1 name=$2 pid
    [ -s "$pf" ] || return 1
    pid=$(tr -dc '0-9' < "$pf")
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm")" = "$name" ] || return 1
    echo "$pid"
}

# ------------------------------------------------------------------ munge --
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating $MUNGE_KEY (1024 random bytes)"
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge "$MUNGE_KEY"
chmod 700 /etc/munge
chmod 400 "$MUNGE_KEY"
for d in "$MUNGE_RUN" /var/log/munge /var/lib/munge; do
    mkdir -p "$d"
    chown munge:munge "$d"
done
chmod 755 "$MUNGE_RUN"
chmod 700 /var/log/munge /var/lib/munge

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

if munge_ok; then
    log "munged already running"
else
    if pid=$(pid_alive "$MUNGE_PID" munged); then
        die "munged (pid $pid) runs but 'munge -n | unmunge' fails (key changed?)"
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die_logs "munged failed to start"
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.2; done
    munge_ok || die_logs "'munge -n | unmunge' fails after starting munged"
    pid=$(pid_alive "$MUNGE_PID" munged) || die_logs "munged pidfile $MUNGE_PID missing"
    echo "$pid" > "$STATE_DIR/munged.pid"
fi

# ----------------------------------------------------------------- config --
HOST=$(hostname -s)
NCPU=$(nproc)
TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
# leave 5% (at least 256 MB) so slurmd never sees less than RealMemory
RESERVE_MB=$(( TOTAL_MB / 20 > 256 ? TOTAL_MB / 20 : 256 ))
REAL_MB=$(( TOTAL_MB - RESERVE_MB ))
# jobs without --mem get this per CPU (without it, CR_Core_Memory hands a job
# that gives no --mem the WHOLE node's memory and jobs run one at a time)
DEF_MEM_PER_CPU=$(( REAL_MB / NCPU < 1024 ? REAL_MB / NCPU : 1024 ))
# address the node and controller via loopback unless the hostname resolves
if getent hosts "$HOST" >/dev/null 2>&1; then
    ADDR=$(getent hosts "$HOST" | awk '{print $1; exit}')
else
    ADDR=127.0.0.1
fi

for i in $(seq 0 $((NGPU - 1))); do
    dev=/dev/fakegpu$i
    if [ ! -c "$dev" ]; then
        rm -f "$dev"
        # character device (same as /dev/null): SLURM only sets
        # CUDA_VISIBLE_DEVICES for GRES files that are device nodes
        mknod "$dev" c 1 3 || die "mknod $dev failed"
        chmod 666 "$dev"
    fi
done

mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_STATE" "$SLURMD_SPOOL"

tmp_conf=$(mktemp)
tmp_gres=$(mktemp)
trap 'rm -f "$tmp_conf" "$tmp_gres"' EXIT
cat > "$tmp_conf" <<EOF
# Written by tools/slurm/up.sh -- single-node CI cluster. Do not edit by hand.
ClusterName=snakeci
SlurmctldHost=${HOST}(${ADDR})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${DEF_MEM_PER_CPU}
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
GresTypes=gpu
ReturnToService=2
# keep finished jobs visible to 'squeue --states=all' for 10 min: the
# snakemake slurm plugin needs MinJobAge >= 3*init_seconds_before_status_checks
# to use squeue instead of sacct (sacct does not work without slurmdbd)
MinJobAge=600
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${CTLD_STATE}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${HOST} NodeAddr=${ADDR} CPUs=${NCPU} RealMemory=${REAL_MB} Gres=gpu:${NGPU} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$tmp_gres" <<EOF
# Written by tools/slurm/up.sh: fake GPUs (character devices c 1 3)
NodeName=${HOST} Name=gpu File=/dev/fakegpu[0-$((NGPU - 1))]
EOF

changed=0
if ! cmp -s "$tmp_conf" "$SLURM_CONF"; then
    install -m 644 "$tmp_conf" "$SLURM_CONF"; changed=1
fi
if ! cmp -s "$tmp_gres" "$GRES_CONF"; then
    install -m 644 "$tmp_gres" "$GRES_CONF"; changed=1
fi
# Debian's default cgroup.conf is not needed (no cgroup plugins in use)

# ---------------------------------------------------------------- daemons --
stop_ours() {   # stop_ours NAME PIDFILE (only if WE started it)
    local name=$1 pid
    [ -s "$STATE_DIR/$name.pid" ] || return 0
    pid=$(tr -dc '0-9' < "$STATE_DIR/$name.pid")
    if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
        log "stopping $name (pid $pid) for reconfiguration"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/$name.pid"
}

if [ "$changed" -eq 1 ]; then
    for d in slurmd:"$SLURMD_PID" slurmctld:"$CTLD_PID"; do
        name=${d%%:*}; pf=${d#*:}
        if pid=$(pid_alive "$pf" "$name"); then
            if [ -s "$STATE_DIR/$name.pid" ]; then
                stop_ours "$name"
            else
                die "config changed but $name (pid $pid) was not started by up.sh; stop it first"
            fi
        fi
    done
fi

start_daemon() {   # start_daemon NAME PIDFILE
    local name=$1 pf=$2 pid
    if pid=$(pid_alive "$pf" "$name"); then
        log "$name already running (pid $pid)"
        return 0
    fi
    log "starting $name"
    "/usr/sbin/$name" || die_logs "$name failed to start"
    for _ in $(seq 1 100); do
        pid=$(pid_alive "$pf" "$name") && break
        sleep 0.1
    done
    pid=$(pid_alive "$pf" "$name") || die_logs "$name did not stay up"
    echo "$pid" > "$STATE_DIR/$name.pid"
}

start_daemon slurmctld "$CTLD_PID"
for _ in $(seq 1 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q UP || die_logs "slurmctld does not answer 'scontrol ping'"
start_daemon slurmd "$SLURMD_PID"

# ------------------------------------------------------------ wait idle ----
node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }
state=""
deadline=$(( $(date +%s) + WAIT_IDLE ))
resumed=0
while :; do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)
            # e.g. left DOWN by an earlier unclean stop: resume once
            if [ "$resumed" -eq 0 ]; then
                log "node is '$state' -> scontrol update state=resume"
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    [ "$(date +%s)" -ge "$deadline" ] && {
        sinfo -N -l >&2 || true
        scontrol show node "$HOST" >&2 || true
        die_logs "node '$HOST' not idle after ${WAIT_IDLE}s (state: '${state:-?}')"
    }
    sleep 1
done
log "node $HOST is $state"

# --------------------------------------------------------------- verify ----
check_gpus() {   # check_gpus N EXPECTED
    local n=$1 want=$2 out got
    out=$(timeout "$SRUN_TIMEOUT" srun -N1 -n1 --gpus="$n" env 2>&1) \
        || die_logs "'srun --gpus=$n env' failed: $out"
    got=$(printf '%s\n' "$out" | sed -n 's/^CUDA_VISIBLE_DEVICES=//p' | head -n1)
    [ "$got" = "$want" ] \
        || die_logs "'srun --gpus=$n' gave CUDA_VISIBLE_DEVICES='$got', expected '$want'"
    log "srun --gpus=$n -> CUDA_VISIBLE_DEVICES=$got"
}
check_gpus 1 0
check_gpus 2 0,1

log "SLURM cluster is up: node $HOST, ${NCPU} CPUs, ${REAL_MB} MB, gpu:${NGPU}, partition debug"

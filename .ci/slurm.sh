#!/usr/bin/env bash
# A throw-away single-node Slurm cluster for CI and the tests (Debian 12, run as root, no systemd needed).
#
#   .ci/slurm.sh start    install slurm-wlm + munge if missing, start munged, slurmctld and slurmd, wait until the
#                         node is idle and check that a job runs; safe to run again (it keeps what already works)
#   .ci/slurm.sh stop     scontrol shutdown and stop munged; fine when nothing runs
#   .ci/slurm.sh status   what runs, and sinfo; exit 0 only when the node takes jobs
#
# No cgroups, no accounting (so `sacct` fails; submitit warns and still collects results). One partition, "debug"
# (the default, no time limit), one node named after `hostname -s` with CPUs=$(nproc). Memory is not a consumable
# resource (CR_CPU): a job's --mem only has to be <= the node's RealMemory.
set -euo pipefail

PARTITION=debug
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# Written by rsabench .ci/slurm.sh"
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
WAIT_S=${SLURM_CI_WAIT_S:-60}

say() { echo "slurm.sh: $*"; }

show_logs() {
    local log
    for log in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        [[ -s $log ]] || continue
        echo "----- last lines of $log -----" >&2
        # munged notes "Unauthorized credential" for every job step: harmless, and it would hide the real cause
        grep -v 'Unauthorized credential' "$log" | tail -n 25 >&2 || true
    done
}

fail() {
    echo "slurm.sh: FAILED: $*" >&2
    show_logs
    exit 1
}

# The pid in $1 if that process runs and is named $2, else nothing (status 1).
running_pid() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$( { tr -dc 0-9 <"$1"; } 2>/dev/null) || return 1 # the file may go away meanwhile
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    echo "$pid"
}

# Send TERM to the pid in $1 (named $2) and wait up to 10 s for it to end.
stop_pid() {
    local pid i
    pid=$(running_pid "$1" "$2") || return 0
    say "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        running_pid "$1" "$2" >/dev/null || return 0
        sleep 0.2
    done
    say "$2 (pid $pid) ignored TERM; killing it"
    kill -9 "$pid" 2>/dev/null || true
}

munge_ok() { command -v munge >/dev/null && timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

# States of our node, e.g. "idle" or "drained" (sinfo prints "idle*" while the node does not answer).
node_state() { timeout 5 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true; }

install_packages() {
    local missing=() cmd
    for cmd in munged slurmctld slurmd sinfo srun; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install slurm-wlm and munge"
    say "installing slurm-wlm and munge (missing: ${missing[*]}); this takes a minute or two"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null || fail "apt-get install failed"
    NEW_KEY=1 # the package made a 128-byte key; ours has 1024 bytes
}

start_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s $MUNGE_KEY || ${NEW_KEY:-0} == 1 ]]; then
        stop_pid "$MUNGE_PID" munged # one started by the package would hold the old key
        say "creating $MUNGE_KEY (1024 random bytes)"
        rm -f "$MUNGE_KEY"
        (umask 077 && head -c 1024 /dev/urandom >"$MUNGE_KEY")
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    if munge_ok; then
        return 0
    fi
    stop_pid "$MUNGE_PID" munged # a munged that does not answer
    say "starting munged"
    su -s /bin/sh munge -c /usr/sbin/munged || fail "munged did not start"
    local i
    for ((i = 0; i < 20; i++)); do
        munge_ok && return 0
        sleep 0.5
    done
    fail "munged runs but 'munge -n | unmunge' does not succeed"
}

# slurm.conf for this machine, on stdout.
render_conf() {
    local cpus mem_mib
    cpus=$(nproc)
    mem_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    mem_mib=$((mem_mib * 9 / 10)) # a bit under what the machine has, so slurmd never finds less than configured
    cat <<EOF
$MARK (start/stop/status there); rewritten by it, so do not edit.
ClusterName=rsabench-ci
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
KillWait=30
MinJobAge=300
Waittime=0
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# Write slurm.conf; status 10 when it changed (daemons that already run must then be restarted).
write_conf() {
    local new
    new=$(render_conf)
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        [[ ${SLURM_CI_FORCE:-0} == 1 ]] || fail "$CONF exists and was not written by this script; move it away \
or set SLURM_CI_FORCE=1 to overwrite it"
        cp "$CONF" "$CONF.bak.$(date +%s)"
    fi
    [[ -e $CONF && $(cat "$CONF") == "$new" ]] && return 0
    say "writing $CONF"
    mkdir -p "$CONF_DIR"
    printf '%s\n' "$new" >"$CONF"
    chmod 0644 "$CONF"
    return 10
}

wait_for_node() {
    local state="" i resumed=0
    for ((i = 0; i < WAIT_S; i++)); do
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing) return 0 ;;
        drain* | down)
            # Left over from an earlier run (ReturnToService=2 should prevent it): give the node back once.
            if ((resumed == 0 && i >= 3)); then
                say "node $NODE is '$state'; resuming it"
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
        esac
        sleep 1
    done
    timeout 5 sinfo -N -l >&2 || true
    fail "node $NODE not idle after ${WAIT_S} s (last state: '${state:-no answer from slurmctld}')"
}

cmd_start() {
    local t0=$SECONDS changed=0 out
    [[ $(id -u) -eq 0 ]] || fail "run me as root (I install packages and start daemons)"
    NODE=$(hostname -s)
    install_packages
    start_munge
    write_conf || { [[ $? -eq 10 ]] && changed=1; }
    install -d -m 0755 /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
    if ((changed)) && { running_pid "$CTLD_PID" slurmctld || running_pid "$SLURMD_PID" slurmd; } >/dev/null; then
        say "configuration changed: restarting the Slurm daemons"
        stop_slurm
    fi
    if ! running_pid "$CTLD_PID" slurmctld >/dev/null; then
        say "starting slurmctld"
        slurmctld || fail "slurmctld did not start"
    fi
    if ! running_pid "$SLURMD_PID" slurmd >/dev/null; then
        say "starting slurmd"
        slurmd || fail "slurmd did not start"
    fi
    wait_for_node
    out=$(timeout 60 srun -N1 -n1 -t 1 -p "$PARTITION" hostname 2>&1) || fail "test job failed: srun said: $out"
    say "ready: partition '$PARTITION', node $NODE ($(nproc) CPUs), test job ran on '$out' ($((SECONDS - t0)) s)"
}

stop_slurm() {
    if command -v scontrol >/dev/null && running_pid "$CTLD_PID" slurmctld >/dev/null; then
        say "scontrol shutdown"
        timeout 20 scontrol shutdown >/dev/null 2>&1 || say "scontrol shutdown failed; stopping the daemons by pid"
        local i
        for ((i = 0; i < 50; i++)); do
            running_pid "$CTLD_PID" slurmctld >/dev/null || running_pid "$SLURMD_PID" slurmd >/dev/null || break
            sleep 0.2
        done
    fi
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
}

cmd_stop() {
    stop_slurm
    stop_pid "$MUNGE_PID" munged
    say "stopped"
}

cmd_status() {
    local name pidfile pid state
    NODE=$(hostname -s)
    for name in munged:$MUNGE_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        pidfile=${name#*:}
        pid=$(running_pid "$pidfile" "${name%%:*}") || pid="not running"
        say "${name%%:*}: $pid"
    done
    command -v sinfo >/dev/null || { say "sinfo not installed"; return 1; }
    running_pid "$CTLD_PID" slurmctld >/dev/null || { say "no slurmctld here: start one with $0 start"; return 1; }
    timeout 5 sinfo || true
    state=$(node_state)
    case $state in
    idle | mixed | allocated | completing) say "node $NODE is $state: takes jobs" ;;
    *) say "node $NODE is '${state:-unknown}': does not take jobs" && return 1 ;;
    esac
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

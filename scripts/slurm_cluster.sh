#!/usr/bin/env bash
# Single-node Slurm "cluster" on this machine, for tests and CI.
#
#   scripts/slurm_cluster.sh up       install (if needed), configure and start; wait until a job runs
#   scripts/slurm_cluster.sh down     stop slurmd, slurmctld and munged
#   scripts/slurm_cluster.sh status   print scontrol ping / sinfo / squeue
#
# Needs root (Debian/Ubuntu).  `up` is idempotent: it regenerates /etc/slurm/slurm.conf for this
# host and restarts only daemons that are missing or older than the config.
#
# Tunables (environment):
#   SLURM_UP_TIMEOUT       seconds to wait for the node and the smoke job (default 60)
#   SLURM_OVERSUBSCRIBE    jobs that may share one core in partition `debug` (default 4; 1 = exclusive)
#   SLURM_MEM_HEADROOM_MB  memory kept back from Slurm (default: max(1024, 10% of RAM))
set -euo pipefail

CONF_DIR=/etc/slurm
SLURM_CONF=$CONF_DIR/slurm.conf
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/spool/slurm/slurmd
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
MUNGE_KEY=/etc/munge/munge.key
PARTITION=debug
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
OVERSUBSCRIBE=${SLURM_OVERSUBSCRIBE:-4}

export SLURM_CONF  # client tools must not fall back to DNS SRV lookups

log() { echo "[slurm_cluster] $*" >&2; }
die() {
    log "ERROR: $*"
    [[ -n ${NODE:-} ]] && sinfo -N -l -n "$NODE" >&2 2>/dev/null && sinfo -R >&2 2>/dev/null
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        [[ -f $f ]] && { echo "---- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------- packages
ensure_packages() {
    local missing=0 c
    for c in munged munge unmunge slurmctld slurmd sinfo squeue srun scontrol; do
        command -v "$c" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available"
    log "installing slurm-wlm munge (apt-get)"
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed"
}

# ---------------------------------------------------------------- process helpers
# alive PID NAME -> true if PID is a live (non-zombie) process called NAME
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == "$1 ($2) "* && ${stat#*) } != Z* ]]
}

# daemon_pid NAME PIDFILE -> prints the pid of the running daemon (empty if none)
daemon_pid() {
    local name=$1 pidfile=$2 pid=""
    [[ -r $pidfile ]] && pid=$(<"$pidfile")
    if [[ -n $pid ]] && alive "$pid" "$name"; then
        echo "$pid"
        return 0
    fi
    for pid in $(pgrep -x "$name" || true); do
        alive "$pid" "$name" && { echo "$pid"; return 0; }
    done
    return 0
}

stop_daemon() {
    local name=$1 pidfile=$2 pid i
    pid=$(daemon_pid "$name" "$pidfile")
    [[ -n $pid ]] || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" "$name" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# true if the process PID started before FILE was last modified
older_than() {
    local pid=$1 file=$2 age
    age=$(ps -o etimes= -p "$pid" | tr -d ' ')
    [[ -n $age ]] && (($(date +%s) - age < $(stat -c %Y "$file")))
}

# ---------------------------------------------------------------- munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge /var/log/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
        stop_daemon munged /run/munge/munged.pid  # a running munged still holds the old key
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    munge_ok && return 0
    stop_daemon munged /run/munge/munged.pid
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force || die "munged failed to start"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && return 0
        sleep 0.2
    done
    die "munge does not work (munge -n | unmunge fails)"
}

# ---------------------------------------------------------------- config
# Value of KEY=... in the one-line output of `slurmd -C`.
hw() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW" | head -n1; }

write_if_changed() {  # write_if_changed FILE (content on stdin); returns 0 if FILE changed
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 1
    fi
    install -m 0644 "$tmp" "$1"
    rm -f "$tmp"
    log "wrote $1"
}

generate_config() {
    local host cpus boards sockets cores threads mem headroom
    host=$(hostname -s)
    HW=$(slurmd -C 2>/dev/null | head -n1) || true
    [[ $HW == NodeName=* ]] || die "slurmd -C did not report the hardware"
    cpus=$(hw CPUs) boards=$(hw Boards) sockets=$(hw SocketsPerBoard)
    cores=$(hw CoresPerSocket) threads=$(hw ThreadsPerCore) mem=$(hw RealMemory)
    headroom=${SLURM_MEM_HEADROOM_MB:-$((mem / 10 > 1024 ? mem / 10 : 1024))}
    ((mem - headroom >= 512)) || headroom=$((mem / 4))
    mem=$((mem - headroom))
    NODE=$host

    mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" "$RUN_DIR"
    write_if_changed "$SLURM_CONF" <<EOF && CONF_CHANGED=1
# Generated by scripts/slurm_cluster.sh for host $host -- do not edit, rerun the script.
ClusterName=unihetero
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Short credential lifetime: a requeued job may start again after ~cred_expire s (default 120).
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (containers, gVisor): plain /proc process tracking, no task binding, no accounting.
# With these plugins slurmd never touches cgroups, so no cgroup.conf is needed.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:$OVERSUBSCRIBE
EOF
    return 0
}

# ---------------------------------------------------------------- daemons
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

start_slurm() {
    local name pid
    for name in slurmctld slurmd; do
        pid=$(daemon_pid "$name" "$RUN_DIR/$name.pid")
        if [[ -n $pid ]] && { ((CONF_CHANGED)) || older_than "$pid" "$SLURM_CONF"; }; then
            log "$name runs with a stale config; restarting"
            stop_daemon "$name" "$RUN_DIR/$name.pid"
            pid=""
        fi
        if [[ -z $pid ]]; then
            log "starting $name"
            "$name" -f "$SLURM_CONF" || die "$name failed to start"
        fi
        if [[ $name == slurmctld ]]; then
            wait_for "slurmctld to answer" 'scontrol ping 2>/dev/null | grep -q UP'
        fi
    done
}

DEADLINE=0
wait_for() {  # wait_for DESCRIPTION SHELL-CONDITION
    until eval "$2"; do
        ((SECONDS < DEADLINE)) || die "timed out after ${UP_TIMEOUT}s waiting for $1"
        sleep 1
    done
}

node_ready() {
    local st
    if [[ -z $(daemon_pid slurmd "$RUN_DIR/slurmd.pid") ]]; then
        log "slurmd is not running; starting it"
        slurmd -f "$SLURM_CONF" || die "slurmd failed to start"
    fi
    st=$(node_state)
    case $st in
    idle | mixed | allocated | completing) return 0 ;;
    down | drain* | fail*)  # responding, but administratively down: bring it back
        log "node $NODE is $st; resuming it"
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    return 1
}

cmd_up() {
    need_root
    local t0=$SECONDS
    DEADLINE=$((SECONDS + UP_TIMEOUT))
    CONF_CHANGED=0
    ensure_packages
    DEADLINE=$((SECONDS + UP_TIMEOUT))  # package installation does not count
    ensure_munge
    generate_config
    start_slurm
    wait_for "node $NODE to become idle" node_ready
    log "node $NODE is $(node_state); running a smoke job"
    local left=$((DEADLINE - SECONDS))
    ((left > 5)) || left=5
    timeout "$left" srun -p "$PARTITION" -N1 -n1 --mem=64 -t 1 -J smoke true \
        || die "smoke job (srun true) did not complete within ${left}s"
    log "cluster up in $((SECONDS - t0))s: $(sinfo -h -o '%P %a %D %T %C' | head -n1) (partition avail nodes state cpus A/I/O/T)"
}

cmd_down() {
    need_root
    stop_daemon slurmd "$RUN_DIR/slurmd.pid"
    stop_daemon slurmctld "$RUN_DIR/slurmctld.pid"
    stop_daemon munged /run/munge/munged.pid
    log "stopped"
}

cmd_status() {
    scontrol ping || true
    sinfo -N -l || true
    squeue -l || true
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac

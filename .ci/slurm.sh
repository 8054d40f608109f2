#!/usr/bin/env bash
# A one-node SLURM cluster on loopback, for tests and for developers (run as root).
#
#   .ci/slurm.sh install   # apt-get install slurm-wlm munge (Debian/Ubuntu)
#   .ci/slurm.sh start     # munged + slurmctld + slurmd; config and state under $RHO_SLURM_DIR
#   .ci/slurm.sh status    # sinfo
#   .ci/slurm.sh stop      # stop the daemons started by `start` (by their pid files)
#   eval "$(.ci/slurm.sh env)"   # export SLURM_CONF for sbatch/squeue in this shell
#
# The config: SlurmctldHost and NodeAddr 127.0.0.1, proctrack/linuxproc, task/none, no
# accounting, MailProg /bin/true, state and spool in $RHO_SLURM_DIR (default /tmp/rho-slurm).
# Tests find the cluster through $SLURM_CONF or $RHO_SLURM_DIR/slurm.conf.
set -euo pipefail

DIR="${RHO_SLURM_DIR:-/tmp/rho-slurm}"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"

log() { echo "slurm.sh: $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        log "slurm-wlm and munge already installed"
        return
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local cpus mem
    cpus="$(nproc)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    cat >"$CONF" <<CONF
ClusterName=rho
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
InactiveLimit=0
KillWait=5
MinJobAge=60
Waittime=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

start_munge() {
    if pgrep -u munge -x munged >/dev/null 2>&1; then
        return
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
        [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    fi
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    touch "$DIR/started-munge"
}

start() {
    command -v slurmctld >/dev/null || { log "slurm-wlm is not installed; run: $0 install"; exit 1; }
    if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        log "already running (config $CONF)"
        return
    fi
    write_conf
    start_munge
    export SLURM_CONF="$CONF"
    slurmctld -f "$CONF" || { tail -n 20 "$DIR/log/slurmctld.log" >&2; exit 1; }
    slurmd -f "$CONF" -N "$HOST" || { tail -n 20 "$DIR/log/slurmd.log" >&2; stop; exit 1; }
    for _ in $(seq 1 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            log "one-node SLURM up on 127.0.0.1 (SLURM_CONF=$CONF)"
            sinfo
            return
        fi
        sleep 0.5
    done
    log "the node did not become idle; logs in $DIR/log"
    sinfo -N -l || true
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    exit 1
}

stop_pidfile() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$file"
}

stop() {
    if [ -f "$CONF" ]; then
        SLURM_CONF="$CONF" scancel --user="$(id -un)" 2>/dev/null || true
    fi
    stop_pidfile "$DIR/slurmd.pid"
    stop_pidfile "$DIR/slurmctld.pid"
    if [ -f "$DIR/started-munge" ]; then
        stop_pidfile /run/munge/munged.pid
        rm -f "$DIR/started-munge"
    fi
    log "stopped"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) SLURM_CONF="$CONF" sinfo ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac

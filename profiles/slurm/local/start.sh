#!/usr/bin/env bash
# Start a single-node Slurm on this machine (slurmctld + slurmd, munge, no accounting database) to
# try or test profiles/slurm. Installs Debian's slurm-wlm and munge if they are missing. Idempotent:
# a Slurm this script already started is left running. Needs root (or sudo). Stop it with stop.sh.
#
# The node gets the host's real cores and memory (`slurmd -C`). Without accounting, `sacct` answers
# "accounting storage is disabled", so Snakemake's Slurm executor must query job states with
# `squeue` (--slurm-status-command squeue); MinJobAge keeps finished jobs visible to squeue for an
# hour so that their final state is never missed.
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurm-diffroar
LOG_DIR=/var/log/slurm-diffroar
WAIT_SECONDS=${SLURM_START_TIMEOUT:-60}

log() { echo "local-slurm: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge from Debian's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
fi

# munge authenticates every Slurm message; it needs a key and its run directory.
$SUDO mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    $SUDO mungekey --create --keyfile /etc/munge/munge.key
fi
$SUDO chown -R munge:munge /run/munge /etc/munge /var/lib/munge /var/log/munge
$SUDO chmod 0700 /etc/munge /var/lib/munge /var/log/munge
$SUDO chmod 0400 /etc/munge/munge.key
$SUDO chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    log "starting munged"
    $SUDO runuser -u munge -- /usr/sbin/munged
fi

HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)   # NodeName=<host> CPUs=... RealMemory=... (this host's hardware)
$SUDO mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$LOG_DIR"
CONF=$(cat <<CONF
# Written by profiles/slurm/local/start.sh: one node, this host, no accounting.
ClusterName=diffroar-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/d
SlurmctldPidFile=/run/slurmctld-diffroar.pid
SlurmdPidFile=/run/slurmd-diffroar.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
MpiDefault=none
$NODE State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
)
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ "$(cat "$CONF_DIR/slurm.conf")" != "$CONF" ]]; then
    log "writing $CONF_DIR/slurm.conf"
    echo "$CONF" | $SUDO tee "$CONF_DIR/slurm.conf" >/dev/null
    if pgrep -x slurmctld >/dev/null; then $SUDO scontrol reconfigure || true; fi
fi

if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"
    $SUDO slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
    log "starting slurmd"
    $SUDO slurmd
fi

log "waiting for node $HOST to be idle"
for ((second = 0; second < WAIT_SECONDS; second++)); do
    state=$(sinfo --noheader --nodes="$HOST" --format=%T 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle|mixed|allocated)
            log "ready: node $HOST is $state ($(sinfo --noheader --format='%c CPUs, %m MB' | head -n 1))"
            exit 0 ;;
        down*|drain*|fail*)
            $SUDO scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
log "node $HOST is not idle after $WAIT_SECONDS s (state: ${state:-none}); see $LOG_DIR"
exit 1

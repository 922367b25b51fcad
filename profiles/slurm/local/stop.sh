#!/usr/bin/env bash
# Stop the single-node Slurm that start.sh started (slurmctld, slurmd, munged). Idempotent.
set -uo pipefail
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
for daemon in slurmd slurmctld munged; do
    if pgrep -x "$daemon" >/dev/null; then
        echo "local-slurm: stopping $daemon" >&2
        $SUDO pkill -x "$daemon"
        for _ in $(seq 30); do pgrep -x "$daemon" >/dev/null || break; sleep 0.5; done
    fi
done
# Remove the config start.sh wrote: with a slurm.conf and no controller, every `scontrol` call
# waits about 9 s, and the Slurm executor plugin calls it whenever Snakemake starts, even for
# local runs. Without it scontrol fails at once, as where Slurm was never set up.
CONF=/etc/slurm/slurm.conf
if [[ -f $CONF ]] && head -1 "$CONF" | grep -q "Written by profiles/slurm/local/start.sh"; then
    echo "local-slurm: removing $CONF" >&2
    $SUDO rm -f "$CONF"
fi
exit 0

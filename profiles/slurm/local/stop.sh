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
exit 0

#!/usr/bin/env bash
# Stop the daemons started by tests/slurm/setup.sh, by their pid files (never by name).
set -uo pipefail

stop() {  # stop <pidfile>: TERM the process it names, wait up to 10 s
    local pidfile="$1" pid
    [ -s "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
}

stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/munge/munged.pid

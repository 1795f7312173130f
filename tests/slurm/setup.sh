#!/usr/bin/env bash
# Start a single-node SLURM cluster (Debian's slurm-wlm + munge) for tests/test_slurm.py.
#
# Idempotent: packages are installed only when missing, the munge key is created once, daemons are
# started only when their pid file does not name a live process. Needs root (CI containers run as root).
# Accounting (slurmdbd) is not configured: `sacct` is unavailable, and the harness's SLURM executor falls
# back to `squeue` for job states. Stop everything with tests/slurm/teardown.sh.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/slurm/setup.sh: needs root (apt-get, munge key, daemons); running as $(id -un)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST="$(hostname -s)"
CPUS="$(nproc)"
# Declare less memory than the machine has: a node whose RealMemory exceeds what slurmd finds is drained.
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge
chmod 400 /etc/munge/munge.key

alive() {  # alive <pidfile>: the pid file names a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged --force
fi

cat > /etc/slurm/slurm.conf <<CONF
# Written by tests/slurm/setup.sh: a one-node cluster for the harness's SLURM tests.
ClusterName=local
SlurmctldHost=${HOST}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Requeued jobs may start again at once (the test requeues a job mid-run).
JobRequeue=1
NodeName=${HOST} CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF

if ! alive /run/slurmctld.pid; then
    /usr/sbin/slurmctld
fi
if ! alive /run/slurmd.pid; then
    /usr/sbin/slurmd
fi

# Wait (up to 60 s) until the node accepts jobs.
for _ in $(seq 60); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mixed|allocated) echo "SLURM up: node ${HOST} ${state}"; exit 0 ;;
        down*|drain*) scontrol update nodename="${HOST}" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "tests/slurm/setup.sh: SLURM did not come up; see /var/log/slurm/*.log" >&2
sinfo >&2 || true
exit 1

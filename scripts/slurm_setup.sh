#!/usr/bin/env bash
# Installs Debian's slurm-wlm + munge and runs a one-node Slurm "cluster" on this machine
# (slurmctld + slurmd on localhost), for the scale-out tests (tests/scaleout) and for trying
# examples/slurm/recap.sbatch by hand. Needs root. Idempotent: quick when already running.
#
#   scripts/slurm_setup.sh          install if needed, configure, start, wait until the node is idle
#   scripts/slurm_setup.sh --stop   stop the daemons this script started
#
# The configuration avoids everything a container usually lacks: no cgroups
# (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), no accounting database, no
# systemd. The node's CPUs and memory are the real ones (slurmd -C).
set -euo pipefail

log() { echo "slurm_setup: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (installs packages, starts munged/slurmctld/slurmd)"
  exit 2
fi

# Tests may run this concurrently (ctest --parallel): one at a time, waiting at most 10 minutes.
# The daemons started below must not inherit fd 9: a daemon holding the lock would block every
# later run forever (munged keeps inherited descriptors open), hence `9>&-` on each of them.
mkdir -p /run/slurm
exec 9>/run/slurm/.recap_slurm_setup.lock
if ! flock -w 600 9; then
  log "another scripts/slurm_setup.sh has held /run/slurm/.recap_slurm_setup.lock for 10 minutes"
  exit 1
fi

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [[ ${1:-} == --stop ]]; then
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid; do
    if pid_alive "$p"; then kill "$(cat "$p")" && log "stopped $(basename "$p" .pid)"; fi
  done
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null; }
fi

node=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
conf=/etc/slurm/slurm.conf
# slurmd -C prints "NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=.."
hw=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
want=$(cat <<CONF
# Written by scripts/slurm_setup.sh: one node on localhost, no cgroups, no accounting.
ClusterName=recap
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120); the tests
# requeue on purpose, so keep it short.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
MaxArraySize=10001
NodeName=${node} NodeAddr=127.0.0.1 ${hw} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
CONF
)
restart=0
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  printf '%s\n' "$want" >"$conf"
  restart=1
  log "wrote $conf"
fi

# munge: a key (the package creates one; make sure) and the daemon.
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! pid_alive /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged 9>&-
fi
munge -n | unmunge >/dev/null || { log "munge does not work (munge -n | unmunge failed)"; exit 1; }

if [[ $restart == 1 ]]; then
  for p in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
    if pid_alive "$p"; then kill "$(cat "$p")"; sleep 1; fi
  done
fi
if ! pid_alive /run/slurm/slurmctld.pid; then
  log "starting slurmctld"
  /usr/sbin/slurmctld 9>&-
fi
if ! pid_alive /run/slurm/slurmd.pid; then
  log "starting slurmd"
  /usr/sbin/slurmd 9>&-
fi

# Wait (bounded) until the node accepts work.
for _ in $(seq 1 60); do
  state=$(sinfo -h -n "$node" -o '%T' 2>/dev/null || true)
  case $state in
    idle | mixed | allocated | completing) log "node $node is $state"; exit 0 ;;
    down* | drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
log "node $node did not become idle (state: ${state:-none}); see /var/log/slurm/slurmctld.log and slurmd.log"
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1

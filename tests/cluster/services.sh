#!/usr/bin/env bash
# Real PostgreSQL + single-node SLURM (slurmctld, slurmd, munge) on localhost for the cluster test tier.
#   services.sh start DIR   installs what is missing (Debian packages, root), starts what is not running, writes
#                           DIR/env (SLURM_CONF, NLPEXP_PG_URL, NLPEXP_PARTITION) and DIR/started (what to stop)
#   services.sh stop DIR    stops only what `start` started (pids and clusters listed in DIR/started)
# Exit code 3 with one line on stderr: this machine cannot run them (no root, no apt, a daemon did not start).
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?state dir}")
skip() { echo "cluster tier: $*" >&2; exit 3; }

stop() {
  [ -f "$dir/started" ] || return 0
  # newest first: SLURM before munge (it authenticates through it), PostgreSQL last
  tac "$dir/started" | while read -r kind what; do
    case $kind in
      pid) kill "$what" 2>/dev/null || true
           for _ in $(seq 50); do kill -0 "$what" 2>/dev/null || break; sleep 0.1; done
           kill -9 "$what" 2>/dev/null || true ;;
      pg) pg_ctlcluster "${what% *}" "${what#* }" stop || true ;;
    esac
  done
  rm -f "$dir/started"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local s=$1 what=$2; shift 2
  for _ in $(seq $((s * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  skip "$what did not come up (logs in $dir)"
}

start() {
  [ "$(id -u)" = 0 ] || skip "needs root (apt-get, munged as the munge user, slurmd)"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    command -v apt-get >/dev/null || skip "no apt-get to install postgresql slurm-wlm munge"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql slurm-wlm munge) \
      >"$dir/apt.log" 2>&1 || skip "apt-get install postgresql slurm-wlm munge failed (see $dir/apt.log)"
  fi
  mkdir -p "$dir/state" "$dir/spool"
  : >>"$dir/started"

  # munge: the system socket (SLURM's auth/munge talks to it); reuse a running munged
  if ! munge -n </dev/null >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
                                     chown munge: /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge && chown munge: /run/munge
    rm -f /run/munge/nlpexp-test.pid  # a folder the munge user may write
    runuser -u munge -- munged --pid-file=/run/munge/nlpexp-test.pid >"$dir/munged.log" 2>&1 || skip "munged did not start"
    wait_for 10 munged test -s /run/munge/nlpexp-test.pid
    echo "pid $(cat /run/munge/nlpexp-test.pid)" >>"$dir/started"
    wait_for 10 munge munge -n
  fi

  # PostgreSQL: the packaged cluster; a fresh database per tier run
  local ver; ver=$(pg_lsclusters -h | awk 'NR==1 {print $1}')
  [ -n "$ver" ] || skip "no PostgreSQL cluster (pg_lsclusters)"
  if ! pg_lsclusters -h | awk 'NR==1 {print $4}' | grep -q online; then
    pg_ctlcluster "$ver" main start >"$dir/pg.log" 2>&1 || skip "pg_ctlcluster $ver main start failed"
    echo "pg $ver main" >>"$dir/started"
  fi
  # a role with a password over TCP, as a sweeper on another node would connect (the URL needs no quoting in Hydra)
  runuser -u postgres -- psql -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='nlpexp_test')
    THEN CREATE ROLE nlpexp_test LOGIN PASSWORD 'nlpexp_test'; END IF; END \$\$" >/dev/null || skip "psql failed"
  local db="nlpexp_cluster_$$"
  runuser -u postgres -- createdb -O nlpexp_test "$db" || skip "createdb failed"
  echo "db $db" >>"$dir/started"

  # SLURM: one node (this machine's CPUs and memory), one CPU partition, no accounting, config in $dir
  local cpus mem
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  cat >"$dir/slurm.conf" <<CONF
ClusterName=nlpexptest
SlurmctldHost=localhost
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# as on most clusters: a job without --mem gets its CPUs' share of memory, not the whole node
DefMemPerCPU=$((mem / cpus))
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -D -i >"$dir/slurmctld.out" 2>&1 &
  echo "pid $!" >>"$dir/started"
  wait_for 20 slurmctld scontrol ping
  slurmd -D -N localhost >"$dir/slurmd.out" 2>&1 &
  echo "pid $!" >>"$dir/started"
  wait_for 30 "slurmd (node idle)" bash -c "sinfo -h -N -o %t | grep -q idle"
  cat >"$dir/env" <<ENV
SLURM_CONF=$dir/slurm.conf
NLPEXP_PG_URL=postgresql://nlpexp_test:nlpexp_test@127.0.0.1/$db
NLPEXP_PARTITION=cpu
ENV
}

case $cmd in
  start) mkdir -p "$dir"; start ;;
  stop) # the database first (while PostgreSQL still runs), then the daemons
    if [ -f "$dir/started" ]; then
      grep '^db ' "$dir/started" | while read -r _ db; do runuser -u postgres -- dropdb --if-exists "$db" || true; done
      sed -i '/^db /d' "$dir/started"
    fi
    stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac

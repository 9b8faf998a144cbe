#!/usr/bin/env bash
# Start a one-node SLURM cluster (munged, slurmctld, slurmd on localhost) for the test suite.
# Needs root and Debian's slurm-wlm and munge. Prints the SLURM_CONF to export; idempotent.
#   export SLURM_CONF=$(bash ci/slurm/start.sh)
set -euo pipefail
STATE=${SERCACHE_SLURM_STATE:-/tmp/sercache-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$STATE/state" "$STATE/spool" /run/munge
HOST=$(hostname)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" -e "s|@STATE@|$STATE|g" \
  "$HERE/slurm.conf.in" > "$STATE/slurm.conf"
export SLURM_CONF=$STATE/slurm.conf
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chmod 400 /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do  # until the node takes jobs
  if timeout 10 sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "$SLURM_CONF"; exit 0; fi
  sleep 1
done
echo "SLURM did not come up; see $STATE/slurmctld.log and $STATE/slurmd.log" >&2
sinfo >&2 || true
exit 1

#!/usr/bin/env bash
# Run a command (default: the fast tier, SLURM and browser tests required) with N busy loops alongside,
# the check that no test depends on the machine being idle (issue 23). From the repository root, in the venv:
#   bash ci/under_load.sh                   # two busy loops, python -m pytest -q -m "not slow"
#   LOOPS=4 bash ci/under_load.sh python -m pytest -q tests/test_cluster.py
# The loops stop when the command ends, however it ends; its exit status is the script's.
set -uo pipefail
LOOPS=${LOOPS:-2}
if [ $# -eq 0 ]; then
  SLURM_CONF=$(bash "$(dirname "$0")/slurm/start.sh")
  export SLURM_CONF SERCACHE_REQUIRE_SLURM=1 SERCACHE_REQUIRE_BROWSER=1
  set -- python -m pytest -q -m "not slow" -p no:cacheprovider
fi
pids=()
for _ in $(seq "$LOOPS"); do
  ( while :; do :; done ) &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
echo "under_load: $LOOPS busy loop(s) (pids ${pids[*]}) beside: $*" >&2
"$@"

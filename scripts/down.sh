#!/usr/bin/env bash
# Stops the cluster started by scripts/up.sh (SIGTERM, then waits).
set -euo pipefail
data=${CORTEN_DATA:-/var/lib/corten}
if [ -f "$data/corten.pid" ] && kill -0 "$(cat "$data/corten.pid")" 2>/dev/null; then
  pid=$(cat "$data/corten.pid")
  kill -TERM "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  rm -f "$data/corten.pid"
  echo "corten stopped"
else
  echo "corten is not running"
fi

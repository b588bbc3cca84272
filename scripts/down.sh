#!/usr/bin/env bash
# Stops the cluster started by scripts/up.sh (SIGTERM, then waits) and its pod containers.
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
# Containers outlive the server by design (a restarted server re-adopts them): stop them too.
bin=${CARGO_TARGET_DIR:-target}/release/corten
if [ -x "$bin" ] && [ -d "$data/agent" ]; then
  "$bin" killall --data-dir "$data" >/dev/null 2>&1 && echo "pod containers stopped"
fi

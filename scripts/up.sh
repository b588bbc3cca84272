#!/usr/bin/env bash
# Installs what is missing, builds corten, and starts a single-node cluster in the background.
# Stop it with scripts/down.sh. Data lives in $CORTEN_DATA (default /var/lib/corten).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CORTEN_DATA:-/var/lib/corten}
port=${CORTEN_PORT:-6443}
scripts/deps.sh
echo "==> building corten (release; the first build takes several minutes)"
cargo build --release --locked -p corten
mkdir -p "$data"
if [ -f "$data/corten.pid" ] && kill -0 "$(cat "$data/corten.pid")" 2>/dev/null; then
  echo "==> corten is already running (pid $(cat "$data/corten.pid"))"
else
  echo "==> starting corten server (log: $data/corten.log)"
  nohup target/release/corten server --data-dir "$data" --https-listen-port "$port" >"$data/corten.log" 2>&1 &
  echo $! >"$data/corten.pid"
fi
echo -n "==> waiting for the API server"
for _ in $(seq 1 100); do
  if [ -f "$data/kubeconfig.yaml" ] && KUBECONFIG="$data/kubeconfig.yaml" kubectl get --raw /readyz >/dev/null 2>&1; then
    echo " ready"
    break
  fi
  echo -n "."; sleep 0.3
done
KUBECONFIG="$data/kubeconfig.yaml" kubectl get --raw /readyz >/dev/null || { echo " failed; see $data/corten.log" >&2; exit 1; }
cat <<MSG

corten is running: API server at https://127.0.0.1:$port
Use kubectl with it:
    export KUBECONFIG=$data/kubeconfig.yaml
    kubectl get namespaces
Stop it with: scripts/down.sh
MSG

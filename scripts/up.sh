#!/usr/bin/env bash
# Installs what is missing, builds corten and the offline test images, and starts a single-node
# cluster (API server, controllers, scheduler, node agent on containerd, proxy, DNS) in the
# background.
# Stop it with scripts/down.sh. Data lives in $CORTEN_DATA (default /var/lib/corten).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CORTEN_DATA:-/var/lib/corten}
port=${CORTEN_PORT:-6443}
scripts/deps.sh
echo "==> building corten (release; the first build takes several minutes)"
cargo build --release --locked -p corten
mkdir -p "$data/agent/images"
echo "==> test images (busybox, nginx, pause), built offline from Debian packages"
scripts/images.sh target/images
cp -u target/images/*.tar "$data/agent/images/"   # imported by the node agent at start
if [ -f "$data/corten.pid" ] && kill -0 "$(cat "$data/corten.pid")" 2>/dev/null; then
  echo "==> corten is already running (pid $(cat "$data/corten.pid"))"
else
  echo "==> starting corten server (log: $data/corten.log)"
  nohup ${CARGO_TARGET_DIR:-target}/release/corten server --data-dir "$data" --https-listen-port "$port" >"$data/corten.log" 2>&1 &
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
echo -n "==> waiting for the node to be Ready"
for _ in $(seq 1 200); do
  if KUBECONFIG="$data/kubeconfig.yaml" kubectl get nodes 2>/dev/null | grep -q " Ready "; then
    echo " ready"
    break
  fi
  echo -n "."; sleep 0.5
done
cat <<MSG

corten is running: API server at https://127.0.0.1:$port
Use kubectl with it:
    export KUBECONFIG=$data/kubeconfig.yaml
    kubectl get nodes
    kubectl run web --image=docker.io/library/nginx:1.22 && kubectl get pods -o wide
Stop it (and its pods) with: scripts/down.sh
MSG

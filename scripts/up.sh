#!/usr/bin/env bash
# Installs what is missing, builds corten and the offline images, starts a single-node cluster
# (API server, controllers, scheduler, node agent on containerd, proxy, DNS) in the background,
# deploys the guestbook (examples/guestbook) and prints where it answers.
# Stop it with scripts/down.sh. Data lives in $CORTEN_DATA (default /var/lib/corten).
# CORTEN_NO_GUESTBOOK=1 starts the cluster without deploying the guestbook.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CORTEN_DATA:-/var/lib/corten}
port=${CORTEN_PORT:-6443}
scripts/deps.sh
echo "==> building corten (release; the first build takes several minutes)"
cargo build --release --locked -p corten
mkdir -p "$data/agent/images"
echo "==> images (pause, busybox, nginx, redis, the guestbook's backend), built offline from Debian packages"
scripts/images.sh target/images
bin=${CARGO_TARGET_DIR:-target}/release/corten
# The node agent imports every tarball in DATA_DIR/agent/images when it starts; a running one
# gets the new or changed tarballs imported now.
changed=()
for f in target/images/*.tar; do
  dst=$data/agent/images/${f##*/}
  if [ ! -f "$dst" ] || ! cmp -s "$f" "$dst"; then cp "$f" "$dst"; changed+=("$dst"); fi
done
if [ -f "$data/corten.pid" ] && kill -0 "$(cat "$data/corten.pid")" 2>/dev/null; then
  echo "==> corten is already running (pid $(cat "$data/corten.pid"))"
  if [ ${#changed[@]} -gt 0 ]; then
    echo "==> importing ${#changed[@]} new or changed image(s) into the running node"
    "$bin" images import --data-dir "$data" "${changed[@]}"
  fi
else
  echo "==> starting corten server (log: $data/corten.log)"
  nohup "$bin" server --data-dir "$data" --https-listen-port "$port" >"$data/corten.log" 2>&1 &
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
export KUBECONFIG=$data/kubeconfig.yaml
kubectl get nodes 2>/dev/null | grep -q " Ready " || { echo " the node is not Ready; see $data/corten.log" >&2; exit 1; }
node_ip=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')
if [ -z "${CORTEN_NO_GUESTBOOK:-}" ]; then
  echo "==> deploying the guestbook (kubectl apply -f examples/guestbook/)"
  kubectl apply -f examples/guestbook/
  echo "==> waiting for the guestbook's rollouts"
  for w in statefulset/redis deployment/backend deployment/frontend deployment/gateway; do
    kubectl -n guestbook rollout status "$w" --timeout=300s
  done
  echo -n "==> waiting for the guestbook to answer on http://$node_ip:8080/"
  for _ in $(seq 1 120); do
    if curl -fsS -o /dev/null --max-time 2 "http://$node_ip:8080/api/entries"; then echo " ok"; break; fi
    echo -n "."; sleep 0.5
  done
  curl -fsS -o /dev/null --max-time 2 "http://$node_ip:8080/api/entries" ||
    { echo " no answer; see kubectl -n guestbook get pods and $data/corten.log" >&2; exit 1; }
  guestbook="
The guestbook is running (namespace guestbook):
    http://$node_ip:8080/        the nginx gateway's LoadBalancer Service
    curl http://$node_ip:8080/api/entries
    curl -H 'Content-Type: application/json' -d '{\"text\": \"hello\"}' http://$node_ip:8080/api/entries
    kubectl -n guestbook get pods,services,statefulsets,pvc,ingress
    kubectl -n guestbook set image deployment/backend backend=localhost/guestbook-backend:v2
"
  if kubectl get ingressclass corten >/dev/null 2>&1; then
    echo -n "==> waiting for the guestbook's Ingress on http://$node_ip/"
    for _ in $(seq 1 60); do
      if curl -fsS -o /dev/null --max-time 2 "http://$node_ip/api/entries"; then echo " ok"; break; fi
      echo -n "."; sleep 0.5
    done
    if curl -fsS -o /dev/null --max-time 2 "http://$node_ip/api/entries"; then
      guestbook+="    http://$node_ip/             the same through the Ingress (ingress controller on port 80)
"
    else
      echo " no answer (is port 80 taken? see $data/corten.log)"
    fi
  fi
fi
cat <<MSG

corten is running: API server at https://127.0.0.1:$port
Use kubectl with it:
    export KUBECONFIG=$data/kubeconfig.yaml
    kubectl get nodes
    kubectl get pods -A -o wide
${guestbook:-}
Stop it (and its pods) with: scripts/down.sh
MSG

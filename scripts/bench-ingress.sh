#!/usr/bin/env bash
# Benchmarks the built-in ingress controller against nginx as a reverse proxy (issue 5):
# requests/s and latency percentiles with wrk through both, to the same backend pod (the
# nginx test image serving its welcome page), in the same run, one after the other, with
# the same load. Both proxies keep connections to the backend alive (nginx: an upstream
# with `keepalive`; corten: its connection pool) and log every request.
# Starts a private `corten server` (release build) in a temp dir on free ports and stops it
# (and its pods) at the end. Prints a Markdown table for docs/benchmarks.md.
#
# One run on two shared cores cannot tell a millisecond of p99 apart, so the two proxies are
# measured in ROUNDS alternating rounds (nginx, corten, nginx, corten, ...; default 5) and
# the table gives each round and the median of each column per proxy.
#
# Usage: scripts/bench-ingress.sh [DURATION_S] [CONNECTIONS]   (default 15 s, 64 connections)
# PROFILE=dev uses the dev build; ROUNDS=N the number of rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-15}
connections=${2:-64}
threads=2
rounds=${ROUNDS:-5}
scripts/deps.sh wrk nginx-light
scripts/images.sh >/dev/null
target=${CARGO_TARGET_DIR:-target}
if [ "${PROFILE:-release}" = release ]; then
  echo "==> building corten (release)"
  cargo build --release --locked -p corten
  bin=$target/release/corten
else
  cargo build --locked -p corten
  bin=$target/debug/corten
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
api_port=$(free_port); ingress_port=$(free_port); nginx_port=$(free_port); agent_port=$(free_port)
mkdir -p "$dir/agent/images"
cp target/images/{pause,busybox,nginx}.tar "$dir/agent/images/"
nginx_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  # A clean stop first: the service proxy removes its nftables table on the way out.
  if [ -n "${corten_pid:-}" ] && kill "$corten_pid" 2>/dev/null; then
    for _ in $(seq 1 150); do  # until it exits (an exited child stays a zombie until waited)
      grep -qs '^State:[[:space:]]*[^Z]' "/proc/$corten_pid/status" || break
      sleep 0.1
    done
    kill -9 "$corten_pid" 2>/dev/null || true
  fi
  "$bin" killall --data-dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
echo "==> starting corten server (data dir $dir)"
CORTEN_LOG=info "$bin" server --data-dir "$dir" --https-listen-port "$api_port" \
  --bind-address 127.0.0.1 --agent-port "$agent_port" \
  --ingress-http-port "$ingress_port" --ingress-https-port 0 >"$dir/server.log" 2>&1 &
corten_pid=$!
export KUBECONFIG=$dir/kubeconfig.yaml
for _ in $(seq 1 300); do
  kubectl get nodes 2>/dev/null | grep -q " Ready " && break
  sleep 0.3
done
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: backend, labels: {app: backend}}
spec:
  containers:
  - name: nginx
    image: docker.io/library/nginx:1.22
    readinessProbe: {httpGet: {path: /, port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: backend}
spec:
  rules:
  - http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]
YAML
kubectl wait --for=condition=Ready pod/backend --timeout=120s >/dev/null
pod_ip=$(kubectl get pod backend -o jsonpath='{.status.podIP}')
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ingress_port/" >/dev/null && break
  sleep 0.2
done

mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log $dir/nginx/access.log;
  upstream backend { server $pod_ip:80; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
nginx -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$nginx_port/" >/dev/null && break; sleep 0.1; done

# run NAME URL: wrk's requests/s and p50/p99 (ms), printed as "rps p50 p99 errors".
run() {
  wrk -t"$threads" -c"$connections" -d2s "$2" >/dev/null  # warm-up
  local out
  out=$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "$2")
  echo "$out" >"$dir/wrk-$1.txt"
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  echo "$rps $p50 $p99 ${errors:-none}"
}
ms() { case $1 in *us) awk -v v="${1%us}" 'BEGIN{printf "%.2f", v/1000}';; *ms) echo "${1%ms}";; *s) awk -v v="${1%s}" 'BEGIN{printf "%.2f", v*1000}';; esac; }

echo "==> wrk -t$threads -c$connections -d${duration}s, $rounds rounds: nginx (reverse proxy), then corten's ingress, alternating"
rows=""
: >"$dir/rounds.txt"
for r in $(seq 1 "$rounds"); do
  read -r n_rps n_p50 n_p99 n_err < <(run "nginx-$r" "http://127.0.0.1:$nginx_port/")
  read -r c_rps c_p50 c_p99 c_err < <(run "corten-$r" "http://127.0.0.1:$ingress_port/")
  echo "nginx $n_rps $(ms "$n_p50") $(ms "$n_p99")" >>"$dir/rounds.txt"
  echo "corten $c_rps $(ms "$c_p50") $(ms "$c_p99")" >>"$dir/rounds.txt"
  echo "    round $r: nginx $n_rps req/s p99 $(ms "$n_p99") ms; corten $c_rps req/s p99 $(ms "$c_p99") ms" >&2
  rows+="| $r | $n_rps | $(ms "$n_p50") / $(ms "$n_p99") ms | $n_err | $c_rps | $(ms "$c_p50") / $(ms "$c_p99") ms | $c_err |"$'\n'
done
corten_rss=$(awk '/VmRSS/ {print $2}' "/proc/$corten_pid/status")
# median PROXY COLUMN (2: requests/s, 3: p50, 4: p99) over the rounds.
median() { awk -v p="$1" -v c="$2" '$1 == p {print $c}' "$dir/rounds.txt" | sort -g | awk '{v[NR]=$1} END{printf "%s", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
n_rps=$(median nginx 2); c_rps=$(median corten 2)
n_p99=$(median nginx 4); c_p99=$(median corten 4)
rps_ratio=$(awk -v c="$c_rps" -v n="$n_rps" 'BEGIN{printf "%.2f", c/n}')
p99_ratio=$(awk -v c="$c_p99" -v n="$n_p99" 'BEGIN{printf "%.2f", c/n}')
cat <<TABLE

| round | nginx $(nginx -v 2>&1 | sed 's|.*/||') req/s | nginx p50 / p99 | nginx errors | corten req/s | corten p50 / p99 | corten errors |
|---|---|---|---|---|---|---|
${rows}| **median** | **$n_rps** | $(median nginx 3) / **$n_p99** ms | | **$c_rps** | $(median corten 3) / **$c_p99** ms | |

corten / nginx (medians over $rounds rounds): requests/s ${rps_ratio}× (target ≥ 1×), p99 ${p99_ratio}× (target ≤ 1×). nginx: reverse proxy with upstream keepalive; backend: nginx test image in a pod ($pod_ip); wrk -t$threads -c$connections -d${duration}s on the same machine, 2 s warm-up before each round; corten server RSS after the run: $((corten_rss / 1024)) MB.
TABLE

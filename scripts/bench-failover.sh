#!/usr/bin/env bash
# Failover benchmark: three `corten server`s (control plane only) on one etcd 3.4 on loopback;
# each trial kill -9s the leader (the holder of the Lease kube-system/corten-control-plane),
# scales a ReplicaSet up by one through a surviving server at the same instant, and measures
# the time until the ReplicaSet's status shows the new pod: the first reconciliation under the
# next leader. The killed server is started again (as a follower) before the next trial.
# Prints every trial and p50 / min / max; record the result in docs/benchmarks.md.
#
#   scripts/bench-failover.sh            # 10 trials, dev build
#   TRIALS=5 PROFILE=release scripts/bench-failover.sh
#
# Extra environment: LEASE (default 15s), RENEW (10s), RETRY (2s): the --leader-elect-* flags.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${TRIALS:-10}
profile=${PROFILE:-dev}
lease=${LEASE:-15s} renew=${RENEW:-10s} retry=${RETRY:-2s}
target=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build --release --locked -p corten
  bin=$target/release/corten
else
  cargo build --locked -p corten
  bin=$target/debug/corten
fi
for tool in etcd curl jq; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/deps.sh etcd-server)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/bench-failover.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

etcd_port=$(free_port) peer_port=$(free_port)
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$peer_port" --log-level warn >"$work/etcd.log" 2>&1 &
pids+=($!)
disown "$!"
endpoint="http://127.0.0.1:$etcd_port"
until etcdctl --endpoints "$endpoint" endpoint health >/dev/null 2>&1; do sleep 0.1; done

declare -a port pid
start_server() { # index [extra flags...]
  local i=$1; shift
  "$bin" server --disable-agent --data-dir "$work/s$i" --bind-address 127.0.0.1 \
    --https-listen-port "${port[$i]}" --datastore-endpoint "$endpoint" \
    --leader-elect-lease-duration "$lease" --leader-elect-renew-deadline "$renew" \
    --leader-elect-retry-period "$retry" "$@" >>"$work/s$i.log" 2>&1 &
  pid[$i]=$!
  pids+=($!)
  disown "${pid[$i]}" # no "Killed" notice from bash for the kill -9s
  until [ -f "$work/s$i/kubeconfig.yaml" ] && curl -sf --cacert "$work/s$i/tls/ca.crt" \
      "https://127.0.0.1:${port[$i]}/readyz" >/dev/null 2>&1; do
    kill -0 "${pid[$i]}" 2>/dev/null || { echo "server $i exited:" >&2; tail -5 "$work/s$i.log" >&2; exit 1; }
    sleep 0.1
  done
}
for i in 0 1 2; do port[$i]=$(free_port); done
start_server 0
token=$(cat "$work/s0/token")
start_server 1 --token "$token"
start_server 2 --token "$token"
ca=$work/s0/tls/ca.crt
admin=$(cat "$work/s0/tls/admin.token")
api() { # index method path [body]
  curl -sf --max-time 2 --cacert "$ca" -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/merge-patch+json' -X "$2" "https://127.0.0.1:${port[$1]}$3" ${4:+-d "$4"}
}
leader() { # the index of the server whose log names the Lease's holder
  local holder
  holder=$(api "$1" GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/corten-control-plane \
    | jq -r '.spec.holderIdentity // empty')
  [ -n "$holder" ] || return 1
  for i in 0 1 2; do grep -q "identity.*$holder" "$work/s$i.log" && { echo "$i"; return 0; }; done
  return 1
}

api 0 POST /apis/apps/v1/namespaces/default/replicasets '{"apiVersion":"apps/v1","kind":"ReplicaSet",
  "metadata":{"name":"bench"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"bench"}},
  "template":{"metadata":{"labels":{"app":"bench"}},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}' >/dev/null
replicas() { api "$1" GET /apis/apps/v1/namespaces/default/replicasets/bench | jq -r '.status.replicas // 0'; }

results=()
want=1
for t in $(seq 1 "$trials"); do
  # A settled cluster: one leader, the ReplicaSet reconciled.
  until l=$(leader 0 2>/dev/null || leader 1 2>/dev/null || leader 2) && [ "$(replicas "$(( (l + 1) % 3 ))")" = "$want" ]; do sleep 0.2; done
  via=$(( (l + 1) % 3 ))
  sleep 1
  want=$((want + 1))
  t0=$(now)
  kill -9 "${pid[$l]}"
  api "$via" PATCH /apis/apps/v1/namespaces/default/replicasets/bench "{\"spec\":{\"replicas\":$want}}" >/dev/null
  until [ "$(replicas "$via")" = "$want" ]; do sleep 0.05; done
  t1=$(now)
  d=$(echo "$t1 - $t0" | bc -l)
  results+=("$d")
  printf 'trial %2d: leader %d killed, ReplicaSet scaled to %d after %.2f s\n' "$t" "$l" "$want" "$d"
  while kill -0 "${pid[$l]}" 2>/dev/null; do sleep 0.05; done
  start_server "$l" --token "$token"
done
printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {
  p50 = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2;
  printf "failover (kill -9 of the leader -> ReplicaSet scale acted on), %d trials: p50 %.2f s, min %.2f s, max %.2f s\n", NR, p50, a[1], a[NR] }'
echo "build: $profile ($bin); lease $lease, renew deadline $renew, retry $retry"

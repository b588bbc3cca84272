#!/usr/bin/env bash
# Verifies the images of scripts/images.sh for real: builds them (if stale), starts a private
# containerd (root, state and socket in a temporary directory; CRI's sandbox_image is our pause
# image), imports every tarball with `ctr -n k8s.io images import`, and runs each image with
# runc: pause (stops with 0 on SIGTERM, reaps zombies as PID 1 of a shared PID namespace),
# busybox (applets, users), nginx (`nginx -t`, serves the welcome page in its own network
# namespace, workers as www-data, busybox sh/wget/tar inside, stops on SIGQUIT), redis (serves
# PING and SET/GET with a password, appends to its AOF) and the guestbook backend (python runs
# as uid 10001, serves /healthz, reports its version).
# Everything it created (containers, mounts, processes, the temporary directory) is removed on
# exit. Usage: scripts/images-check.sh [IMAGES_DIR]   (default target/images). Run as root.
set -euo pipefail
export LC_ALL=C
root=$(cd "$(dirname "$0")/.." && pwd)
images=${1:-$root/target/images}

"$root/scripts/images.sh" "$images"
images=$(cd "$images" && pwd)
command -v containerd >/dev/null && command -v runc >/dev/null && command -v ctr >/dev/null \
  || "$root/scripts/deps.sh" containerd runc

tmp=$(mktemp -d /tmp/corten-images-check.XXXXXX)
sock=$tmp/containerd.sock
run_dir_existed=false; [ -d /run/containerd ] && run_dir_existed=true
containerd_pid=
ids=()
failures=0

ctr() { command ctr --address "$sock" -n k8s.io "$@"; }
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*"; failures=$((failures + 1)); }
# task_pid ID: the host PID of a running container's init process.
task_pid() { ctr task ls | awk -v id="$1" '$1 == id {print $2}'; }

cleanup() {
  set +e
  local id pid m
  for id in "${ids[@]}"; do
    ctr task kill -s SIGKILL "$id" >/dev/null 2>&1
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      ctr task ls 2>/dev/null | awk -v id="$id" '$1 == id && $3 == "RUNNING" {f=1} END {exit !f}' || break
      sleep 0.2
    done
    ctr task delete "$id" >/dev/null 2>&1
    ctr container delete "$id" >/dev/null 2>&1
  done
  if [ -n "$containerd_pid" ]; then kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null; fi
  # Shims left behind (only if a task could not be deleted): they carry our socket's path.
  for pid in $(pgrep -f -- "-address $sock" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  # Mounts under the temporary root (container rootfs overlays, if any remain), deepest first.
  for m in $(findmnt -rn -o TARGET | grep -F "$tmp/" | sort -r); do umount -R "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf "$tmp"
  # containerd 1.6 keeps shim sockets under /run/containerd/s whatever its state dir: drop the
  # empty directories it made there if there was no /run/containerd before.
  $run_dir_existed || find /run/containerd -depth -type d -empty -delete 2>/dev/null
}
trap cleanup EXIT

mkdir -p "$tmp/root" "$tmp/state" "$tmp/opt" "$tmp/runc"
cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$tmp/opt"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.10"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
echo "==> starting a private containerd ($(containerd --version | awk '{print $3}'), log $tmp/containerd.log)"
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 1 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
ctr version >/dev/null || { cat "$tmp/containerd.log" >&2; echo "containerd did not start" >&2; exit 1; }

echo "==> importing"
declare -A want=([pause.tar]=registry.k8s.io/pause:3.10 [busybox.tar]=docker.io/library/busybox:1.35
                 [nginx.tar]=docker.io/library/nginx:1.22 [redis.tar]=docker.io/library/redis:7.0
                 [guestbook-backend-v1.tar]=localhost/guestbook-backend:v1
                 [guestbook-backend-v2.tar]=localhost/guestbook-backend:v2)
for f in "${!want[@]}"; do
  ctr images import "$images/$f" | sed 's/^/  /'
done
ctr images ls | awk 'NR > 1 {print "  " $1, $4 $5, $6}'
for f in "${!want[@]}"; do
  if ctr images ls -q | grep -qx "${want[$f]}"; then pass "$f imported as ${want[$f]}"; else fail "$f: ${want[$f]} not listed"; fi
done
for ref in "${want[@]}"; do
  ctr images check "name==$ref" | grep -q complete && pass "$ref content complete" || fail "$ref content incomplete"
done

# run_rm ID IMAGE ARGS...: runs a container to completion (removed afterwards), prints its output.
# (Killed after 30 s so that a hung container cannot hang the check; cleanup removes it.)
run_rm() {
  local id=$1; shift; ids+=("$id")
  timeout -s KILL 30 ctr --address "$sock" -n k8s.io run --rm --runc-root "$tmp/runc" "$@" </dev/null
}

echo "==> pause"
ids+=(chk-pause)
ctr run -d --runc-root "$tmp/runc" registry.k8s.io/pause:3.10 chk-pause >/dev/null
sleep 0.3
pause_pid=$(task_pid chk-pause)
[ -n "$pause_pid" ] && pass "pause is running (host pid $pause_pid)" || fail "pause did not start"
# A second container in pause's PID namespace leaves an orphan that exits: pause, PID 1 there,
# must reap it. `ps` then lists pause as PID 1 and no zombie (state Z).
ps_out=$(run_rm chk-zombie --with-ns "pid:/proc/$pause_pid/ns/pid" docker.io/library/busybox:1.35 \
  chk-zombie sh -c '(sleep 0.5 &); sleep 1.5; ps -o pid,stat,comm')
echo "$ps_out" | sed 's/^/  | /'
echo "$ps_out" | grep -qE '^ *1 +S +pause' && pass "pause is PID 1 of the shared PID namespace" \
  || fail "pause is not PID 1 of the shared namespace"
echo "$ps_out" | awk '$2 ~ /^Z/ {z=1} END {exit !z}' && fail "a zombie was left unreaped" \
  || pass "the orphan was reaped (no zombie)"
ctr task delete -f chk-pause >/dev/null 2>&1; ctr container delete chk-pause >/dev/null 2>&1
# SIGTERM ends it with status 0 (ctr run in the foreground exits with the container's status).
ids+=(chk-pause-term)
ctr run --rm --runc-root "$tmp/runc" registry.k8s.io/pause:3.10 chk-pause-term </dev/null &
fg=$!
for _ in $(seq 1 50); do [ -n "$(task_pid chk-pause-term)" ] && break; sleep 0.1; done
sleep 0.2
ctr task kill -s SIGTERM chk-pause-term
rc=0; wait "$fg" || rc=$?
[ "$rc" = 0 ] && pass "pause exits 0 on SIGTERM" || fail "pause exited $rc on SIGTERM"

echo "==> busybox"
out=$(run_rm chk-busybox docker.io/library/busybox:1.35 chk-busybox \
  sh -c 'echo ok; ls /bin | wc -l; id; grep -c . /etc/passwd; ls -ld /tmp; echo $PATH')
echo "$out" | sed 's/^/  | /'
[ "$(echo "$out" | head -1)" = ok ] && pass "sh -c runs" || fail "sh -c did not run"
[ "$(echo "$out" | sed -n 2p)" -gt 250 ] && pass "$(echo "$out" | sed -n 2p) entries in /bin" || fail "too few applets in /bin"
echo "$out" | grep -q '^uid=0(root) gid=0(root)' && pass "runs as root, /etc/passwd resolves" || fail "id: $(echo "$out" | sed -n 3p)"
echo "$out" | grep -q '^drwxrwxrwt' && pass "/tmp is 1777" || fail "/tmp mode"
# No arguments: the image's Cmd (sh) reads the script from stdin (ctr passes no EOF: it exits).
ids+=(chk-busybox-cmd)
out=$(printf 'echo default-cmd-is-sh\nexit 0\n' | timeout -s KILL 30 ctr --address "$sock" -n k8s.io \
  run --rm --runc-root "$tmp/runc" docker.io/library/busybox:1.35 chk-busybox-cmd || true)
[ "$out" = default-cmd-is-sh ] && pass "the default command is sh" || fail "default command: $out"

echo "==> nginx"
out=$(run_rm chk-nginx-t docker.io/library/nginx:1.22 chk-nginx-t nginx -t 2>&1)
echo "$out" | sed 's/^/  | /'
echo "$out" | grep -q 'test is successful' && pass "nginx -t" || fail "nginx -t"
# The image's own command, in a network namespace of its own (no host port is used).
ids+=(chk-nginx)
ctr run -d --runc-root "$tmp/runc" --log-uri "file://$tmp/nginx.log" docker.io/library/nginx:1.22 chk-nginx >/dev/null
nginx_pid=
for _ in $(seq 1 50); do nginx_pid=$(task_pid chk-nginx); [ -n "$nginx_pid" ] && break; sleep 0.1; done
page=
for _ in $(seq 1 50); do
  page=$(nsenter -t "$nginx_pid" -n curl -fsS http://127.0.0.1:80/ 2>/dev/null) && break; sleep 0.1
done
echo "$page" | grep -q '<h1>Welcome to nginx!</h1>' && pass "curl http://127.0.0.1:80/ in the container's netns: Welcome to nginx!" \
  || fail "nginx did not serve the welcome page"
code=$(nsenter -t "$nginx_pid" -n curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/missing || true)
[ "$code" = 404 ] && pass "a missing page is 404" || fail "missing page: $code"
out=$(ctr task exec --exec-id e1 chk-nginx sh -c \
  'wget -qO- http://127.0.0.1/ | grep -c "Welcome to nginx"; ps -o user,comm | grep nginx; tar cf - /etc/nginx 2>/dev/null | tar tf - | wc -l' </dev/null)
echo "$out" | sed 's/^/  | /'
[ "$(echo "$out" | head -1)" -ge 1 ] && pass "busybox sh and wget inside the nginx image" || fail "wget inside nginx"
echo "$out" | grep -qE '^root +nginx' && echo "$out" | grep -qE '^www-data +nginx' \
  && pass "master runs as root, workers as www-data" || fail "nginx process users"
[ "$(echo "$out" | tail -1)" -gt 5 ] && pass "tar works (kubectl cp)" || fail "tar inside nginx"
ctr task kill -s SIGQUIT chk-nginx
for _ in $(seq 1 50); do
  ctr task ls | awk '$1 == "chk-nginx" && $3 == "STOPPED" {f=1} END {exit !f}' && break; sleep 0.1
done
ctr task ls | awk '$1 == "chk-nginx" && $3 == "STOPPED" {f=1} END {exit !f}' \
  && pass "SIGQUIT stops it" || fail "nginx still running after SIGQUIT"
grep -q '"GET / HTTP/1.1" 200' "$tmp/nginx.log" && pass "access log goes to the container's stdout" \
  || fail "no access log line on stdout"

echo "==> redis"
out=$(run_rm chk-redis docker.io/library/redis:7.0 chk-redis sh -c '
  redis-server --port 6390 --requirepass pw --appendonly yes --appendfsync always --dir /tmp --daemonize yes >/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p 6390 -a pw --no-auth-warning ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
  redis-cli -p 6390 ping 2>&1 | head -1
  redis-cli -p 6390 -a pw --no-auth-warning set k v >/dev/null
  redis-cli -p 6390 -a pw --no-auth-warning get k
  ls /tmp/appendonlydir | grep -c aof' 2>&1)
echo "$out" | sed 's/^/  | /'
echo "$out" | head -1 | grep -q NOAUTH && pass "redis-server needs the password" || fail "redis without password: $(echo "$out" | head -1)"
[ "$(echo "$out" | sed -n 2p)" = v ] && pass "SET/GET with the password" || fail "redis SET/GET"
[ "$(echo "$out" | sed -n 3p)" -ge 1 ] && pass "the AOF is written" || fail "no AOF files"

echo "==> guestbook backend"
# The image's own command (python3 /app/guestbook.py), without Redis: /healthz answers, the API
# says 503 with the version header, SIGTERM stops it.
for v in v1 v2; do
  id=chk-backend-$v; ids+=("$id")
  ctr run -d --runc-root "$tmp/runc" "localhost/guestbook-backend:$v" "$id" >/dev/null
  n=0 out=
  for _ in $(seq 1 50); do
    n=$((n + 1))
    out=$(ctr task exec --exec-id "h$n" "$id" wget -qO- http://127.0.0.1:8080/healthz 2>/dev/null </dev/null) && break
    sleep 0.1
  done
  [ "$out" = ok ] && pass "$v serves /healthz" || fail "$v /healthz: $out"
  out=$(ctr task exec --exec-id ps "$id" ps -o user,comm </dev/null)
  echo "$out" | grep -qE '^(guestboo?k?|10001) +python3' && pass "$v runs python3 as uid 10001" || fail "$v user: $out"
  out=$(ctr task exec --exec-id api "$id" sh -c \
    'printf "GET /api/entries HTTP/1.0\r\n\r\n" | nc 127.0.0.1 8080' 2>&1 </dev/null || true)
  echo "$out" | grep -q '503' && echo "$out" | grep -qi "x-guestbook-version: $v" \
    && pass "$v reports its version (503 without Redis)" || fail "$v API: $out"
  ctr task kill -s SIGTERM "$id"
  for _ in $(seq 1 50); do
    ctr task ls | awk -v id="$id" '$1 == id && $3 == "STOPPED" {f=1} END {exit !f}' && break; sleep 0.1
  done
  ctr task ls | awk -v id="$id" '$1 == id && $3 == "STOPPED" {f=1} END {exit !f}' \
    && pass "$v stops on SIGTERM" || fail "$v still running after SIGTERM"
done

echo
if [ "$failures" -eq 0 ]; then echo "images-check: all checks passed"; else echo "images-check: $failures check(s) failed"; exit 1; fi

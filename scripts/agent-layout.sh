#!/usr/bin/env bash
# Regenerates crates/corten/layout/agent.order, the list of functions the node agent runs, which
# crates/corten/build.rs hands to the linker (--symbol-ordering-file) so that they sit together
# at the start of .text (issue 3: the agent's RSS is mostly code pages of the one binary).
#
# Why: the kernel maps code 64 KB at a time around each touched page (fault-around) when the
# file is in the page cache, as a freshly built or much-used binary is. With the agent's code
# spread over the 30+ MB .text, that maps most of it; packed together, only the packed range.
#
# How (root, Linux; needs kubectl, python3, nm, llvm-readelf or readelf, losetup, mkfs.ext4):
#  1. builds the release binary (or takes BIN, the first argument: it must be built with the
#     release profile, as the names are the symbols of that build);
#  2. copies it onto a small ext4 image, loop-mounted with read_ahead_kb=0 and mounted afresh so
#     that none of it is cached: the agent started from that copy then gets exactly the 4 KB
#     pages it touches (fault-around maps only cached pages, and nothing but the touched pages is
#     read: no readahead);
#  3. starts `corten server --disable-agent` (from BIN) and `corten agent` (from the copy) with
#     the test images (scripts/images.sh), waits for the node, creates 100 busybox pods at once,
#     waits until they are Ready, then deletes them and waits until they are gone (so that the
#     teardown paths are in the list too);
#  4. reads the present pages of the copy's executable mapping from /proc/PID/pagemap and writes
#     every function (nm) that overlaps one of them, in address order, to the order file.
# The list is at page granularity (a superset of what runs). Names that a later build no longer
# has are skipped by the linker: a stale list costs memory, never correctness; rerun this script
# after large changes to the agent's code or a toolchain update (it prints how much of the
# current list matched).
#
# Holds /tmp/corten-agent-tests.lock (the agent end-to-end tests' lock) while the agent runs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
order=$repo/crates/corten/layout/agent.order
pods=${PODS:-100}
target=${CARGO_TARGET_DIR:-target}
if [ $# -ge 1 ]; then
  bin=$(readlink -f "$1")
else
  echo "==> building corten (release)"
  cargo build --release --locked -p corten
  bin=$(readlink -f "$target/release/corten")
fi
images=$repo/target/images
[ -f "$images/busybox.tar" ] || scripts/images.sh
readelf=$(command -v llvm-readelf || command -v readelf)

work=$(mktemp -d /var/tmp/corten-layout-XXXXXX)
loop=
spid=
apid=
nft_before=$(nft list tables 2>/dev/null || true)
cleanup() {
  set +e
  if [ -n "$spid" ]; then
    KUBECONFIG=$work/server/kubeconfig.yaml timeout 60 kubectl delete pods --all --wait=false >/dev/null 2>&1
  fi
  for p in $apid $spid; do
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  [ -d "$work/agent" ] && timeout 120 "$bin" killall --data-dir "$work/agent" >/dev/null 2>&1
  for p in $(pgrep -f "$work/agent" || true); do kill -KILL "$p" 2>/dev/null; done
  grep " $work/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ -n "$loop" ] && losetup -d "$loop"
  nft list tables 2>/dev/null | while read -r t; do
    grep -qxF "$t" <<<"$nft_before" || nft delete $t
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> copying $bin onto an uncached, no-readahead file system"
truncate -s $(($(stat -c %s "$bin") / 1048576 + 64))M "$work/fs.img"
mkfs.ext4 -q -F "$work/fs.img"
loop=$(losetup -f --show "$work/fs.img")
mkdir -p "$work/mnt"
mount "$loop" "$work/mnt"
cp "$bin" "$work/mnt/corten"
umount "$work/mnt"
echo 0 >"/sys/block/$(basename "$loop")/queue/read_ahead_kb"
mount "$loop" "$work/mnt"
copy=$work/mnt/corten

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
agent_port=$(free_port)
mkdir -p "$work/server" "$work/agent/agent/images"
cp "$images/pause.tar" "$images/busybox.tar" "$work/agent/agent/images/"
export KUBECONFIG=$work/server/kubeconfig.yaml

exec 9>/tmp/corten-agent-tests.lock
echo "==> waiting for /tmp/corten-agent-tests.lock"
flock 9
echo "==> starting corten server and corten agent (the agent from the copy)"
CORTEN_LOG=warn "$bin" server --data-dir "$work/server" --https-listen-port "$port" \
  --bind-address 127.0.0.1 --disable-agent >/dev/null 2>"$work/server.log" 9>&- &
spid=$!
for _ in $(seq 600); do
  [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
CORTEN_LOG=warn "$copy" agent --server "https://127.0.0.1:$port" --token-file "$work/server/token" \
  --data-dir "$work/agent" --node-name layout-node --node-ip 127.0.0.1 --agent-port "$agent_port" \
  >/dev/null 2>"$work/agent.log" 9>&- &
apid=$!
for _ in $(seq 600); do kubectl get node layout-node >/dev/null 2>&1 && break; sleep 0.2; done
kubectl wait --for=condition=Ready node/layout-node --timeout=120s >/dev/null
echo "==> $pods pods at once"
for i in $(seq 1 "$pods"); do
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: layout-%d}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: "docker.io/library/busybox:1.35", command: [sleep, "3600"]}]\n---\n' "$i"
done | kubectl create -f - >/dev/null
kubectl wait --for=condition=Ready pod --all --timeout=300s >/dev/null
sleep 5
echo "==> deleting them"
kubectl delete pods --all --timeout=300s >/dev/null
sleep 5
kill -0 "$apid"

echo "==> reading the agent's code pages"
python3 - "$apid" "$copy" "$order" "$readelf" <<'PY'
import os, struct, subprocess, sys

pid, path, out, readelf = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], sys.argv[4]
page = os.sysconf("SC_PAGE_SIZE")
text = None
for line in subprocess.run([readelf, "-S", "-W", path], capture_output=True, text=True, check=True).stdout.splitlines():
    f = line.replace("[ ", "[").split()
    if len(f) > 5 and f[1] == ".text":
        text = int(f[3], 16), int(f[4], 16), int(f[5], 16)  # address, file offset, size
addr, offset, size = text
present = set()
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
    for line in maps:
        f = line.split()
        if len(f) < 6 or f[5] != path or "x" not in f[1]:
            continue
        start, end = (int(x, 16) for x in f[0].split("-"))
        file_offset = int(f[2], 16)
        pagemap.seek(start // page * 8)
        entries = pagemap.read((end - start) // page * 8)
        for i in range((end - start) // page):
            if struct.unpack_from("<Q", entries, i * 8)[0] >> 63:  # present
                present.add(addr + file_offset + i * page - offset)
symbols = []
nm = subprocess.run(["nm", "--defined-only", "-S", path], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    f = line.split()
    if len(f) != 4 or f[2] not in "tTW":
        continue
    a, n = int(f[0], 16), int(f[1], 16)
    if n and any(p in present for p in range(a // page * page, a + n, page)):
        symbols.append((a, n, f[3]))
symbols.sort()
old = set()
if os.path.exists(out):
    old = set(open(out).read().split())
names, seen = [], set()
for _, _, name in symbols:
    if name not in seen:
        seen.add(name)
        names.append(name)
with open(out, "w") as o:
    o.write("".join(n + "\n" for n in names))
print(f"agent code pages touched: {len(present)} of {size // page} ({len(present) * page >> 20} MB)")
print(f"functions on them: {len(names)}, {sum(n for _, n, _ in symbols) >> 20} MB -> {out}")
if old:
    print(f"of the previous list's {len(old)} names, {len(old & seen)} are in the new one")
PY

#!/usr/bin/env bash
# Installs the Debian packages corten's scripts and tests need, if missing (idempotent, no prompts).
# Extra package names given as arguments are installed too (scripts/bench.sh adds etcd-server).
set -euo pipefail
# protoc + well-known protos: the CRI and etcd clients; containerd, runc, the CNI plugins and
# iptables (bridge masquerade): the node agent; busybox-static, nginx-light, gcc, redis-server,
# python3.11: scripts/images.sh (the test images and the guestbook's); etcd-server and
# etcd-client (etcdctl): the etcd datastore tests.
packages=(curl jq ca-certificates protobuf-compiler libprotobuf-dev
  containerd runc containernetworking-plugins iptables nftables iproute2
  busybox-static nginx-light gcc libc6-dev redis-server python3.11 etcd-server etcd-client "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c 'import kubernetes' 2>/dev/null || {
  echo "==> installing the official kubernetes Python client (tests use it)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes; }
command -v kubectl >/dev/null || { echo "kubectl is required (the stock kubectl v1.32 is expected at /usr/bin/kubectl)" >&2; exit 1; }
command -v cargo-nextest >/dev/null || cargo nextest --version >/dev/null 2>&1 || {
  echo "==> installing cargo-nextest"; cargo install --locked cargo-nextest >/dev/null; }

#!/usr/bin/env bash
# Benchmarks the API server on its embedded store against the same server on etcd 3.4 (Debian's
# etcd-server, installed if missing), same run, same machine: pod creates/s and watch latency
# (method: crates/bench/src/backends.rs), recorded in docs/benchmarks.md.
# PROFILE=dev builds and runs the dev profile instead of release (the dated run says which).
# Extra arguments go to corten-bench, e.g. `--objects 5000 --no-docs`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh etcd-server
etcd_bin=$(command -v etcd || true)
[ -n "$etcd_bin" ] || { echo "etcd not found after installing etcd-server" >&2; exit 1; }
. scripts/bench-build.sh
exec "$dir/corten-bench" datastore --corten-bin "$dir/corten" --etcd-bin "$etcd_bin" "$@"

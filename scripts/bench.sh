#!/usr/bin/env bash
# Benchmarks corten and records the results (docs/benchmarks.md): installs what is missing
# (etcd 3.4 from Debian's etcd-server as the comparison peer; protoc and the well-known protos
# for the etcd client), builds the release binaries and runs `corten-bench all`.
# Takes about 10 minutes on 2 cores.
# Extra arguments go to corten-bench, e.g. `scripts/bench.sh --no-docs` or `--kind configmap`
# (see `corten-bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh etcd-server
etcd_bin=$(command -v etcd || true)
[ -n "$etcd_bin" ] || { echo "etcd not found after installing etcd-server" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
echo "==> building corten and corten-bench (release)"
cargo build --release --locked -p corten -p bench
echo "==> running corten-bench all (results: stdout and docs/benchmarks.md)"
exec "$target/release/corten-bench" all --corten-bin "$target/release/corten" --etcd-bin "$etcd_bin" "$@"

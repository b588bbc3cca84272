#!/usr/bin/env bash
# Benchmarks the service proxy and records the results (docs/benchmarks.md): nft transaction
# time as services grow, and the time from an EndpointSlice change to its rule being live with
# 1,000 services and 10,000 endpoints (method: crates/bench/src/proxy.rs). Needs root and nft
# (installed if missing). Takes about 2 minutes.
# PROFILE=dev builds and runs the dev profile instead of release (as the dated runs in
# docs/benchmarks.md say). Extra arguments go to corten-bench, e.g. `--no-docs`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh nftables
. scripts/bench-build.sh
exec "$dir/corten-bench" proxy --corten-bin "$dir/corten" "$@"

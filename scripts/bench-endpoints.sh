#!/usr/bin/env bash
# Benchmarks how fast a pod's readiness change reaches its Service's EndpointSlice and
# Endpoints through corten's controllers (issue 4's target: p99 <= 100 ms) and records the
# results in docs/benchmarks.md (method: crates/bench/src/endpoints.rs). Takes about 30 s after
# the build. PROFILE=dev builds and runs the dev profile instead of release. Extra arguments go
# to corten-bench, e.g. `--no-docs`, `--endpoint-pods 200`, `--flips 500`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-build.sh
exec "$dir/corten-bench" endpoints --corten-bin "$dir/corten" "$@"

#!/usr/bin/env bash
# Benchmarks the scheduler and controllers on simulated nodes (issue 4) and records the results
# in docs/benchmarks.md: scheduler throughput creation -> bound for 10,000 pods on 5,000
# simulated nodes with the API server and store in the loop, the control plane's RSS there,
# and a Deployment of 1,000 replicas on 100 simulated nodes (time until available, then a
# rollout of a new image). Builds the release binaries, then runs `corten-bench sched`. Extra
# arguments go to corten-bench (e.g. --no-docs, --sim-nodes 500 --objects 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
echo "==> building corten and corten-bench (release)"
cargo build --release --locked -p corten -p bench
echo "==> running corten-bench sched (results: stdout and docs/benchmarks.md)"
exec "$target/release/corten-bench" sched --corten-bin "$target/release/corten" "$@"

#!/usr/bin/env bash
# Benchmarks the node agent (issue 3) and records the results in docs/benchmarks.md: pod
# startup latency (creation to Ready, image present; 100 pods one at a time, then all at once)
# against the raw CRI floor measured in the same run on the same containerd, and the agent's
# RSS with 0 and 100 pods. Installs what is missing, builds the test images and the release
# binaries, then runs `corten-bench pods`. Extra arguments go to corten-bench (e.g. --no-docs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/images.sh
target=${CARGO_TARGET_DIR:-target}
echo "==> building corten and corten-bench (release)"
cargo build --release --locked -p corten -p bench
echo "==> running corten-bench pods (results: stdout and docs/benchmarks.md)"
exec "$target/release/corten-bench" pods --corten-bin "$target/release/corten" --images-dir target/images "$@"

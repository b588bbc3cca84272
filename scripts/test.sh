#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings denied), unit tests and end-to-end tests
# that drive the real `corten` binary with the stock kubectl. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "==> test images (scripts/images.sh)"
scripts/images.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> building"
cargo build --workspace --all-targets --locked
echo "==> tests"
cargo nextest run --workspace --locked --no-fail-fast
echo "==> all tests passed"

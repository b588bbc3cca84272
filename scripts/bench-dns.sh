#!/usr/bin/env bash
# Benchmarks cluster DNS and records the results (docs/benchmarks.md): queries/s and p99 under
# closed-loop UDP load from a second process, against dnsmasq (Debian's dnsmasq-base, installed
# if missing) serving the same names in the same run, and the time until a new service
# resolves (method: crates/bench/src/dns.rs). Takes about 30 s after the build.
# PROFILE=dev builds and runs the dev profile instead of release (as the dated runs in
# docs/benchmarks.md say). Extra arguments go to corten-bench, e.g. `--no-docs`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh dnsmasq-base
. scripts/bench-build.sh
exec "$dir/corten-bench" dns --corten-bin "$dir/corten" "$@"

#!/usr/bin/env bash
# Switchboard's benchmark harness, in one command:
#
#   bench/run.sh            full run, ~21 minutes: every variant, every workload, 2 rounds
#   bench/run.sh --quick    smoke run, ~3 minutes (0.8 s per cell, one round)
#   bench/run.sh --help     options: --only VARIANTS, --workloads, --duration, --no-pin, ...
#
# Builds Switchboard and the bench programs in release mode, installs h2load (Debian
# nghttp2-client) for the cross-check when it is missing, then runs bench-run, which starts
# the backend, the baselines and Switchboard on loopback, pins them with taskset, drives them
# with bench-load, and writes bench/RESULTS.md (raw figures: bench/target/bench-run/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if ! command -v h2load >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing h2load (Debian nghttp2-client)" >&2
    apt-get install -y -qq nghttp2-client >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1; } ||
      echo "run.sh: could not install h2load; its cross-check is skipped" >&2
  else
    echo "run.sh: h2load not found (apt-get install nghttp2-client); its cross-check is skipped" >&2
  fi
fi
if ! command -v taskset >/dev/null 2>&1; then
  echo "run.sh: taskset (util-linux) not found; processes will not be pinned" >&2
fi

sb_target="${CARGO_TARGET_DIR:-$root/target}"
bench_target="${CARGO_TARGET_DIR:-$here/target}"
echo "run.sh: building switchboard and the bench programs (release)" >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin switchboard
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
BENCH_COMMAND="bench/run.sh${*:+ $*}" \
  exec "$bench_target/release/bench-run" --switchboard "$sb_target/release/switchboard" "$@"

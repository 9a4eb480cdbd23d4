#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a while, from the seed corpus:
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 30 s, every target)
# Prints one summary line per target and exits non-zero if any target found a crash; the
# crashing input is kept under fuzz/artifacts/TARGET/. New inputs found along the way go to
# fuzz/target/corpus/ (not committed); promote a useful one into fuzz/corpus/TARGET/ by hand.
#
# The machine has only the stable toolchain. cargo-fuzz passes unstable compiler flags
# (-Zsanitizer, the sanitizer-coverage passes); RUSTC_BOOTSTRAP=1 lets stable rustc take them.
# The build is without AddressSanitizer (the crate forbids unsafe code, so ASan would mostly
# watch dependencies) and with 16 codegen units, to keep the build within CI's budget;
# `cargo fuzz run TARGET` (ASan, one codegen unit) is the thorough local run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

say() { printf '==> %s\n' "$*" >&2; }

SECONDS_PER_TARGET="${1:-30}"
shift || true
if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^switchboard-fuzz$')
fi

# cargo-fuzz, once per machine (the version the scripts were written against).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  say "cargo install --locked cargo-fuzz@$CARGO_FUZZ_VERSION"
  # A debug build of the driver installs in half the time; its speed does not matter.
  cargo install --locked --debug --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

export RUSTC_BOOTSTRAP=1
BUILD_FLAGS=(--sanitizer none --codegen-units 16)
start=$(date +%s)
say "cargo fuzz build ${BUILD_FLAGS[*]} (${#TARGETS[@]} targets)"
cargo fuzz build "${BUILD_FLAGS[@]}"
say "built in $(($(date +%s) - start)) s"

BIN_DIR="$ROOT/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
RUN_DIR="$ROOT/fuzz/target/runs"
mkdir -p "$RUN_DIR"

# One target: a fresh working corpus seeded from fuzz/corpus/TARGET, libFuzzer for the given
# time, then one summary line from its final statistics.
run_target() {
  local t="$1" work="$ROOT/fuzz/target/corpus/$1" artifacts="$ROOT/fuzz/artifacts/$1"
  local log="$RUN_DIR/$t.log"
  mkdir -p "$work" "$artifacts"
  local status=0
  "$BIN_DIR/$t" "$work" "$ROOT/fuzz/corpus/$t" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  local execs cov ft corpus
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  corpus=$(find "$work" -type f | wc -l)
  if [ "$status" = 0 ]; then
    printf 'fuzz %-20s ok     %9s execs in %s s, coverage %s edges (%s features), %s corpus inputs, 0 crashes\n' \
      "$t" "${execs:-?}" "$SECONDS_PER_TARGET" "${cov:-?}" "${ft:-?}" "$corpus"
  else
    local crash
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    printf 'fuzz %-20s FAILED after %s execs: %s (log %s)\n' \
      "$t" "${execs:-?}" "${crash:-see the log}" "$log"
    grep -m1 -A3 -E 'panicked at|ERROR: libFuzzer' "$log" | sed 's/^/    /' || true
    [ -z "$crash" ] || printf '    reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run %s %s)\n' "$t" "$crash"
    return 1
  fi
}

# As many targets at once as there are cores: each libFuzzer run uses one.
jobs_max=$(nproc 2>/dev/null || echo 2)
failed=0
pids=()
names=()
for t in "${TARGETS[@]}"; do
  run_target "$t" >"$RUN_DIR/$t.summary" &
  pids+=("$!")
  names+=("$t")
  if [ "${#pids[@]}" -ge "$jobs_max" ]; then
    wait "${pids[0]}" || failed=1
    cat "$RUN_DIR/${names[0]}.summary"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
  cat "$RUN_DIR/${names[$i]}.summary"
done
say "fuzzing took $(($(date +%s) - start)) s in all"
exit "$failed"

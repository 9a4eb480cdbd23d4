#!/usr/bin/env bash
# The one command that runs every test of Switchboard, on a fresh machine or a used one:
#   bash scripts/test.sh [extra cargo test args...]
# It installs what the tests need (idempotently), then runs all unit, integration and interop
# tests with cargo. Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*" >&2; }

# --- System packages (Debian) -----------------------------------------------------------------
# Later: chromium for the browser tests, python3 packages for the grpcio backend. Add each
# here as `need_apt COMMAND PACKAGE...`, so a fresh machine gets it and a used one skips it.
APT_UPDATED=0
need_apt() {
  local cmd="$1"
  shift
  if command -v "$cmd" >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "error: '$cmd' is missing and there is no apt-get to install $*"
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  say "apt-get install $* (for '$cmd')"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

need_apt node nodejs
need_apt npm npm

# --- npm packages of the interop clients (tests/interop) ----------------------------------------
# `npm ci` when node_modules is missing or was installed from another package-lock.json.
# --ignore-scripts: the only install script (@bufbuild/buf's) is an optional speed-up; its
# bin/buf shim finds the platform binary package by itself.
INTEROP="$ROOT/tests/interop"
STAMP="$INTEROP/node_modules/.switchboard-package-lock.sha256"
want="$(sha256sum "$INTEROP/package-lock.json" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -d "$INTEROP/node_modules" ]; then
  say "npm ci in tests/interop (node $(node --version), npm $(npm --version 2>/dev/null))"
  (cd "$INTEROP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  printf '%s\n' "$want" >"$STAMP"
else
  say "tests/interop/node_modules is up to date with package-lock.json"
fi

# --- Python packages ---------------------------------------------------------------------------
# Later: `python3 -m pip install -r tests/interop/requirements.txt` (grpcio backend) goes here.

# --- The tests ---------------------------------------------------------------------------------
say "cargo test --all-targets --no-fail-fast $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole run, summed over every test binary's "test result:" line.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($i ~ /^passed;?$/) p += $(i-1)
         if ($i ~ /^failed;?$/) f += $(i-1)
         if ($i ~ /^ignored;?$/) s += $(i-1)
       }
     }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"

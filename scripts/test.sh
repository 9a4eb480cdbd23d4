#!/usr/bin/env bash
# The one command that runs every test of Switchboard, on a fresh machine or a used one:
#   bash scripts/test.sh [extra cargo test args...]
# It installs what the tests need (idempotently), then runs all unit, integration and interop
# tests with cargo, validates the deployment files offline and runs every fuzz target for 30 s.
# Works from any directory.
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
# promtool (Debian package prometheus): the metrics test checks the scraped text with it.
need_apt promtool prometheus
need_apt npm npm
need_apt chromium chromium
# A real Redis for the shared rate-limit tests (each test starts its own on a loopback port).
need_apt redis-server redis-server

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

# --- npm packages of the demo page's build (web-demo) and the browser tests (tests/browser) -----
# The same rule as above. --ignore-scripts: esbuild's install script only checks its binary, which
# esbuild finds in its platform package by itself; playwright-core downloads no browser (the
# tests use the Debian chromium).
for dir in "$ROOT/web-demo" "$ROOT/tests/browser"; do
  stamp="$dir/node_modules/.switchboard-package-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  have="$(cat "$stamp" 2>/dev/null || true)"
  if [ "$want" != "$have" ] || [ ! -d "$dir/node_modules" ]; then
    say "npm ci in ${dir#"$ROOT/"}"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    printf '%s\n' "$want" >"$stamp"
  else
    say "${dir#"$ROOT/"}/node_modules is up to date with package-lock.json"
  fi
done

# --- Python packages ---------------------------------------------------------------------------
# The grpcio test backend's packages (tests/interop/requirements.txt, exact pins): pip install
# when the requirements or the interpreter changed since the last install, or an import fails.
# PIP_BREAK_SYSTEM_PACKAGES: a Debian system python3 (PEP 668) refuses pip installs without it.
need_apt python3 python3
python3 -m pip --version >/dev/null 2>&1 || need_apt pip3 python3-pip
PY_STAMP="$INTEROP/.cache/pip-requirements.sha256"
PY_IMPORTS='import grpc, grpc_tools.protoc, grpc_status.rpc_status, grpc_reflection.v1alpha.reflection, google.rpc.error_details_pb2, google.api.annotations_pb2, grpc_health.v1.health'
py_want="$( (cat "$INTEROP/requirements.txt"; python3 -c 'import sys; print(sys.executable, sys.version)') | sha256sum | cut -d' ' -f1)"
py_have="$(cat "$PY_STAMP" 2>/dev/null || true)"
if [ "$py_want" != "$py_have" ] || ! python3 -c "$PY_IMPORTS" >/dev/null 2>&1; then
  say "pip install -r tests/interop/requirements.txt ($(python3 --version 2>&1))"
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install --quiet -r "$INTEROP/requirements.txt"
  mkdir -p "$(dirname "$PY_STAMP")"
  printf '%s\n' "$py_want" >"$PY_STAMP"
else
  say "the Python packages of tests/interop/requirements.txt are installed"
fi

# --- The tests ---------------------------------------------------------------------------------
say "cargo test --all-targets --no-fail-fast $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# --- Deployment files, offline (Dockerfile, Kubernetes manifests, Helm chart) -------------------
say "scripts/validate-deploy.sh"
deploy_start=$(date +%s)
bash scripts/validate-deploy.sh || status=1
say "deployment files validated in $(($(date +%s) - deploy_start)) s"

# --- Fuzzing: every target for 30 s from the seed corpus (SWITCHBOARD_SKIP_FUZZ=1 skips it) -----
if [ "${SWITCHBOARD_SKIP_FUZZ:-0}" = 1 ]; then
  say "fuzzing skipped (SWITCHBOARD_SKIP_FUZZ=1)"
else
  say "scripts/fuzz.sh 30"
  bash scripts/fuzz.sh 30 || status=1
fi

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

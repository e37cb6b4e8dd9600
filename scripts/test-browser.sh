#!/usr/bin/env bash
# Tests the storefront (web/) in headless Chromium against the three real services: builds the
# page and the debug binaries, starts auth, users and orders on free ports with their own
# databases and queue names, serves the page with `vite preview` proxying /api/v1 to them, and
# runs web/test/storefront.test.mjs. Screenshots of each step and the services' logs go to
# target/browser/. Everything started is stopped, and the databases dropped, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test-browser: %s\n' "$*" >&2; }

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
  if [[ $(id -u) == 0 ]]; then
    say "installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    say "Chromium is not installed: run 'sudo apt-get install chromium', or set CHROMIUM to a Chromium binary"
    exit 1
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  say "Node.js 20.19 or newer with npm is needed: https://nodejs.org/en/download"
  exit 1
fi

(cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
cargo build --workspace --bins
bin=$(scripts/target-dir.sh)/debug

out=target/browser
rm -rf "$out" && mkdir -p "$out/logs"
work=$(mktemp -d)
run=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
databases=(tessera_auth_browser_$run tessera_users_browser_$run tessera_orders_browser_$run)
postgres=postgres://postgres@127.0.0.1:5432

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  for db in "${databases[@]}"; do
    psql -q "$postgres/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
      say "could not drop database $db"
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL: until it answers 200, or fail naming it.
wait_for() {
  for _ in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]] && return 0
    sleep 0.1
  done
  say "$1 never answered 200; logs in $out/logs"
  exit 1
}

auth_http=$(free_port) auth_grpc=$(free_port) users_http=$(free_port) users_grpc=$(free_port)
orders_http=$(free_port) orders_grpc=$(free_port) web_port=$(free_port)

mkdir -p "$work/keys"
openssl genpkey -algorithm ed25519 -out "$work/keys/browser-1.pem" 2>/dev/null
export ADMIN_EMAIL="admin-$run@example.com" ADMIN_PASSWORD="admin password $run $RANDOM$RANDOM"

# start NAME PREFIX HTTP GRPC [VAR=VALUE...]: a service with its own database, logging to a file.
start() {
  local name=$1 prefix=$2 http=$3 grpc=$4
  shift 4
  (
    export "${prefix}_HOST=127.0.0.1" "${prefix}_HTTP_PORT=$http" "${prefix}_GRPC_PORT=$grpc" \
      "${prefix}_DATABASE_URL=$postgres/tessera_${name}_browser_$run" \
      "${prefix}_REDIS_URL=redis://127.0.0.1:6379/0" \
      "${prefix}_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f" \
      "${prefix}_LOG_FORMAT=json" "$@"
    exec "$bin/$name" serve >"$out/logs/$name.log" 2>&1
  ) &
  pids+=($!)
}

jwks=http://127.0.0.1:$auth_http/.well-known/jwks.json
start users USERS "$users_http" "$users_grpc" USERS_JWKS_URL="$jwks"
start auth AUTH "$auth_http" "$auth_grpc" \
  AUTH_SIGNING_KEYS_DIR="$work/keys" AUTH_USERS_GRPC_URL="http://127.0.0.1:$users_grpc" \
  AUTH_ARGON2_MEMORY_KIB=4096 AUTH_ARGON2_ITERATIONS=1 \
  AUTH_EVENTS_QUEUE="auth.browser.$run" AUTH_EVENTS_QUEUE_EXPIRES_SECS=120 \
  AUTH_LOGIN_LIMITS_KEY_PREFIX="browser:$run" \
  AUTH_ADMIN_EMAIL="$ADMIN_EMAIL" AUTH_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  AUTH_ACCESS_TOKEN_TTL_SECS=10 # short, so the test sees the page refresh its session
start orders ORDERS "$orders_http" "$orders_grpc" \
  ORDERS_JWKS_URL="$jwks" ORDERS_USERS_GRPC_URL="http://127.0.0.1:$users_grpc" \
  ORDERS_EVENTS_QUEUE="orders.browser.$run" ORDERS_EVENTS_QUEUE_EXPIRES_SECS=120

(
  cd web
  export STOREFRONT_PORT=$web_port STOREFRONT_AUTH_URL=http://127.0.0.1:$auth_http \
    STOREFRONT_USERS_URL=http://127.0.0.1:$users_http STOREFRONT_ORDERS_URL=http://127.0.0.1:$orders_http
  exec node_modules/.bin/vite preview >"../$out/logs/web.log" 2>&1
) &
pids+=($!)

for port in "$auth_http" "$users_http" "$orders_http"; do wait_for "http://127.0.0.1:$port/health/ready"; done
base=http://127.0.0.1:$web_port/
wait_for "$base"
# auth makes the admin account in the background, once users answers.
for _ in $(seq 1 100); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' "${base}api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}") == 200 ]] && break
  sleep 0.2
done

say "storefront at $base; screenshots and logs in $out/"
STOREFRONT_URL=$base SCREENSHOTS="$PWD/$out" node --test --test-reporter=spec web/test/storefront.test.mjs

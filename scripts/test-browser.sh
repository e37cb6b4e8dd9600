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
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)
run=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
source scripts/stack.sh
STACK_LOGS=$out/logs
stack_init "$bin" "browser_$run" "$work"
trap 'stack_stop; drop_stack_data; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
web_port=$(free_port)

export ADMIN_EMAIL="admin-$run@example.com" ADMIN_PASSWORD="admin password $run $RANDOM$RANDOM"
# users first: auth makes the admin account through it.
start_users
start_auth AUTH_ARGON2_MEMORY_KIB=4096 AUTH_ARGON2_ITERATIONS=1 \
  AUTH_ADMIN_EMAIL="$ADMIN_EMAIL" AUTH_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  AUTH_ACCESS_TOKEN_TTL_SECS=10 # short, so the test sees the page refresh its session
start_orders

(
  cd web
  export STOREFRONT_PORT=$web_port STOREFRONT_AUTH_URL=$auth_url \
    STOREFRONT_USERS_URL=$users_url STOREFRONT_ORDERS_URL=$orders_url
  exec node_modules/.bin/vite preview >"../$out/logs/web.log" 2>&1
) &
pids+=($!)

for url in "$auth_url" "$users_url" "$orders_url"; do wait_for "$url/health/ready"; done
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

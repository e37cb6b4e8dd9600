#!/usr/bin/env bash
# Runs auth, users and orders natively against the local PostgreSQL, Redis and RabbitMQ, and
# the storefront (web/) on http://127.0.0.1:8080/ with `vite preview` proxying /api/v1 to them.
# Each service creates its database (tessera_<service>) and applies its migrations on start.
# Ctrl-C stops them all gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-debug}
cargo build --workspace --bins $([[ $profile == release ]] && echo --release)
bin=$(scripts/target-dir.sh)/$profile

# auth signs with the keys in this directory; a development key is made on first run.
keys=${AUTH_SIGNING_KEYS_DIR:-.dev/keys}
if ! compgen -G "$keys/*.pem" >/dev/null; then
  mkdir -p "$keys"
  openssl genpkey -algorithm ed25519 -out "$keys/dev-1.pem"
  chmod 600 "$keys/dev-1.pem"
  echo "run: made a development signing key $keys/dev-1.pem" >&2
fi
export AUTH_SIGNING_KEYS_DIR=$keys

# Internal gRPC over mutual TLS, with a development CA made on first run (RUN_GRPC_TLS=no:
# plaintext on the loopback interface instead). grpcurl can call as the `operator`:
#   grpcurl -cacert .dev/grpc-tls/operator/ca.crt -cert .dev/grpc-tls/operator/tls.crt \
#     -key .dev/grpc-tls/operator/tls.key -authority users 127.0.0.1:50052 list
tls=${RUN_GRPC_TLS_DIR:-.dev/grpc-tls}
grpc_scheme=http grpc_mode="plaintext on loopback"
if [[ ${RUN_GRPC_TLS:-yes} != no ]]; then
  deploy/dev-grpc-certs.sh "$tls" >&2
  grpc_scheme=https grpc_mode="mutual TLS, certificates in $tls"
fi

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

# default VAR VALUE: exports VAR=VALUE unless VAR is set already.
default() { [[ -n "${!1:-}" ]] || export "$1=$2"; }

# start NAME PREFIX: the service with local defaults; variables already set win.
start() {
  local name=$1 prefix=$2
  (
    default "${prefix}_DATABASE_URL" "postgres://postgres@127.0.0.1:5432/tessera_$name"
    default "${prefix}_REDIS_URL" "redis://127.0.0.1:6379/0"
    default "${prefix}_AMQP_URL" "amqp://guest:guest@127.0.0.1:5672/%2f"
    default "${prefix}_LOG_FORMAT" pretty
    if [[ $grpc_scheme == https ]]; then
      default "${prefix}_GRPC_TLS_CERT_FILE" "$tls/$name/tls.crt"
      default "${prefix}_GRPC_TLS_KEY_FILE" "$tls/$name/tls.key"
      default "${prefix}_GRPC_TLS_CA_FILE" "$tls/$name/ca.crt"
      # A laptop's other interfaces need not see it, certificates or not.
      default "${prefix}_GRPC_HOST" 127.0.0.1
    fi
    # auth and orders call users.
    [[ $name == users ]] || default "${prefix}_USERS_GRPC_URL" "$grpc_scheme://127.0.0.1:50052"
    # Prefix each line with the service, since the three share one terminal.
    exec "$bin/$name" serve > >(sed -u "s/^/$name | /") 2>&1
  ) &
  pids+=($!)
}

# A development admin account, so admin-only routes can be tried, unless one is configured
# in the environment (or in .env, which the services read themselves).
if ! grep -qsE '^AUTH_ADMIN_' .env && [[ -z "${AUTH_ADMIN_EMAIL:-}" ]]; then
  export AUTH_ADMIN_EMAIL=admin@tessera.local AUTH_ADMIN_PASSWORD="tessera admin dev password"
  echo "run: admin account $AUTH_ADMIN_EMAIL / $AUTH_ADMIN_PASSWORD" >&2
fi

start auth AUTH
start users USERS
start orders ORDERS
services=("${pids[@]}")
echo "run: auth http://127.0.0.1:8081 (gRPC 50051), users http://127.0.0.1:8082 (gRPC 50052), orders http://127.0.0.1:8083 (gRPC 50053); gRPC over $grpc_mode; Ctrl-C stops them" >&2

# The storefront: built, then served with the API proxied to the services above (the
# STOREFRONT_{AUTH,USERS,ORDERS}_URL variables point it elsewhere). Without Node.js the
# services run on alone.
if ! command -v npm >/dev/null 2>&1; then
  echo "run: Node.js and npm not found, so the storefront is not served; install Node.js 20.19 or newer with npm (https://nodejs.org/en/download) and run make run again" >&2
elif (cd web && { [[ -d node_modules ]] || npm ci --no-audit --no-fund --loglevel=error; } && npm run build --silent >/dev/null); then
  (cd web && exec node_modules/.bin/vite preview > >(sed -u "s/^/web | /") 2>&1) &
  pids+=($!)
  echo "run: the storefront is at http://127.0.0.1:8080/" >&2
else
  echo "run: the storefront did not build (see above); the services run on without it" >&2
fi
wait -n "${services[@]}" || true

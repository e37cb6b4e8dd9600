#!/usr/bin/env bash
# Load-tests release builds on this machine with wrk and writes docs/benchmarks.md.
#
# Measured so far:
#   hello     a bare axum route: the machine's ceiling
#   runtime   a request through a service's whole REST stack (request id, span and request
#             log, load shedding, timeout, routing, metrics) answered 404 problem+json: the
#             cost every API request pays before its handler
#   users     GET /api/v1/users/{id} on a cache hit: JWT verified against a JWKS, denylist
#             checked in Redis, the profile read from Redis; at full load and at a light one
# plus each process's idle and peak resident memory.
#
# BENCH_DURATION (default 10s) and BENCH_CONNECTIONS (default 64) tune the load.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-64}
say() { printf 'bench: %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then
    say "installing wrk"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    say "wrk is not installed: run 'sudo apt-get install wrk'"; exit 1
  fi
fi
scripts/infra.sh

cargo build --release -p users --bin users -p tessera-runtime --example hello -p tessera-jwt --example dev_token
release=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap 'cleanup; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL: until it answers 200.
wait_for() {
  for _ in $(seq 1 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]] && return 0
    sleep 0.1
  done
  say "$1 never answered 200"; exit 1
}

rss_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }

# load NAME URL PID [CONNECTIONS [HEADER]]: runs wrk and prints a table row.
load() {
  local name=$1 url=$2 pid=$3 conns=${4:-$connections} header=${5:-X-Bench: 1} idle out rps p50 p99 peak
  idle=$(rss_kib "$pid" VmRSS)
  out=$(wrk -t2 -c"$conns" -d"$duration" --latency -H "$header" "$url")
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  peak=$(rss_kib "$pid" VmHWM)
  printf '| %s | %s | %s | %s | %.1f MiB | %.1f MiB |\n' "$name" "$rps" "$p50" "$p99" \
    "$(bc -l <<<"$idle/1024")" "$(bc -l <<<"$peak/1024")"
}

hello_port=$(free_port)
"$release/examples/hello" "127.0.0.1:$hello_port" >/dev/null 2>&1 &
hello_pid=$!; pids+=("$hello_pid")

# A throwaway signing key whose JWKS a static server publishes, and a token for one user.
user_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
token=$("$release/examples/dev_token" "$work" "$user_id" user)
jwks_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work" "$jwks_port" >/dev/null 2>&1 &
pids+=("$!")

http_port=$(free_port)
USERS_HOST=127.0.0.1 USERS_HTTP_PORT=$http_port USERS_GRPC_PORT=$(free_port) \
USERS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tessera_users_bench \
USERS_REDIS_URL=redis://127.0.0.1:6379/0 USERS_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
USERS_JWKS_URL="http://127.0.0.1:$jwks_port/.well-known/jwks.json" \
  "$release/users" serve >/dev/null 2>&1 &
users_pid=$!; pids+=("$users_pid")

wait_for "http://127.0.0.1:$hello_port/"
wait_for "http://127.0.0.1:$http_port/health/ready"
psql -q -h 127.0.0.1 -U postgres -d tessera_users_bench -c \
  "INSERT INTO users (id, email, display_name) VALUES ('$user_id', 'bench-$user_id@example.com', 'Bench')"
profile="http://127.0.0.1:$http_port/api/v1/users/$user_id"
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$profile") == 200 ]] \
  || { say "GET $profile did not answer 200"; exit 1; }
sleep 1 # let the idle footprint settle

rows=$(
  load "hello (bare axum, ceiling)" "http://127.0.0.1:$hello_port/" "$hello_pid"
  load "runtime stack, 404 problem+json (users)" "http://127.0.0.1:$http_port/api/v1/bench" "$users_pid"
  load "GET /api/v1/users/{id}, cache hit" "$profile" "$users_pid" "$connections" "Authorization: Bearer $token"
  load "GET /api/v1/users/{id}, cache hit, 8 connections" "$profile" "$users_pid" 8 "Authorization: Bearer $token"
)
hits=$(curl -s "http://127.0.0.1:$http_port/metrics" | awk '/^cache_lookups_total/ && /result="hit"/ { print $2 }')
misses=$(curl -s "http://127.0.0.1:$http_port/metrics" | awk '/^cache_lookups_total/ && /result="miss"/ { print $2 }')

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
report=$(cat <<EOT
# Benchmarks

Made by \`make bench\` (\`scripts/bench.sh\`) on $(date -u +%Y-%m-%d): release builds, load from
\`wrk -t2 -c$connections -d$duration --latency\` on the same machine over loopback
($(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 }') GiB).
Services log at their default level (info, JSON) to /dev/null. The users reads were
cache hits: cache_lookups_total counted ${hits:-0} hits and ${misses:-0} misses.

| target | req/s | p50 | p99 | idle RSS | peak RSS |
| --- | --- | --- | --- | --- | --- |
$rows
EOT
)
mkdir -p docs
printf '%s\n' "$report" > docs/benchmarks.md
printf '%s\n' "$report"

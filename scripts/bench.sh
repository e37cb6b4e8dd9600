#!/usr/bin/env bash
# Load-tests release builds on this machine with wrk and writes docs/benchmarks.md.
#
# Measured so far:
#   hello     a bare axum route: the machine's ceiling
#   runtime   a request through a service's whole REST stack (request id, span and request
#             log, load shedding, timeout, routing, metrics) answered 404 problem+json: the
#             cost every API request pays before its handler
#   users     GET /api/v1/users/{id} on a cache hit: JWT verified against auth's JWKS,
#             denylist checked in Redis (at most every half second per token), the profile
#             from process memory (the near cache in front of Redis); at full load and at a
#             light one; and GET /api/v1/users/me, the same read by the token's subject
#   auth      POST /api/v1/auth/login with the right password (one account from 16 connections
#             at once, so its per-email limit, which counts logins in flight, is raised): limits
#             checked in Redis, an
#             argon2id verification at the default (OWASP) costs, a session written to
#             PostgreSQL, a token signed; bounded by argon2 by design
#   orders    POST /api/v1/orders, each request with its own Idempotency-Key: JWT verified,
#             the caller checked with users over gRPC (through the breaker), then one
#             transaction writing the idempotency record, the order, its lines and the
#             order.created outbox row; the relay publishes to RabbitMQ meanwhile. And
#             GET /api/v1/orders/{id}, a primary-key read of an order and its lines
# plus each process's idle and peak resident memory, the mean argon2id verification time,
# and how long a new signing key takes to be accepted by users after auth switches to it.
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
# oha, pinned, from crates.io (it builds aws-lc, which needs cmake): the open-loop runs.
oha_version=1.16.0
oha=$HOME/.cache/tessera/tools/bin/oha
if [[ ! -x $oha || $("$oha" --version 2>/dev/null) != "oha $oha_version" ]]; then
  if ! command -v cmake >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
      say "installing cmake"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
    else
      say "cmake is needed to build oha: run 'sudo apt-get install cmake'"; exit 1
    fi
  fi
  say "installing oha $oha_version (once, a few minutes)"
  oha_build=$(mktemp -d)
  cargo install oha --version "$oha_version" --locked --root "$HOME/.cache/tessera/tools" --target-dir "$oha_build"
  rm -rf "$oha_build"
fi
if ! command -v perf >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
  say "installing perf"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
fi
scripts/infra.sh

cargo build --release -p users --bin users -p auth --bin auth -p orders --bin orders \
  -p tessera-runtime --example hello -p tessera-testkit --example otlp_sink --example paced_orders
release=$(scripts/target-dir.sh)/release
work=$(mktemp -d)
source scripts/stack.sh
stack_init "$release" bench "$work"
trap 'stack_stop; drop_stack_data; rm -rf "$work"' EXIT

# cpu_ticks: CPU time (clock ticks) used so far by each running program, by name.
cpu_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk '{ sub(/^[0-9]+ \(/, ""); name = $0; sub(/\).*/, "", name); sub(/^[^)]*\) /, "")
           ticks[name] += $12 + $13 } END { for (n in ticks) print n "\t" ticks[n] }' | sort
}

rss_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f MiB", kib / 1024 }'; }

# load NAME URL PID [CONNECTIONS [HEADER [SCRIPT]]]: runs wrk and prints a table row.
load() {
  local name=$1 url=$2 pid=$3 conns=${4:-$connections} header=${5:-X-Bench: 1} script=${6:-} idle out rps p50 p99 peak errors
  idle=$(rss_kib "$pid" VmRSS)
  [[ -z ${CPU_REPORT:-} ]] || cpu_ticks > "$work/cpu-before"
  out=$(wrk -t2 -c"$conns" -d"$duration" --latency -H "$header" ${script:+-s "$script"} "$url")
  [[ -z ${CPU_REPORT:-} ]] || { cpu_ticks > "$work/cpu-after"; awk '/requests in/ { print $1 }' <<<"$out" > "$work/cpu-requests"; }
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  peak=$(rss_kib "$pid" VmHWM)
  printf '%s\t%s\n' "$name" "$(awk '/requests in/ { print $1 }' <<<"$out")" >> "$work/requests"
  printf '%s\t%s\n' "$name" "$rps" >> "$work/rps"
  # A run that was answered with errors measured the errors: say so in the row.
  errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  [[ -z $errors || -n ${EXPECT_ERRORS:-} ]] || name="$name (**$errors non-2xx answers**)"
  printf '| %s | %s | %s | %s | %.1f MiB | %.1f MiB |\n' "$name" "$rps" "$p50" "$p99" \
    "$(bc -l <<<"$idle/1024")" "$(bc -l <<<"$peak/1024")"
}

# half_of NAME: half the req/s the closed-loop row NAME reached.
half_of() { awk -F'\t' -v name="$1" '$1 == name { printf "%d", $2 / 2 }' "$work/rps"; }

# paced NAME RATE PID JSON: a table row from a paced run's figures (oha's JSON, or
# paced_orders', which has the same figures under its own names).
paced_row() {
  python3 - "$1" "$2" "$3" "$(rss_kib "$3" VmHWM)" "$4" <<'EOT'
import json, sys
name, rate, pid, peak, raw = sys.argv[1:]
d = json.loads(raw)
if "summary" in d:  # oha
    answered = d["summary"]["requestsPerSec"]
    p50, p99, p999 = (d["latencyPercentiles"][k] * 1000 for k in ("p50", "p99", "p99.9"))
    ok = sum(n for code, n in d["statusCodeDistribution"].items() if code.startswith("2"))
    # oha stops at the deadline; what it cut short is no answer from the service.
    errors = sum(d["statusCodeDistribution"].values()) - ok + sum(
        n for what, n in d["errorDistribution"].items() if "deadline" not in what)
else:  # paced_orders
    answered, p50, p99, p999 = d["answered_per_sec"], d["p50_ms"], d["p99_ms"], d["max_ms"]
    errors = d["errors"]
flag = f" (**{errors} errors**)" if errors else ""
print(f"| {name}{flag} | {rate} | {answered:.0f} | {p50:.2f} ms | {p99:.2f} ms | {p999:.2f} ms | {int(peak) / 1024:.1f} MiB |")
EOT
}

# paced NAME URL PID RATE [oha options...]: RATE requests a second for the duration, each
# timed from when it was due (oha --latency-correction); a table row.
paced() {
  local name=$1 url=$2 pid=$3 rate=$4
  paced_row "$name" "$rate" "$pid" "$("$oha" --no-tui --output-format json -z "$duration" \
    -q "$rate" --latency-correction -c "$connections" "${@:5}" "$url")"
}

hello_port=$(free_port)
"$release/examples/hello" "127.0.0.1:$hello_port" >/dev/null 2>&1 &
hello_pid=$!; pids+=("$hello_pid")

# One auth for the whole run (its per-email limit counts logins in flight, and the login run
# sends 16 at once for one account), users and orders trusting its JWKS.
start_auth AUTH_LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT=1000
wait_for "$auth_url/health/ready"
start_users
start_orders
wait_for "http://127.0.0.1:$hello_port/"
wait_for "$users_url/health/ready"
wait_for "$orders_url/health/ready"

# One account, registered through auth (which creates its profile in users).
register_account bench
profile="$users_url/api/v1/users/$user_id"
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" "$profile"; }
[[ $(status "$token") == 200 ]] || { say "GET $profile did not answer 200"; exit 1; }
cat > "$work/login.lua" <<EOT
wrk.method = "POST"
wrk.body = '$credentials'
wrk.headers["Content-Type"] = "application/json"
EOT

# Every order request carries a key of its own (the second its script was loaded in, the
# wrk thread, a counter), so each one writes a new order instead of replaying an earlier one.
order='{"currency":"EUR","items":[{"sku":"BENCH-1","quantity":2,"unit_price_cents":1250},{"sku":"BENCH-2","quantity":1,"unit_price_cents":399}]}'
orders_api="$orders_url/api/v1/orders"
cat > "$work/order.lua" <<EOT
local threads = 0
local started = os.time()
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local sent = 0
function request()
  sent = sent + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer $token",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. started .. "-" .. id .. "-" .. sent,
  }, '$order')
end
EOT
placed=$(curl -s -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -H "Idempotency-Key: bench-$$-probe" -d "$order" "$orders_api" | field id)
[[ -n $placed ]] || { say "POST $orders_api did not place an order"; exit 1; }
sleep 1 # let the idle footprint settle
users_idle=$(rss_kib "$users_pid" VmRSS) orders_idle=$(rss_kib "$orders_pid" VmRSS) auth_idle=$(rss_kib "$auth_pid" VmRSS)
# idle_parts PID: what its idle resident memory is made of, in MiB.
idle_parts() {
  local exe text binary
  exe=$(readlink "/proc/$1/exe")
  text=$(size -A "$exe" | awk '$1 == ".text" { print $2 }')
  binary=$(awk -v exe="$exe" '/^[0-9a-f]+-/ { mine = ($6 == exe) } mine && $1 == "Rss:" { sum += $2 } END { print sum }' "/proc/$1/smaps")
  printf '%s mapped from its binary (%s of code), %s from shared libraries, %s anonymous (heap, stacks)' \
    "$(mib "$binary")" "$(mib "$((text / 1024))")" \
    "$(mib "$(($(rss_kib "$1" RssFile) - binary))")" "$(mib "$(rss_kib "$1" RssAnon)")"
}
idle_makeup="users $(idle_parts "$users_pid"); orders $(idle_parts "$orders_pid"); auth $(idle_parts "$auth_pid")"

rows=$(
  load "hello (bare axum, ceiling)" "http://127.0.0.1:$hello_port/" "$hello_pid"
  EXPECT_ERRORS=1 load "runtime stack, 404 problem+json (users)" "$users_url/api/v1/bench" "$users_pid"
  load "GET /api/v1/users/{id}, cache hit" "$profile" "$users_pid" "$connections" "Authorization: Bearer $token"
  load "GET /api/v1/users/{id}, cache hit, 8 connections" "$profile" "$users_pid" 8 "Authorization: Bearer $token"
  load "GET /api/v1/users/me, cache hit" "$users_url/api/v1/users/me" "$users_pid" "$connections" "Authorization: Bearer $token"
  # The ceiling again, once the stack has settled: the first run follows its start (the
  # probe order's events, the first requests), and the share below takes the higher one.
  load "hello (bare axum, ceiling), again" "http://127.0.0.1:$hello_port/" "$hello_pid"
  CPU_REPORT=1 load "POST /api/v1/orders, a new key each" "$orders_api" "$orders_pid" "$connections" "X-Bench: 1" "$work/order.lua"
  load "POST /api/v1/orders, a new key each, 8 connections" "$orders_api" "$orders_pid" 8 "X-Bench: 1" "$work/order.lua"
  load "GET /api/v1/orders/{id}" "$orders_api/$placed" "$orders_pid" "$connections" "Authorization: Bearer $token"
  load "POST /api/v1/auth/login (argon2id m=7 MiB, t=5)" "$auth_url/api/v1/auth/login" "$auth_pid" 16 "X-Bench: 1" "$work/login.lua"
)
# What the order runs left behind: every answered request is an order, and the outbox drains.
orders_sql() { psql -qtA -h 127.0.0.1 -U postgres -d tessera_orders_bench -c "$1"; }
posted=$(awk -F'\t' '$1 ~ /^POST \/api\/v1\/orders/ { n += $2 } END { print n + 0 }' "$work/requests")
orders_written=$(orders_sql "SELECT count(*) FROM orders WHERE user_id = '$user_id'")
pending=$(orders_sql "SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
started=$(date +%s.%N)
for _ in $(seq 1 600); do
  [[ $(orders_sql "SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL") == 0 ]] && break
  sleep 0.1
done
[[ $(orders_sql "SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL") == 0 ]] ||
  { say "the orders outbox did not drain within 60 s"; exit 1; }
drained=$(bc -l <<<"$(date +%s.%N) - $started")

# Latency at a sane load: each scenario offered half the rate its closed-loop run reached, on
# a fixed schedule (open loop), each request timed from when it was due, so time spent
# waiting to be sent counts. Orders go through paced_orders (a new Idempotency-Key each).
seconds=${duration%s}
# The order runs leave PostgreSQL work (dirty pages, autovacuum) that would land in these
# runs' tails: flush it and let the machine settle first.
orders_sql "CHECKPOINT" >/dev/null
sleep 5
open_rows=$(
  rate=$(half_of "GET /api/v1/users/{id}, cache hit")
  paced "GET /api/v1/users/{id}, cache hit" "$profile" "$users_pid" "$rate" -H "Authorization: Bearer $token"
  rate=$(half_of "POST /api/v1/orders, a new key each")
  paced_row "POST /api/v1/orders, a new key each" "$rate" "$orders_pid" \
    "$("$release/examples/paced_orders" "$orders_api" "$token" "$order" "$rate" "$seconds")"
  rate=$(half_of "GET /api/v1/orders/{id}")
  paced "GET /api/v1/orders/{id}" "$orders_api/$placed" "$orders_pid" "$rate" -H "Authorization: Bearer $token"
  rate=$(half_of "POST /api/v1/auth/login (argon2id m=7 MiB, t=5)")
  paced "POST /api/v1/auth/login" "$auth_url/api/v1/auth/login" "$auth_pid" "$rate" \
    -m POST -T application/json -d "$credentials"
)

# Where a cache hit's time goes: users sampled by perf (999 Hz) during a closed-loop run,
# self time grouped by crate (the first path segment of each function), and the hottest
# functions. The kernel's share is the network stack and scheduling.
profile_by_crate="perf is not installed" profile_top=""
if command -v perf >/dev/null 2>&1; then
  perf record -q -F 999 -p "$users_pid" -o "$work/perf.data" -- sleep "$((seconds - 2))" >/dev/null 2>&1 &
  perf_pid=$!
  wrk -t2 -c"$connections" -d"$duration" -H "Authorization: Bearer $token" "$profile" >/dev/null
  wait "$perf_pid" || true
  perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
    awk '/^ +[0-9.]+%/ { share = $1; sub(/%/, "", share); kind = $2; $1 = ""; $2 = ""; sub(/^ +/, "")
           sub(/[ -]+$/, ""); print share "\t" kind "\t" $0 }' > "$work/profile"
  profile_by_crate=$(awk -F'\t' '
      { name = $3; sub(/^_?</, "", name); sub(/^&(mut )?/, "", name)
        if ($2 == "[k]") crate = "kernel"
        else if (name !~ /::/) crate = "libc and other unnamed (malloc, free, memcpy)"
        else { crate = name; sub(/::.*/, "", crate) }
        share[crate] += $1 }
      END { for (c in share) printf "%.1f\t%s\n", share[c], c }' "$work/profile" |
    sort -rn | head -12 | awk -F'\t' '{ printf "%s %s %%, ", $2, $1 }' | sed 's/, $//')
  profile_top=$(head -12 "$work/profile" | awk -F'\t' '{ printf "| %s %% | `%s` |\n", $1, substr($3, 1, 110) }')
fi
# Every service's peak so far, before any of them is restarted below.
rss_peaks="auth $(mib "$(rss_kib "$auth_pid" VmHWM)"), users $(mib "$(rss_kib "$users_pid" VmHWM)"), orders $(mib "$(rss_kib "$orders_pid" VmHWM)")"
# Where an order's CPU goes: each program's CPU seconds over the first order run, per order,
# and the rate of orders at which all of them together would fill every core.
join -t $'\t' "$work/cpu-before" "$work/cpu-after" |
  awk -F'\t' -v hz="$(getconf CLK_TCK)" '{ print $1 "\t" ($3 - $2) / hz }' > "$work/cpu"
order_requests=$(cat "$work/cpu-requests")
order_cpu=$(awk -F'\t' -v requests="$order_requests" '
    { ms = 1000 * $2 / requests; if (ms >= 0.05) printf "%s %.2f ms, ", $1, ms }' "$work/cpu" |
  sed 's/, $//')
order_ceiling=$(awk -F'\t' -v requests="$order_requests" -v cores="$(nproc)" '
    { seconds += $2 } END { if (seconds > 0) printf "%.0f", cores * requests / seconds }' "$work/cpu")
users_metrics=$(curl -s "$users_url/metrics")
near=$(awk '/^cache_lookups_total/ && /result="near"/ { print $2 }' <<<"$users_metrics")
hits=$(awk '/^cache_lookups_total/ && /result="hit"/ { print $2 }' <<<"$users_metrics")
misses=$(awk '/^cache_lookups_total/ && /result="miss"/ { print $2 }' <<<"$users_metrics")
hash_ms=$(curl -s "$auth_url/metrics" | awk '
  /^auth_password_hash_seconds_sum\{operation="verify"\}/ { sum = $2 }
  /^auth_password_hash_seconds_count\{operation="verify"\}/ { count = $2 }
  END { if (count > 0) printf "%.1f ms over %d verifications", 1000 * sum / count, count }')

# The cost of exporting: users again, every span sampled and sent over OTLP to a collector
# (a sink that only counts them), under the same cache-hit load. Without an endpoint, as in
# the rows above, nothing is exported.
sink_port=$(free_port)
"$release/examples/otlp_sink" "127.0.0.1:$sink_port" > "$work/spans" &
sink_pid=$!; pids+=("$sink_pid")
stop "$users_pid"
start_users OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_TRACES_SAMPLER_ARG=1
wait_for "$users_url/health/ready"
[[ $(status "$token") == 200 ]] || { say "GET $profile did not answer 200 with export on"; exit 1; }
sleep 1
rows+=$'\n'$(load "GET /api/v1/users/{id}, cache hit, every span exported over OTLP" "$profile" "$users_pid" "$connections" "Authorization: Bearer $token")
stop "$users_pid"
stop "$sink_pid"
exported_spans=$(cat "$work/spans")
exported_requests=$(awk -F'\t' '/every span exported/ { print $2 }' "$work/requests")
start_users
wait_for "$users_url/health/ready"

# Key rotation: users has just fetched the JWKS (the reads above). Switch auth to a new key
# and time how long until users accepts a token signed with it.
openssl genpkey -algorithm ed25519 -out "$work/keys/bench-2.pem"
stop "$auth_pid"
start_auth AUTH_LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT=1000 AUTH_SIGNING_KID=bench-2
wait_for "$auth_url/health/ready"
rotated=$(json_post "$auth_url/api/v1/auth/login" "$credentials" | field access_token)
started=$(date +%s.%N)
until [[ $(status "$rotated") == 200 ]]; do sleep 0.1; done
propagation=$(bc -l <<<"$(date +%s.%N) - $started")
old_token=$(status "$token")

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
rps_of() { awk -F'\t' -v name="$1" '$1 == name { print $2 }' "$work/rps"; }
cache_share=$(awk -v hit="$(rps_of "GET /api/v1/users/{id}, cache hit")" \
  -v first="$(rps_of "hello (bare axum, ceiling)")" -v again="$(rps_of "hello (bare axum, ceiling), again")" \
  'BEGIN { hello = (again > first) ? again : first; printf "%.1f", 100 * hit / hello }')
cache_p99=$(awk -F' [|] ' '/cache hit/ { sub(/ ms/, "", $5); print $5; exit }' <<<"$open_rows")
orders_peak=$(rps_of "POST /api/v1/orders, a new key each")
rss_idle="users $(mib "$users_idle"), orders $(mib "$orders_idle"), auth $(mib "$auth_idle")"
# Instructions per request (callgrind), on a stack of its own: the figure that repeats.
instruction_rows="valgrind is not installed"
if command -v valgrind >/dev/null 2>&1; then
  instruction_rows=$(scripts/instructions.sh "$release" | awk -F'\t' '{ printf "| %s | %\047d |\n", $1, $2 }')
fi
report=$(cat <<EOT
# Benchmarks

Made by \`make bench\` (\`scripts/bench.sh\`) on $(date -u +%Y-%m-%d): release builds, load from
\`wrk -t2 -c$connections -d$duration --latency\` on the same machine over loopback
($(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ { print $2 }') GiB).
Services log as in production (JSON at info, a line per request) to /dev/null. The users reads were cache hits:
cache_lookups_total counted ${near:-0} answers from process memory, ${hits:-0} from Redis and ${misses:-0} misses. Logins use 16
connections; auth runs at most half the cores' worth of argon2id verifications at once
(\`AUTH_PASSWORD_HASH_CONCURRENCY\`; mean ${hash_ms:-n/a}, from
auth_password_hash_seconds), so throughput is about half the cores / verification time by design.
The order runs completed $posted requests (wrk leaves out those in flight when it stops) and
wrote $orders_written orders, one of them placed before the runs; when
they ended $pending order.created events were still in the outbox, published
$(printf '%.1f' "$drained") s later. CPU time per order in the 64-connection run, by program
(wrk not counted): $order_cpu. At that cost the $(nproc) cores are full at
${order_ceiling:-n/a} orders a second, whatever the concurrency: the services share them with
PostgreSQL, Redis, RabbitMQ and the load generator, and an order is about ten round trips
(the users check over gRPC, the idempotency lookup, BEGIN, the advisory lock, one statement for key, order and lines,
the outbox row, COMMIT, then the relay's read, publish and mark).

## Peak (closed loop)

| target | req/s | p50 | p99 | idle RSS | peak RSS |
| --- | --- | --- | --- | --- | --- |
$rows

The last row is the cache-hit read again with users exporting every span (sampling 1) over
OTLP/gRPC to a collector on this machine (\`otlp_sink\`, which counts what arrives): it
received ${exported_spans:-0} spans for ${exported_requests:-0} requests. The rows above it
export nothing (\`OTEL_EXPORTER_OTLP_ENDPOINT\` unset).

## Latency at half of peak (open loop)

Each scenario was offered half the rate its closed-loop run above reached, for $duration, on a
fixed schedule whatever the answers took: \`oha -q RATE --latency-correction -c $connections\`
($oha_version), and for orders \`paced_orders\` (\`crates/testkit/examples\`), which does the same
with a new \`Idempotency-Key\` per request, something oha cannot send. Latency counts from when
each request was due, so time spent queued in the client counts (no coordinated omission).
For orders the last column is the maximum.

| scenario | offered req/s | answered req/s | p50 | p99 | p99.9 | peak RSS |
| --- | --- | --- | --- | --- | --- | --- |
$open_rows

## Against the targets (SPEC.md, "Performance")

- Cache-hit reads at ${cache_share} % of the hello ceiling, the higher of its two runs
  (target: 50 %); p99 at half of their peak ${cache_p99} ms (target: under 5 ms).
- Orders: ${orders_peak} req/s at 64 connections (target: 3,000).
- Peak RSS under load, by service: ${rss_peaks} (target: under 30 MB); idle: ${rss_idle}
  (target: under 15 MB).

Idle, resident: ${idle_makeup}. The kernel maps a binary's code in whole page-cache folios,
so nearly all of it is resident whether it runs or not, and an idle service is mostly its
code. The release profile (workspace \`Cargo.toml\`) keeps that small: fat LTO, abort on
panic (no unwinding tables), and the crates off the measured request paths optimised for
size; tokens link EdDSA alone (\`tessera_jwt::crypto\`).

## Where a cache hit's time goes

\`perf record -F 999\` on users during a closed-loop cache-hit run ($connections connections),
self time. By crate (the first segment of each function's path; the kernel is the network
stack and scheduling): ${profile_by_crate}.

| share | hottest functions |
| --- | --- |
${profile_top}

Reading: about half of users' CPU is the kernel's (socket reads and writes, waking tasks).
A cache hit is one exchange with the client and no other: the profile comes from process
memory (the near cache, kept coherent by invalidations published on Redis) and the token's
denylist entry is asked at most once per half second per token (here one token, so almost
never). What is left is the REST stack every request pays (compare the 404 row): the
request span and its JSON log line, allocation and copying (malloc, free, memcpy), then
hyper and axum. \`make instructions\` counts the instructions users executes per request
under callgrind, a figure that repeats run to run where req/s on this machine does not:
see "Instructions per request" below. What limits each scenario: cache hits, that stack;
orders, PostgreSQL's CPU and the round trips of one transaction (the CPU per order above);
reads of an order, the same stack as cache hits (orders are read through the same near
cache); logins, argon2id by design.

Where a cache hit's instructions go (callgrind, \`scripts/instructions.sh\` keeping its dump,
2026-12-05 at 683f968, 34,400 a request; inclusive figures, so they overlap): hyper's
request parsing 4,900; malloc and free 4,500 (about 26 mallocs a request, from 38 at 422a397
and 50 before); the JSON log line 3,900; the request span made 3,200 (registry, the trace
context's ids, the JSON layer's rendered fields) and closed 800; the token check 2,000 (from
the verified-token memo); the request's extensions dropped 1,500; path parameters 1,500
(axum decodes each into two shared strings); the profile from memory 1,000; a fresh request
id 600; the response body 550 (the profile's JSON, rendered once per cached value, from 4,900
serialised per request). It was 43,000 at 422a397 and 63,074 at 8b6852b, while unexported
spans were still OpenTelemetry spans. The kernel's
half of the CPU does not shrink with these: the service shares the two cores with the load
generator, and the load generator's threads, waiting on the slower server, sleep and wake
about once every three responses (0.37 voluntary switches a request against users, 0.07
against hello), each wake preempting a users thread (0.30 involuntary switches a request;
hello's 0.06), as \`/proc/PID/task/*/status\` counted over a wrk run.

## What made the read path cheaper (2026-12-05)

Instructions per request (\`scripts/instructions.sh\`, users), each build adding to the one
before:

| build | cache hit | 404 |
| --- | --- | --- |
| before (1020451) | 54,399 | 44,139 |
| cached values as snapshots answering with JSON rendered once (5d85c5b) | 49,253 | 44,008 |
| one limits layer for load shedding, concurrency limit and timeout (24a9ddf); the verifier cloned through one reference count (5433644); the JSON string escaper testing sixteen bytes at a time | 47,719 | 42,713 |
| one global filter, the JSON and ids layers skipping what they do not log or trace (b5c1323) | 45,492 | 40,974 |
| no \`original-uri\` copy of each request's URI (8ac74b5), the token memo hashing a token's last 32 bytes (1deea76), one request-id layer (422a397) | 42,964 | 37,380 |
| span naming and route metrics as tower layers, not an axum \`from_fn\` middleware | 40,973 | 35,503 |
| the request's span and log line from a layer of our own, not tower-http's \`TraceLayer\` (8422e62; 41,070 and 35,743 at fdf5df4 before it) | 40,076 | 34,602 |
| one router: the API stack layered on its routes, the ops routes merged in (d0882af) | 36,778 | 31,172 |
| request ids without uuid's shared counter, the denylist's memory hashed with foldhash (5752acf) | 36,363 | 31,172 |
| each route's metric series found once, not by label per request (7946341) | 35,058 | 30,574 |
| peer addresses recorded only where read (auth) (d0a1317) | 34,476 | 30,580 |
| request ids owned by their header value (683f968) | 34,384 | 30,356 |

Alternating \`wrk -t2 -c64 -d6s\` rounds of the cache-hit read (users alone against one auth,
three rounds each, one machine): 79,400 req/s before, 87,400 at the fourth row and 88,300 at
the fifth (+11 %). Earlier rounds the same way: 73,900 before, 78,800 at the third row, 81,700
at the fourth; later ones: 87,400 at the fifth and 91,200 at the last.
Later, alternating rounds of fdf5df4 against d0a1317 the same way: 71,800 and 81,200 req/s
(+13 %), with hello at 152,500 to 155,700 on the machine that hour.
Req/s gains trail instruction savings: much of a request's cost is the kernel's and the
scheduler's, shared with the load generator.

## Instructions per request

What users executes per request, counted by callgrind (\`make instructions\`,
\`scripts/instructions.sh\`, 2,000 requests after 300 to warm up, 4 connections). Unlike
req/s here, this repeats within a fraction of a percent from run to run, so it is what a
change of a few percent is judged by.

| request | instructions |
| --- | --- |
${instruction_rows}

## Tracing when nothing is exported

With no collector configured (as in this run), spans carry their trace context and nothing
else: a layer of \`trace_context\` gives each span at INFO and above its ids and sampled flag,
and no OpenTelemetry span is built. Measured on 2026-12-05 with \`scripts/instructions.sh\`
on release builds of users: before (8b6852b, OpenTelemetry spans made and dropped unread)
63,044 instructions per cache hit and 51,276 per 404; as now 54,326 and 44,187; with no
trace context at all (a build without the layer, for reference only) 52,609 and 42,688. So
carrying the context costs about 1,700 instructions a request, where building unexported
OpenTelemetry spans cost 10,400.

Log lines reach standard output without std's \`Stdout\` lock (\`observability::stdout\`): with
it, one request thread regularly slept on the lock while the other was in its \`write(2)\`.
\`perf stat\` on users under \`wrk -t2 -c64\` counted 0.46 context switches a request before
and 0.38 after. Alternating \`wrk -t2 -c64 -d8s\` rounds of the cache-hit read on one machine:
67,100 req/s before and 71,600 with the lock gone (three rounds each); 70,600 before both
changes and 82,000 with both (two rounds each).

Key rotation: after auth restarted signing with a new key (the old one still published), users
accepted the first token signed with it $(printf '%.1f' "$propagation") s after it was issued, and a token signed with
the old key still answered $old_token. A verifier refetches the JWKS when a token names a kid it
lacks, at most once per 10 s: 10 s is the worst case, met only if it fetched just before.
EOT
)
mkdir -p docs
printf '%s\n' "$report" > docs/benchmarks.md
printf '%s\n' "$report"

#!/usr/bin/env bash
# Instructions users executes per request, under callgrind: the cache-hit read and a 404
# through the REST stack. Unlike req/s on a shared machine, the count repeats run to run
# (within a fraction of a percent), so it can tell apart changes of a few percent.
#
# Usage: scripts/instructions.sh [RELEASE_DIR]   (default: this checkout's release build)
# INSTRUCTIONS_REQUESTS (default 2000) requests are counted per path, after 300 to warm up.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'instructions: %s\n' "$*" >&2; }

command -v valgrind >/dev/null || { say "valgrind is needed (apt-get install valgrind)"; exit 1; }
oha=$HOME/.cache/tessera/tools/bin/oha
[[ -x $oha ]] || { say "oha is needed: run 'make bench' once, which installs it"; exit 1; }
release=${1:-}
if [[ -z $release ]]; then
  cargo build --release -p users --bin users -p auth --bin auth
  release=$(scripts/target-dir.sh)/release
fi
requests=${INSTRUCTIONS_REQUESTS:-2000}
work=$(mktemp -d)
mkdir -p "$work/bin"
ln -s "$release/auth" "$work/bin/auth"
cat > "$work/bin/users" <<EOT
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.out $release/users "\$@"
EOT
chmod +x "$work/bin/users"
source scripts/stack.sh
stack_init "$work/bin" instructions "$work"
trap 'stack_stop; drop_stack_data; rm -rf "$work"' EXIT
start_auth
wait_for "$auth_url/health/ready"
start_users
# Under callgrind users starts about fifty times slower than natively.
for _ in $(seq 1 10); do wait_for "$users_url/health/ready" && break; done
register_account instructions

# count NAME PATH: instructions per request of NAME, from callgrind's counters zeroed before
# and dumped after the measured requests.
count() {
  "$oha" --no-tui -n 300 -c 4 -H "Authorization: Bearer $token" "$users_url/$2" >/dev/null
  callgrind_control -z >/dev/null
  "$oha" --no-tui -n "$requests" -c 4 -H "Authorization: Bearer $token" "$users_url/$2" >/dev/null
  callgrind_control -d >/dev/null
  sleep 1
  local dump total
  dump=$(ls -t "$work"/callgrind.out.* | head -1)
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
  printf '%s\t%d\n' "$1" "$((total / requests))"
  rm -f "$dump"
}
count "GET /api/v1/users/{id}, cache hit" "api/v1/users/$user_id"
count "runtime stack, 404 problem+json" "api/v1/bench"

#!/usr/bin/env bash
# Fuzzes each service against its own OpenAPI document with Schemathesis: every check
# (server errors, undocumented statuses and headers, response schemas, invalid input
# accepted, valid input refused, auth ignored, ...), every phase including the stateful
# one that follows the documents' links, once as a user and once as an admin. Any failure
# fails the run.
#
#   scripts/contract.sh                      all three services
#   CONTRACT_SERVICES=users scripts/contract.sh
#   CONTRACT_EXAMPLES=200 scripts/contract.sh  test cases per operation (default 60)
#   CONTRACT_ARGS="--report har" scripts/contract.sh  more options for `st run`
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh

say() { printf 'contract: %s\n' "$*" >&2; }
# users last: its admin runs may demote or delete any account, the bootstrap admin's too.
services=${CONTRACT_SERVICES:-auth orders users}
examples=${CONTRACT_EXAMPLES:-60}
schemathesis_version=4.32.5

# Schemathesis, pinned, in a virtualenv of its own beside the build cache.
venv=${CONTRACT_VENV:-$HOME/.cache/tessera/schemathesis-$schemathesis_version}
if [[ ! -x $venv/bin/st ]]; then
  say "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

scripts/infra.sh
# The same build the end-to-end tests make, so neither rebuilds the other's binaries.
cargo build --bin auth --bin orders --bin users
work=$(mktemp -d)
STACK_LOGS=$work/logs
stack_init "$(scripts/target-dir.sh)/debug" "contract_$$" "$work"
trap 'stack_stop; drop_stack_data; rm -rf "$work"' EXIT

admin_email=admin-$$@example.com admin_password="contract admin password $RANDOM$RANDOM"
# Schemathesis registers and logs in far more often than a person would: the limits that
# stop that are tested elsewhere, and would only make it see 429s here.
start_auth AUTH_ADMIN_EMAIL="$admin_email" AUTH_ADMIN_PASSWORD="$admin_password" \
  AUTH_REGISTRATIONS_PER_CLIENT=100000 AUTH_LOGIN_MAX_FAILURES_PER_EMAIL=100000 AUTH_LOGIN_MAX_FAILURES_PER_EMAIL_CLIENT=100000 \
  AUTH_LOGIN_MAX_FAILURES_PER_CLIENT=100000 AUTH_ARGON2_MEMORY_KIB=1024 AUTH_ARGON2_ITERATIONS=1
start_users
start_orders
for url in "$auth_url" "$users_url" "$orders_url"; do wait_for "$url/health/ready"; done

# token EMAIL PASSWORD: an access token for that account, if it can log in.
token() {
  json_post "$auth_url/api/v1/auth/login" "{\"email\":\"$1\",\"password\":\"$2\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("access_token", ""))'
}
# role TOKEN: the role an access token carries.
role() {
  python3 -c 'import base64, json, sys; p = sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["role"])' "$1"
}

# account ROLE: an access token for a new account with that role. A run may log its
# session out or delete its account, so each run gets its own; admins are made by the
# bootstrap admin, which no run is given.
password="contract password $RANDOM$RANDOM"
account() {
  local email user_id bearer
  email=$1-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')@example.com
  user_id=$(json_post "$auth_url/api/v1/auth/register" \
    "{\"email\":\"$email\",\"password\":\"$password\",\"display_name\":\"Contract\"}" | field user_id)
  if [[ $1 == admin ]]; then
    curl -sf -o /dev/null -X PATCH -H 'content-type: application/json' \
      -H "Authorization: Bearer $(token "$admin_email" "$admin_password")" \
      -d '{"role":"admin"}' "$users_url/api/v1/users/$user_id"
  fi
  # auth learns a new role from users' event: wait until a login carries it.
  for _ in $(seq 1 100); do
    bearer=$(token "$email" "$password")
    [[ -n $bearer && $(role "$bearer") == "$1" ]] && { echo "$bearer"; return; }
    sleep 0.1
  done
  say "no $1 token for $email"
  return 1
}

# What a client following the documents does that a generator cannot know.
export PYTHONPATH=$PWD/scripts${PYTHONPATH:+:$PYTHONPATH} SCHEMATHESIS_HOOKS=contract_hooks
failed=()
# Operations that end the caller's session (logging out revokes the access token, deleting
# one's account revokes them all): the rest of a run would only see 401s, so they get a
# run of their own (stateless: there are no links among them), before the others, with an
# account of their own.
declare -A ends_session=([auth]="POST /api/v1/auth/logout" [users]="DELETE /api/v1/users/{id}")
# fuzz SERVICE ROLE [st options...]: one Schemathesis run as a new account with that role.
fuzz() {
  local service=$1 role=$2 url_var=${1}_url name="$1 as $2${3:+ (${*:3})}" bearer
  say "$name"
  bearer=$(account "$role") || { failed+=("$name: no account"); return; }
  # One worker: Python 3.11's parser is not thread-safe where Hypothesis uses it.
  if ! CONTRACT_BEARER=$bearer "$venv/bin/st" --config-file scripts/contract.toml \
    run "${!url_var}/openapi.json" "${@:3}" \
    --checks all --phases "${phases:-examples,coverage,fuzzing,stateful}" \
    --max-examples "$examples" --seed "${CONTRACT_SEED:-$RANDOM}" --workers 1 \
    --request-timeout 10 --no-color --output-truncate true ${CONTRACT_ARGS:-}; then
    failed+=("$name")
  fi
}
for service in $services; do
  for role in user admin; do
    ending=${ends_session[$service]:-}
    if [[ -n $ending ]]; then
      phases=examples,coverage,fuzzing fuzz "$service" "$role" --include-name "$ending"
      fuzz "$service" "$role" --exclude-name "$ending"
    else
      fuzz "$service" "$role"
    fi
  done
done

if ((${#failed[@]})); then
  kept=${TMPDIR:-/tmp}/contract-logs-$$
  cp -r "$STACK_LOGS" "$kept"
  say "failures: ${failed[*]}; the services' logs are in $kept"
  exit 1
fi
say "no failures on: $services"

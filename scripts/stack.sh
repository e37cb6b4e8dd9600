# Sourced by scripts that run auth, users and orders as processes against the local
# PostgreSQL, Redis and RabbitMQ, on free ports, databases and a RabbitMQ vhost of their own
# (the event contract names the queues, so two stacks on one vhost would share them):
#
#   source scripts/stack.sh
#   STACK_LOGS=$dir                          # optional: each service logs to $dir/<service>.log
#   stack_init "$bin_dir" contract "$work"   # binaries, a name for this stack, a scratch dir
#   start_auth; start_users; start_orders    # each takes extra VAR=VALUE settings
#   wait_for "$users_url/health/ready"
#
# Every process started is in `pids`; stack_stop (also run on exit) stops them all, and
# drop_stack_data then removes the databases and the vhost.
# The callers set `set -euo pipefail` and define `say`.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for URL: until it answers 200, for up to 30 s.
wait_for() {
  for _ in $(seq 1 300); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]] && return 0
    sleep 0.1
  done
  say "$1 never answered 200${STACK_LOGS:+; logs in $STACK_LOGS}"
  return 1
}

pids=()
stack_stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }

# rabbitmq_admin METHOD PATH [BODY]: a call to the local management API; fails when it is off.
rabbitmq_admin() {
  curl -sf -o /dev/null -u guest:guest -X "$1" -H 'content-type: application/json' \
    ${3:+-d "$3"} "http://127.0.0.1:15672/api/$2"
}

# stack_init BIN NAME WORK: ports for the three services, an Ed25519 signing key `NAME-1`
# in WORK/keys, the RabbitMQ vhost tessera-NAME, and databases tessera_<service>_NAME (each
# service creates its own).
stack_init() {
  stack_bin=$1 stack_name=$2 stack_work=$3
  stack_vhost="tessera-$stack_name"
  if rabbitmq_admin PUT "vhosts/$stack_vhost"; then
    rabbitmq_admin PUT "permissions/$stack_vhost/guest" '{"configure":".*","write":".*","read":".*"}'
  else
    rabbitmqctl -q add_vhost "$stack_vhost" >/dev/null
    rabbitmqctl -q set_permissions -p "$stack_vhost" guest '.*' '.*' '.*' >/dev/null
  fi
  mkdir -p "$stack_work/keys"
  openssl genpkey -algorithm ed25519 -out "$stack_work/keys/$stack_name-1.pem"
  auth_http=$(free_port) auth_grpc=$(free_port) users_http=$(free_port) users_grpc=$(free_port)
  orders_http=$(free_port) orders_grpc=$(free_port)
  auth_url="http://127.0.0.1:$auth_http" users_url="http://127.0.0.1:$users_http"
  orders_url="http://127.0.0.1:$orders_http"
  [[ -z ${STACK_LOGS:-} ]] || mkdir -p "$STACK_LOGS"
}

# log_of SERVICE: where that service's output goes.
log_of() { if [[ -n ${STACK_LOGS:-} ]]; then echo "$STACK_LOGS/$1.log"; else echo /dev/null; fi; }

# start SERVICE [VAR=VALUE...]: the service in the background, on its ports, its own
# database and the stack's vhost, logging as in production; the variables given come last and win.
start() {
  local service=$1 prefix=${1^^} http_var=${1}_http grpc_var=${1}_grpc
  shift
  ( export "${prefix}_HOST=127.0.0.1" "${prefix}_LOG_FORMAT=json" "${prefix}_LOG_FILTER=info" \
      "${prefix}_HTTP_PORT=${!http_var}" "${prefix}_GRPC_PORT=${!grpc_var}" \
      "${prefix}_DATABASE_URL=postgres://postgres@127.0.0.1:5432/tessera_${service}_$stack_name" \
      "${prefix}_REDIS_URL=redis://127.0.0.1:6379/0" \
      "${prefix}_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$stack_vhost" "$@"
    exec "$stack_bin/$service" serve >>"$(log_of "$service")" 2>&1 ) &
  pids+=("$!")
}

# start_auth [VAR=VALUE...]: auth signing with `$stack_name-1` unless AUTH_SIGNING_KID is given.
start_auth() {
  start auth AUTH_SIGNING_KEYS_DIR="$stack_work/keys" AUTH_SIGNING_KID="$stack_name-1" \
    AUTH_USERS_GRPC_URL="http://127.0.0.1:$users_grpc" \
    AUTH_LOGIN_LIMITS_KEY_PREFIX="tessera:$stack_name:$$" "$@"
  auth_pid=$!
}

# start_users [VAR=VALUE...]
start_users() {
  start users USERS_JWKS_URL="$auth_url/.well-known/jwks.json" "$@"
  users_pid=$!
}

# start_orders [VAR=VALUE...]
start_orders() {
  start orders ORDERS_JWKS_URL="$auth_url/.well-known/jwks.json" \
    ORDERS_USERS_GRPC_URL="http://127.0.0.1:$users_grpc" "$@"
  orders_pid=$!
}

# stop PID: stops one process gracefully and waits for it.
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# drop_stack_data: removes the stack's databases and vhost (after stack_stop).
drop_stack_data() {
  local service
  for service in auth users orders; do
    psql -qtA -h 127.0.0.1 -U postgres -d postgres \
      -c "DROP DATABASE IF EXISTS tessera_${service}_$stack_name WITH (FORCE)" >/dev/null || true
  done
  rabbitmq_admin DELETE "vhosts/$stack_vhost" || rabbitmqctl -q delete_vhost "$stack_vhost" >/dev/null 2>&1 || true
}

# json_post URL BODY [CURL ARGS...]: the response body of a JSON POST.
json_post() { curl -s -X POST -H 'content-type: application/json' -d "$2" "${@:3}" "$1"; }

# field NAME: that field of the JSON document on stdin.
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# register_account NAME: a new account registered through auth (which creates its profile
# in users) and logged in; sets email, password, credentials (the login body), user_id and
# token.
register_account() {
  email="$1-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')@example.com"
  password="$1 password $RANDOM$RANDOM"
  credentials="{\"email\":\"$email\",\"password\":\"$password\"}"
  user_id=$(json_post "$auth_url/api/v1/auth/register" "{\"email\":\"$email\",\"password\":\"$password\",\"display_name\":\"$1\"}" | field user_id)
  token=$(json_post "$auth_url/api/v1/auth/login" "$credentials" | field access_token)
}

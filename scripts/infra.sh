#!/usr/bin/env bash
# Makes sure the local PostgreSQL, Redis and RabbitMQ answer, starting the ones that are down.
#
#   scripts/infra.sh          check, and start what is down
#
# When a server is not installed it says how to install it; with CI set and running as root
# it installs it (Debian packages postgresql, redis-server, rabbitmq-server).
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1} PG_PORT=${PG_PORT:-5432}
REDIS_HOST=${REDIS_HOST:-127.0.0.1} REDIS_PORT=${REDIS_PORT:-6379}
AMQP_HOST=${AMQP_HOST:-127.0.0.1} AMQP_PORT=${AMQP_PORT:-5672}

say() { printf 'infra: %s\n' "$*" >&2; }

# answers HOST PORT: true when something accepts TCP connections there.
answers() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# wait_for NAME HOST PORT SECONDS
wait_for() {
  local deadline=$((SECONDS + $4))
  until answers "$2" "$3"; do
    if ((SECONDS >= deadline)); then say "$1 did not come up on $2:$3 within $4 s"; return 1; fi
    sleep 0.5
  done
  say "$1 is up on $2:$3"
}

# install PACKAGE COMMAND: installs a missing server when allowed, or explains how.
install() {
  if command -v "$2" >/dev/null 2>&1; then return 0; fi
  if [[ -n "${CI:-}" && $(id -u) == 0 ]]; then
    say "installing $1"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    say "$1 is not installed: run 'sudo apt-get install $1' (or set CI=1 as root to let this script do it)"
    return 1
  fi
}

postgres() {
  answers "$PG_HOST" "$PG_PORT" && { say "PostgreSQL is up on $PG_HOST:$PG_PORT"; return; }
  install postgresql pg_ctlcluster
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  wait_for PostgreSQL "$PG_HOST" "$PG_PORT" 30
}

redis() {
  answers "$REDIS_HOST" "$REDIS_PORT" && { say "Redis is up on $REDIS_HOST:$REDIS_PORT"; return; }
  install redis-server redis-server
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis "$REDIS_HOST" "$REDIS_PORT" 15
}

rabbitmq() {
  answers "$AMQP_HOST" "$AMQP_PORT" && { say "RabbitMQ is up on $AMQP_HOST:$AMQP_PORT"; return; }
  install rabbitmq-server rabbitmq-server
  say "starting RabbitMQ"
  rabbitmq-server -detached
  wait_for RabbitMQ "$AMQP_HOST" "$AMQP_PORT" 90
}

# Tests make a RabbitMQ vhost each, through the management API when it answers (cheap) or
# with rabbitmqctl (an Erlang VM per call). The plugin ships with rabbitmq-server.
rabbitmq_management() {
  answers "$AMQP_HOST" 15672 && return
  [[ $AMQP_HOST == 127.0.0.1 || $AMQP_HOST == localhost ]] || return 0
  command -v rabbitmq-plugins >/dev/null 2>&1 || return 0
  say "enabling RabbitMQ's management API (tests create their vhosts through it)"
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null 2>&1 \
    && wait_for "RabbitMQ management" "$AMQP_HOST" 15672 30 \
    || say "RabbitMQ management is not available; tests will use rabbitmqctl"
}

postgres
redis
rabbitmq
rabbitmq_management

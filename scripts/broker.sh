#!/usr/bin/env bash
# Start or stop a private RabbitMQ node for tests and `make run`.
#
#   scripts/broker.sh start DIR PORT   # boots a node with its data under DIR, listening on 127.0.0.1:PORT
#   scripts/broker.sh stop DIR
#   scripts/broker.sh stop-stale DIR   # stops a node an earlier run left running on DIR, if any
#   scripts/broker.sh ctl DIR ARGS...  # rabbitmqctl against that node
#
# The node has its own name, ports, data, logs and Erlang cookie, so it never
# touches a system broker. If it cannot boot, this script prints its log and
# exits non-zero: tests must fail loudly, never skip.
set -euo pipefail

cmd=${1:?usage: broker.sh start|stop|stop-stale|ctl DIR [PORT]}
dir=${2:?usage: broker.sh start|stop|stop-stale|ctl DIR [PORT]}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

node_env() {
    local port
    port=$(cat "$dir/port" 2>/dev/null || echo 5672)
    export HOME="$dir"
    export RABBITMQ_NODENAME="warren-test-$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$port"
    export RABBITMQ_DIST_PORT=$((port + 20000))
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
    export ERL_EPMD_PORT=$((port + 21000))
}

# True when PID is the Erlang VM of this very node: beam.smp, with this
# node's name and this directory's pid file in its environment. A pid file
# left behind names a pid the system may since have given to anything.
is_this_node() {
    local pid=$1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] || return 1
    local environ
    environ=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null) || return 1
    grep -qxF "RABBITMQ_NODENAME=$RABBITMQ_NODENAME" <<<"$environ" &&
        grep -qxF "RABBITMQ_PID_FILE=$RABBITMQ_PID_FILE" <<<"$environ"
}

case "$cmd" in
start)
    port=${3:?usage: broker.sh start DIR PORT}
    command -v rabbitmq-server >/dev/null || { echo "broker.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
    echo "$port" > "$dir/port"
    node_env
    mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    echo '[].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    # A TLS listener on port+5000 with a CA made now, for the TLS tests;
    # a second, unrelated CA lets them check that a wrong one is refused.
    tls="$dir/tls"
    mkdir -p "$tls"
    if command -v openssl >/dev/null; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=warren test CA" \
            -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=unrelated CA" \
            -keyout "$tls/other-ca.key" -out "$tls/other-ca.pem" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
        printf 'subjectAltName=DNS:localhost\n' > "$tls/san.ext"
        openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
            -days 3 -extfile "$tls/san.ext" -out "$tls/server.pem" 2>/dev/null
        tls_conf="listeners.ssl.default = 127.0.0.1:$((port + 5000))
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false"
    else
        tls_conf="# openssl missing: no TLS listener"
    fi
    cat > "$dir/rabbitmq.conf" <<CONF
loopback_users = none
log.console = false
log.file.level = warning
# handlers in tests may legitimately run for minutes
consumer_timeout = 3600000
# frames up to 4 MiB (the default is 128 KiB), so tests can publish a message
# whose headers alone are a megabyte
frame_max = 4194304
$tls_conf
CONF
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown -R rabbitmq:rabbitmq "$dir"
    fi
    if [ -f "$RABBITMQ_PID_FILE" ] && rabbitmqctl -q status >/dev/null 2>&1; then
        echo "broker.sh: node already running on port $port"
        exit 0
    fi
    setsid rabbitmq-server > "$dir/server.out" 2>&1 < /dev/null &
    if ! rabbitmqctl -q wait --timeout 90 "$RABBITMQ_PID_FILE" >/dev/null 2>&1; then
        echo "broker.sh: RabbitMQ did not start; its output follows" >&2
        cat "$dir/server.out" >&2 || true
        tail -n 50 "$RABBITMQ_LOG_BASE"/*.log >&2 2>/dev/null || true
        exit 1
    fi
    echo "broker.sh: RabbitMQ ready on amqp://guest:guest@127.0.0.1:$port/%2f (data in $dir)"
    ;;
stop)
    node_env
    rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
    ;;
stop-stale)
    # A node an earlier run started on DIR and never stopped (its terminal
    # was closed, it was killed): found by its pid file, stopped, and
    # killed if it will not stop. Nothing happens without a live node.
    node_env
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    case "$pid" in ''|*[!0-9]*) exit 0 ;; esac
    if ! is_this_node "$pid"; then
        echo "broker.sh: $RABBITMQ_PID_FILE names pid $pid, which is not node $RABBITMQ_NODENAME: left alone"
        exit 0
    fi
    echo "broker.sh: stopping node $RABBITMQ_NODENAME (pid $pid), left running by an earlier run on $dir"
    rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do is_this_node "$pid" || break; sleep 0.1; done
    if is_this_node "$pid"; then
        echo "broker.sh: node $RABBITMQ_NODENAME did not stop; killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
    ;;
ctl)
    node_env
    shift 2
    exec rabbitmqctl -q "$@"
    ;;
*)
    echo "usage: broker.sh start|stop|stop-stale|ctl DIR [PORT]" >&2; exit 2 ;;
esac

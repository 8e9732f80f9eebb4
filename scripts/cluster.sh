#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on loopback, for `make test-cluster`.
#
#   scripts/cluster.sh start DIR PORT    # nodes listen on 127.0.0.1:PORT, PORT+1, PORT+2
#   scripts/cluster.sh stop DIR
#   scripts/cluster.sh ctl DIR N ARGS... # rabbitmqctl against node N (1, 2 or 3)
#
# Each node has its own name, AMQP and distribution ports, data and log
# directories; the three share one epmd (on PORT+21000, so nodes find each
# other, and no other broker's) and an Erlang cookie made for this cluster.
# Nodes 2 and 3 join node 1. If a node cannot boot or join, this prints its
# log and exits non-zero: the cluster tests fail loudly, never skip.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop|ctl DIR [PORT|N]}
dir=${2:?usage: cluster.sh start|stop|ctl DIR [PORT|N]}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

node_env() {
    local n=$1 port
    port=$(cat "$dir/port")
    export HOME="$dir/n$n"
    export RABBITMQ_NODENAME="warren-cluster-$n-$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$((port + n - 1))
    export RABBITMQ_DIST_PORT=$((port + 20000 + n - 1))
    export RABBITMQ_MNESIA_BASE="$dir/n$n/mnesia"
    export RABBITMQ_LOG_BASE="$dir/n$n/log"
    export RABBITMQ_PID_FILE="$dir/n$n/rabbitmq.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/n$n/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$dir/n$n/rabbitmq"
    export ERL_EPMD_PORT=$((port + 21000))
    # The cluster's own cookie (the Debian scripts run the node as the
    # rabbitmq user with that user's HOME, so a cookie file in our HOME
    # would not be read).
    export RABBITMQ_ERLANG_COOKIE
    RABBITMQ_ERLANG_COOKIE=$(cat "$dir/cookie")
}

# Every rabbitmqctl call has a deadline: a node that does not answer must
# not hold the tests.
ctl() {
    local n=$1
    shift
    (node_env "$n"; timeout 120 rabbitmqctl -q "$@")
}

ports_of() {
    local port=$1
    echo $port $((port + 1)) $((port + 2)) $((port + 20000)) $((port + 20001)) $((port + 20002)) $((port + 21000))
}

case "$cmd" in
start)
    port=${3:?usage: cluster.sh start DIR PORT}
    command -v rabbitmq-server >/dev/null || { echo "cluster.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
    # The epmd on PORT+21000 must be this cluster's alone: stop kills it.
    for p in $(ports_of "$port"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "cluster.sh: port $p is in use; choose another PORT (see scripts/test-cluster.sh)" >&2
            exit 1
        fi
    done
    echo "$port" > "$dir/port"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/cookie"
    for n in 1 2 3; do
        mkdir -p "$dir/n$n/mnesia" "$dir/n$n/log"
        echo '[].' > "$dir/n$n/enabled_plugins"
        cat > "$dir/n$n/rabbitmq.conf" <<CONF
loopback_users = none
log.console = false
log.file.level = warning
consumer_timeout = 3600000
CONF
    done
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown -R rabbitmq:rabbitmq "$dir"
    fi
    for n in 1 2 3; do
        (node_env "$n"; setsid rabbitmq-server > "$dir/n$n/server.out" 2>&1 < /dev/null &)
    done
    for n in 1 2 3; do
        if ! (node_env "$n"; timeout 150 rabbitmqctl -q wait --timeout 120 "$RABBITMQ_PID_FILE" >/dev/null 2>&1); then
            echo "cluster.sh: node $n did not start; its output follows" >&2
            cat "$dir/n$n/server.out" >&2 || true
            tail -n 50 "$dir/n$n/log"/*.log >&2 2>/dev/null || true
            exit 1
        fi
    done
    for n in 2 3; do
        if ! { ctl "$n" stop_app && ctl "$n" join_cluster "warren-cluster-1-$port@localhost" && ctl "$n" start_app; } >/dev/null 2>"$dir/n$n/join.err"; then
            echo "cluster.sh: node $n could not join node 1:" >&2
            cat "$dir/n$n/join.err" >&2
            exit 1
        fi
    done
    echo "cluster.sh: three nodes on 127.0.0.1:$port-$((port + 2)) (data in $dir)"
    ;;
stop)
    for n in 1 2 3; do
        [ -f "$dir/n$n/rabbitmq.pid" ] || continue
        (node_env "$n"; timeout 60 rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1) || true
    done
    epmd -port $(($(cat "$dir/port") + 21000)) -kill >/dev/null 2>&1 || true
    ;;
ctl)
    n=${3:?usage: cluster.sh ctl DIR N ARGS...}
    shift 3
    ctl "$n" "$@"
    ;;
*)
    echo "usage: cluster.sh start|stop|ctl DIR [PORT|N]" >&2; exit 2 ;;
esac

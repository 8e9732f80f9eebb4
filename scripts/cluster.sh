#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on loopback, for `make test-cluster`.
#
#   scripts/cluster.sh start DIR [PORT]  # nodes on 127.0.0.1:P, P+1, P+2: P is the first base from PORT
#                                        # (default 29100) whose ports are all free, written to DIR/port
#   scripts/cluster.sh stop DIR
#   scripts/cluster.sh ctl DIR N ARGS... # rabbitmqctl against node N (1, 2 or 3)
#   scripts/cluster.sh kill DIR N        # kill -9 node N: a crash, not a clean stop
#   scripts/cluster.sh restart DIR N     # boot node N again (it rejoins the cluster)
#
# Each node has its own name, AMQP and distribution ports, data and log
# directories; the three share one epmd (on P+13, so nodes find each other,
# and no other broker's) and an Erlang cookie made for this cluster. Every
# port is below Linux's ephemeral range (32768 and up), where an outgoing
# connection could take one between the check and the boot. Nodes 2 and 3
# join node 1. If a node cannot boot or join, this prints its log and exits
# non-zero: the cluster tests fail loudly, never skip.
set -euo pipefail

usage="usage: cluster.sh start|stop|ctl|kill|restart DIR [PORT|N]"
cmd=${1:?$usage}
dir=${2:?$usage}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

node_env() {
    local n=$1 port
    port=$(cat "$dir/port")
    export HOME="$dir/n$n"
    export RABBITMQ_NODENAME="warren-cluster-$n-$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$((port + n - 1))
    export RABBITMQ_DIST_PORT=$((port + 10 + n - 1))
    export RABBITMQ_MNESIA_BASE="$dir/n$n/mnesia"
    export RABBITMQ_LOG_BASE="$dir/n$n/log"
    export RABBITMQ_PID_FILE="$dir/n$n/rabbitmq.pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/n$n/enabled_plugins"
    export RABBITMQ_CONFIG_FILE="$dir/n$n/rabbitmq"
    export ERL_EPMD_PORT=$((port + 13))
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
    echo "$port" $((port + 1)) $((port + 2)) $((port + 10)) $((port + 11)) $((port + 12)) $((port + 13))
}

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

any_in_use() {
    local p
    for p in $(ports_of "$1"); do
        if in_use "$p"; then return 0; fi
    done
    return 1
}

# The node's own Erlang VM, found by the node name in its environment (its
# command line does not carry it), never by a pid file that may be stale.
node_pid() {
    local n=$1 pid name
    name="RABBITMQ_NODENAME=warren-cluster-$n-$(cat "$dir/port")@localhost"
    for pid in $(pgrep -x beam.smp); do
        # rabbitmqctl runs in a beam.smp with the same node name: only the
        # server boots the rabbit application.
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "$name" \
            && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-s rabbit boot"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

boot() {
    (node_env "$1"; setsid rabbitmq-server >> "$dir/n$1/server.out" 2>&1 < /dev/null &)
}

wait_for() {
    local n=$1
    if ! (node_env "$n"; timeout 150 rabbitmqctl -q wait --timeout 120 "$RABBITMQ_PID_FILE" >/dev/null 2>&1); then
        echo "cluster.sh: node $n did not start; its output follows" >&2
        cat "$dir/n$n/server.out" >&2 || true
        tail -n 50 "$dir/n$n/log"/*.log >&2 2>/dev/null || true
        exit 1
    fi
}

case "$cmd" in
start)
    port=${3:-29100}
    command -v rabbitmq-server >/dev/null || { echo "cluster.sh: rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2; exit 1; }
    # The epmd on P+13 must be this cluster's alone: stop kills it.
    while any_in_use "$port"; do
        port=$((port + 20))
        [ "$port" -lt 32740 ] || { echo "cluster.sh: no free ports below 32768 from ${3:-29100}" >&2; exit 1; }
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
    for n in 1 2 3; do boot "$n"; done
    for n in 1 2 3; do wait_for "$n"; done
    for n in 2 3; do
        if ! { ctl "$n" stop_app && ctl "$n" join_cluster "warren-cluster-1-$port@localhost" && ctl "$n" start_app; } >/dev/null 2>"$dir/n$n/join.err"; then
            echo "cluster.sh: node $n could not join node 1:" >&2
            cat "$dir/n$n/join.err" >&2
            exit 1
        fi
    done
    echo "cluster.sh: three nodes on 127.0.0.1:$port-$((port + 2)) (data in $dir)"
    ;;
kill)
    n=${3:?usage: cluster.sh kill DIR N}
    pid=$(node_pid "$n") || { echo "cluster.sh: node $n is not running" >&2; exit 1; }
    kill -9 "$pid"
    for _ in $(seq 100); do
        [ -d "/proc/$pid" ] || exit 0
        sleep 0.1
    done
    echo "cluster.sh: node $n (pid $pid) outlived kill -9" >&2
    exit 1
    ;;
restart)
    n=${3:?usage: cluster.sh restart DIR N}
    if pid=$(node_pid "$n"); then echo "cluster.sh: node $n is running already (pid $pid)" >&2; exit 1; fi
    boot "$n"
    wait_for "$n"
    ;;
stop)
    [ -f "$dir/port" ] || exit 0
    for n in 1 2 3; do
        if [ -f "$dir/n$n/rabbitmq.pid" ]; then
            (node_env "$n"; timeout 60 rabbitmqctl -q stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1) || true
        fi
        # A node that did not stop in time is not left running.
        while pid=$(node_pid "$n"); do kill -9 "$pid" 2>/dev/null || true; sleep 0.2; done
    done
    epmd -port $(($(cat "$dir/port") + 13)) -kill >/dev/null 2>&1 || true
    ;;
ctl)
    n=${3:?usage: cluster.sh ctl DIR N ARGS...}
    shift 3
    ctl "$n" "$@"
    ;;
*)
    echo "$usage" >&2; exit 2 ;;
esac

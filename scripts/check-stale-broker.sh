#!/usr/bin/env bash
# `broker.sh stop-stale` on a live node, as `make run` uses it on a node an
# earlier run left behind: a pid file whose pid belongs to another process
# (here a sleep) leaves both that process and the node alone; the node's own
# pid file gets the node stopped. Run by scripts/test.sh on its broker at
# the end; it leaves the node stopped.
#
#   scripts/check-stale-broker.sh DIR   # DIR: a running node's data directory
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: check-stale-broker.sh DIR}
pidfile="$dir/rabbitmq.pid"
fail() { echo "check-stale-broker: $*" >&2; exit 1; }
node=$(cat "$pidfile")
[ "$(cat "/proc/$node/comm" 2>/dev/null)" = beam.smp ] || fail "$pidfile does not name a running node"
sleep 60 &
other=$!
trap 'kill "$other" 2>/dev/null || true; echo "$node" > "$pidfile"' EXIT
echo "$other" > "$pidfile"
scripts/broker.sh stop-stale "$dir" >/dev/null
kill -0 "$other" 2>/dev/null || fail "stop-stale killed pid $other, an unrelated process its pid file named"
kill -0 "$node" 2>/dev/null || fail "stop-stale stopped the node though its pid file named another process"
echo "$node" > "$pidfile"
scripts/broker.sh stop-stale "$dir" >/dev/null
! kill -0 "$node" 2>/dev/null || fail "stop-stale left the node (pid $node) running"
echo "stale broker checked: an unrelated pid is left alone, the node left running is stopped"

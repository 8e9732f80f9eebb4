#!/usr/bin/env bash
# `make run`: warren on config/warren.ini. With no BROKER_URL, starts a
# private RabbitMQ node under .build/, publishes demo messages (each with a
# message id: one fails once and is retried, one is rejected and
# dead-lettered), and stops the node when warren exits (Ctrl-C drains).
# warren logs one line per message it settles (outcome=ack, retry,
# dead_letter, ...), beside what the demo handler prints.
#
# A node an earlier `make run` left running (its terminal closed, the
# script killed) is found by the pid file in its data directory and
# stopped first; a pid file whose pid now belongs to another process is
# left alone (scripts/broker.sh stop-stale).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${CONFIG:-config/warren.ini}
binary=${WARREN:-.build/debug/warren}
if [ -n "${BROKER_URL:-}" ]; then
    exec "$binary" --config "$config"
fi
dir="$PWD/.build/broker-run"
scripts/broker.sh stop-stale "$dir"
rm -rf "$dir"
publisher=.build/demo-publish
if [ ! -x "$publisher" ] || [ scripts/demo-publish.c -nt "$publisher" ]; then
    "${CC:-cc}" -O2 -Wall -o "$publisher" scripts/demo-publish.c -lrabbitmq
fi
port=$(scripts/free-port.sh "${BROKER_PORT:-25700}")
cleanup() { echo "stopping the private broker"; scripts/broker.sh stop "$dir" || true; }
trap cleanup EXIT
trap ':' INT TERM
scripts/broker.sh start "$dir" "$port"
queue=$(sed -n 's/^queue *= *//p' "$config" | head -n 1)
count=24
for n in $(seq 1 "$count"); do
    case $n in
    5) printf 'demo-%s\tdemo message %s: fails once (exit 75), then succeeds\n' "$n" "$n" ;;
    9) printf 'demo-%s\tdemo message %s: rejected (exit 65), dead-lettered\n' "$n" "$n" ;;
    *) printf 'demo-%s\tdemo message %s\n' "$n" "$n" ;;
    esac
done | "$publisher" "$port" "$queue" >/dev/null
echo "published $count demo messages (demo-1 to demo-$count) to '$queue'; press Ctrl-C to watch warren drain"
WARREN_BROKER_URL="amqp://guest:guest@127.0.0.1:$port/%2f" "$binary" --config "$config" || status=$?
exit "${status:-0}"

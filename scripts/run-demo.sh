#!/usr/bin/env bash
# `make run`: warren on config/warren.ini. With no BROKER_URL, starts a
# private RabbitMQ node under .build/, declares the demo queue, publishes a
# few demo messages, and stops the node when warren exits (Ctrl-C drains).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${CONFIG:-config/warren.ini}
binary=${WARREN:-.build/debug/warren}
if [ -n "${BROKER_URL:-}" ]; then
    exec "$binary" --config "$config"
fi
port=$(scripts/free-port.sh "${BROKER_PORT:-25700}")
dir="$PWD/.build/broker-run"
rm -rf "$dir"
cleanup() { echo "stopping the private broker"; scripts/broker.sh stop "$dir" || true; }
trap cleanup EXIT
trap ':' INT TERM
scripts/broker.sh start "$dir" "$port"
queue=$(sed -n 's/^queue *= *//p' "$config" | head -n 1)
amqp-declare-queue --url="amqp://guest:guest@127.0.0.1:$port" -d -q "$queue" >/dev/null
for n in $(seq 1 24); do
    amqp-publish --url="amqp://guest:guest@127.0.0.1:$port" -r "$queue" -p -C text/plain -b "demo message $n"
done
echo "published 24 demo messages to '$queue'; press Ctrl-C to watch warren drain"
WARREN_BROKER_URL="amqp://guest:guest@127.0.0.1:$port/%2f" "$binary" --config "$config" || status=$?
exit "${status:-0}"

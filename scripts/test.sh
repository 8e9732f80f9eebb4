#!/usr/bin/env bash
# The whole test suite against a private RabbitMQ node that this script
# starts (own port, own data directory) and stops afterwards. If the broker
# cannot start, this fails with its log: no test skips but the cluster
# suite, which `make test-cluster` runs against three nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(scripts/free-port.sh "${BROKER_PORT:-25672}")
dir=$(mktemp -d /tmp/warren-test-broker.XXXXXX)
cleanup() { scripts/broker.sh stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
scripts/broker.sh start "$dir" "$port"
export WARREN_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
export WARREN_TEST_BROKER_DIR="$dir"
export WARREN_TEST_TLS_PORT=$((port + 5000))
swift build ${SWIFT_BUILD_FLAGS:-}
# One test at a time: the end-to-end tests time signals and exits, and
# this machine has two cores.
# TEST_FILTER narrows the run (make chaos uses it).
run_tests() { swift test --no-parallel --disable-xctest ${SWIFT_BUILD_FLAGS:-} "$@"; }
if [ -n "${TEST_FILTER:-}" ]; then
    run_tests --filter "$TEST_FILTER"
else
    # Exit tests in a process of their own, first: the main run's process
    # becomes a child subreaper, and an orphan that exits there is a zombie
    # swift-testing's exit-test monitor waits on for ever (see the suite).
    # An exit test anywhere else would run in the main run: refuse it.
    stray=$(grep -l 'processExitsWith' -r Tests | xargs grep -L -E 'struct [A-Za-z]+ExitTests' || true)
    if [ -n "$stray" ]; then
        echo "test.sh: exit tests belong in a suite named *ExitTests (see LifecycleMisuseExitTests): $stray" >&2
        exit 1
    fi
    status=0
    run_tests --filter 'ExitTests' || status=$?
    run_tests --skip 'ExitTests' || status=$?
    [ "$status" -eq 0 ] || exit "$status"
fi
# Last, as it stops the broker: `make run`'s handling of a node an earlier
# run left behind, on this one.
scripts/check-stale-broker.sh "$dir"

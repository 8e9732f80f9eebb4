#!/usr/bin/env bash
# The cluster suite: three private RabbitMQ nodes (scripts/cluster.sh), a
# quorum queue warren declares, two warren processes given all three URLs,
# and the node leading the queue killed (kill -9) and brought back under load.
# Message by message; the consumption pause is measured and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/warren-test-cluster.XXXXXX)
cleanup() { scripts/cluster.sh stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
scripts/cluster.sh start "$dir" "${CLUSTER_PORT:-29100}"
port=$(cat "$dir/port")
export WARREN_TEST_CLUSTER_URLS="amqp://guest:guest@127.0.0.1:$port/%2f amqp://guest:guest@127.0.0.1:$((port + 1))/%2f amqp://guest:guest@127.0.0.1:$((port + 2))/%2f"
export WARREN_TEST_CLUSTER_DIR="$dir"
# The other suites' broker is not started: only the cluster suite runs.
export WARREN_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
swift build ${SWIFT_BUILD_FLAGS:-}
swift test --no-parallel --disable-xctest ${SWIFT_BUILD_FLAGS:-} --filter ClusterTests

#!/usr/bin/env bash
# The cluster suite: three private RabbitMQ nodes (scripts/cluster.sh), a
# quorum queue warren declares, two warren processes given all three URLs,
# and the node leading the queue stopped and brought back under load.
# Message by message; the consumption pause is measured and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below Linux's ephemeral range (32768 and up), where an outgoing connection
# could take a node's port between the check and the boot.
port=${CLUSTER_PORT:-29100}
while in_use "$port" || in_use $((port + 1)) || in_use $((port + 2)) || in_use $((port + 20000)) \
    || in_use $((port + 20001)) || in_use $((port + 20002)) || in_use $((port + 21000)); do
    port=$((port + 3))
done
dir=$(mktemp -d /tmp/warren-test-cluster.XXXXXX)
cleanup() { scripts/cluster.sh stop "$dir" || true; rm -rf "$dir"; }
trap cleanup EXIT
scripts/cluster.sh start "$dir" "$port"
export WARREN_TEST_CLUSTER_URLS="amqp://guest:guest@127.0.0.1:$port/%2f amqp://guest:guest@127.0.0.1:$((port + 1))/%2f amqp://guest:guest@127.0.0.1:$((port + 2))/%2f"
export WARREN_TEST_CLUSTER_DIR="$dir"
# The other suites' broker is not started: only the cluster suite runs.
export WARREN_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
swift build ${SWIFT_BUILD_FLAGS:-}
swift test --no-parallel --disable-xctest ${SWIFT_BUILD_FLAGS:-} --filter ClusterTests

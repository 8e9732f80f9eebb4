#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify`. The units name
# /usr/local/bin/warren, which need not exist here, so a copy pointing at an
# existing executable is verified; everything else is checked as written.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in systemd/warren.service systemd/warren@.service; do
    name=$(basename "$unit")
    sed 's|/usr/local/bin/warren|/bin/true|g' "$unit" > "$tmp/$name"
done
cp "$tmp/warren@.service" "$tmp/warren@demo.service"
cd "$tmp"
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify ./warren.service ./warren@demo.service 2>&1 || true)
# Lines about units other than ours (the host's own, absent here) are not ours to judge.
ours=$(printf '%s\n' "$out" | grep -E 'warren(@demo)?\.service' || true)
if [ -n "$ours" ]; then
    echo "systemd-analyze verify found problems:" >&2
    printf '%s\n' "$ours" >&2
    exit 1
fi
echo "unit files verified: warren.service warren@.service"

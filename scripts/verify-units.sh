#!/usr/bin/env bash
# Checks the unit files with `systemd-analyze verify`, and their exposure
# with `systemd-analyze security --offline`: 3.0 or lower (the README's
# Hardening section; make e2e-systemd checks it again under a real
# systemd). The units name /usr/local/bin/warren, which need not exist
# here, so a copy pointing at an existing executable is verified;
# everything else is checked as written.
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
# --threshold counts tenths: 30 is an exposure of 3.0.
max_exposure=30
for unit in warren.service warren@demo.service; do
    if ! report=$(systemd-analyze security --offline=yes --threshold=$max_exposure "./$unit" 2>&1); then
        printf '%s\n' "$report" | grep -E '✗|Overall' >&2
        echo "$unit: exposure above 3.0 (above; README \"Hardening\" says what each line buys)" >&2
        exit 1
    fi
    scores+="$unit $(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'); "
done
echo "unit files verified: warren.service warren@.service; exposure: ${scores%; } (3.0 at most)"

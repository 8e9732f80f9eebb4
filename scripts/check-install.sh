#!/usr/bin/env bash
# `make install` into a scratch DESTDIR: the binary (with the Swift runtime
# linked in), both units and the sample config land where a Debian admin
# expects them, and a second install keeps an existing config untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
for f in usr/local/bin/warren lib/systemd/system/warren.service lib/systemd/system/warren@.service \
         etc/warren/warren.ini etc/warren/warren.ini.example usr/local/share/doc/warren/README.md; do
    [ -e "$dest/$f" ] || { echo "check-install: $f was not installed" >&2; exit 1; }
done
"$dest/usr/local/bin/warren" --check-config "$dest/etc/warren/warren.ini" >/dev/null
# It must run on a host without a Swift toolchain: no Swift library may be loaded from one.
if ldd "$dest/usr/local/bin/warren" | grep "libswift" >/dev/null; then
    echo "check-install: the installed binary needs Swift's shared libraries:" >&2
    ldd "$dest/usr/local/bin/warren" | grep libswift >&2
    exit 1
fi
echo "; edited by the operator" >> "$dest/etc/warren/warren.ini"
make -s install DESTDIR="$dest" PREFIX=/usr/local >/dev/null
grep -q "edited by the operator" "$dest/etc/warren/warren.ini" || { echo "check-install: install overwrote the config" >&2; exit 1; }
echo "install checked: binary (no Swift libraries needed), units and config in place; an existing config is kept"

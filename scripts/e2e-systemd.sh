#!/usr/bin/env bash
# `make e2e-systemd`: warren under a real systemd. Boots a minimal Debian in
# systemd-nspawn (debootstrap, cached under .build/e2e-root), installs the
# statically linked binary and the real units with drop-ins, points them at
# a private broker on the host (the container shares the host network), and
# checks, message by message (every id processed once and acked, or still
# queued; stops clean: no SIGKILL, result success):
#  - warren.service: `systemctl stop`, `reload` and `restart` with shell handlers;
#  - warren@langs.service: Python and Node.js handlers under the same
#    hardening, and the broker password from `LoadCredential=` through
#    `password_file` (the URL names the user only).
# Both units' exposure (`systemd-analyze security`) must be 3.0 or lower.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$PWD/.build/e2e-root"
work=$(mktemp -d /tmp/warren-e2e-systemd.XXXXXX)
chmod 755 "$work"  # the broker runs as the rabbitmq user
nspawn_pid=""
cleanup() {
    [ -n "$nspawn_pid" ] && kill -TERM "$nspawn_pid" 2>/dev/null && wait "$nspawn_pid" 2>/dev/null || true
    scripts/broker.sh stop "$work/broker" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "e2e-systemd: FAIL: $*" >&2
    [ -n "${container:-}" ] && nsenter -t "$container" -a journalctl --no-pager -b -u warren 2>/dev/null | tail -n 30 >&2
    [ -n "${container:-}" ] && nsenter -t "$container" -a ps axf >&2
    [ -n "${port:-}" ] && echo "ready in the queue: $(.build/bench-tool count 127.0.0.1 "$port" "$queue" 0 0)" >&2
    exit 1
}

for tool in systemd-nspawn debootstrap nsenter; do
    command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd-container debootstrap >/dev/null; break; }
done

echo "== building warren with the Swift runtime linked in"
swift build -c release --product warren --static-swift-stdlib --scratch-path .build-static >/dev/null
cc -O2 -o .build/bench-tool Benchmarks/bench-tool.c -lrabbitmq

# The mirror apt already uses (this project names none): the first enabled
# "deb" source of a release suite (not -security or -updates), from deb822
# .sources files or one-line .list files. DEBIAN_MIRROR overrides.
apt_mirror() {
    local etc=$1 found
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return 0; fi
    found=$(cat "$etc"/sources.list.d/*.sources 2>/dev/null | awk '
        BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uris = ""; suites = ""; enabled = "yes"
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^[ \t]*#/) continue
                split($i, kv, ":"); key = tolower(kv[1]); value = substr($i, length(kv[1]) + 2)
                gsub(/^[ \t]+|[ \t]+$/, "", value)
                if (key == "types") types = value
                else if (key == "uris") uris = value
                else if (key == "suites") suites = value
                else if (key == "enabled") enabled = tolower(value)
            }
            if (enabled == "no" || (" " types " ") !~ / deb / || uris == "") next
            n = split(suites, list, /[ \t]+/)
            for (j = 1; j <= n; j++) if (list[j] != "" && list[j] !~ /[-\/]/) { split(uris, u, /[ \t]+/); print u[1]; exit }
        }')
    if [ -z "$found" ]; then
        found=$(cat "$etc"/sources.list "$etc"/sources.list.d/*.list 2>/dev/null | awk '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) != "" && $(i + 1) !~ /[-\/]/) { print $i; exit }
            }')
    fi
    [ -n "$found" ] && echo "$found"
}

# python3 and nodejs: handlers in the languages the hardened unit must
# leave working (Node's JIT needs writable, executable memory).
packages=systemd,systemd-sysv,dbus,librabbitmq4,procps,python3,nodejs
if [ ! -x "$root_dir/lib/systemd/systemd" ] || [ "$(cat "$root_dir/.e2e-packages" 2>/dev/null)" != "$packages" ]; then
    echo "== debootstrap (once; cached in $root_dir)"
    mirror=$(apt_mirror /etc/apt) || {
        echo "no Debian archive found in apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list or *.sources);" \
             "add one, or give the mirror to use as DEBIAN_MIRROR=URL" >&2
        exit 1
    }
    echo "   from $mirror"
    rm -rf "$root_dir"
    debootstrap --variant=minbase --include="$packages" bookworm "$root_dir" "$mirror" >/dev/null
    echo "$packages" > "$root_dir/.e2e-packages"
fi

port=$(scripts/free-port.sh 26672)
scripts/broker.sh start "$work/broker" "$port" >/dev/null
url="amqp://guest:guest@127.0.0.1:$port/%2f"
queue="e2e.systemd"
tool() { .build/bench-tool "$@"; }
tool count 127.0.0.1 "$port" "$queue" 0 0 >/dev/null

echo "== installing warren in the container"
install -m 0755 .build-static/release/warren "$root_dir/usr/local/bin/warren"
install -m 0644 systemd/warren.service systemd/warren@.service "$root_dir/etc/systemd/system/"
mkdir -p "$root_dir/etc/warren" "$root_dir/etc/systemd/system/warren.service.d" "$root_dir/var/lib/warren-e2e" \
    "$root_dir/etc/systemd/system/warren@langs.service.d"
chroot "$root_dir" /bin/sh -c 'id warren >/dev/null 2>&1 || useradd --system --user-group --no-create-home warren'
chroot "$root_dir" chown warren:warren /var/lib/warren-e2e
for file in finished stops langs-finished langs-stops; do
    : > "$root_dir/var/lib/warren-e2e/$file"
    chmod 666 "$root_dir/var/lib/warren-e2e/$file"
done
cat > "$root_dir/usr/local/bin/e2e-handler" <<'H'
#!/bin/sh
# Records the message id (its body) once the work is done.
id=$(cat)
sleep 1
echo "$id" >> /var/lib/warren-e2e/finished
H
chmod 755 "$root_dir/usr/local/bin/e2e-handler"
# Handlers in Python and Node.js for warren@langs: each records the id,
# its language, and whether warren's credentials variable reached it.
cat > "$root_dir/usr/local/bin/e2e-handler.py" <<'H'
#!/usr/bin/python3
import os, sys
body = sys.stdin.read()
seen = "credentials-visible" if "CREDENTIALS_DIRECTORY" in os.environ else "ok"
with open("/var/lib/warren-e2e/langs-finished", "a") as f:
    f.write(f"{body} python {seen}\n")
H
cat > "$root_dir/usr/local/bin/e2e-handler.js" <<'H'
#!/usr/bin/node
// A hot loop, so V8 compiles optimised code into writable, executable memory.
let body = "";
process.stdin.on("data", (chunk) => { body += chunk; });
process.stdin.on("end", () => {
    let x = 0;
    for (let i = 0; i < 5e6; i++) x = (x + i * 7) % 1000003;
    const seen = "CREDENTIALS_DIRECTORY" in process.env ? "credentials-visible" : "ok";
    require("fs").appendFileSync("/var/lib/warren-e2e/langs-finished", `${body} node ${seen}\n`);
});
H
chmod 755 "$root_dir/usr/local/bin/e2e-handler.py" "$root_dir/usr/local/bin/e2e-handler.js"
# The password only root can read: systemd hands it to the unit.
printf 'guest\n' > "$root_dir/etc/warren/amqp-password"
chmod 600 "$root_dir/etc/warren/amqp-password"
cat > "$root_dir/etc/warren/langs.ini" <<C
[broker]
url = amqp://guest@127.0.0.1:$port/%2f
password_file = /run/credentials/warren@langs.service/amqp-password
heartbeat = 5s
[shutdown]
grace_period = 10s
kill_after = 3s
[consumer.python]
queue = e2e.python
command = /usr/local/bin/e2e-handler.py
prefetch = 4
concurrency = 2
[consumer.node]
queue = e2e.node
command = /usr/local/bin/e2e-handler.js
prefetch = 4
concurrency = 2
C
cat > "$root_dir/etc/systemd/system/warren@langs.service.d/e2e.conf" <<'D'
[Service]
LoadCredential=amqp-password:/etc/warren/amqp-password
ExecStopPost=/bin/sh -c 'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> /var/lib/warren-e2e/langs-stops'
D
tool count 127.0.0.1 "$port" e2e.python 0 0 >/dev/null
tool count 127.0.0.1 "$port" e2e.node 0 0 >/dev/null

write_config() {
    cat > "$root_dir/etc/warren/warren.ini" <<C
[broker]
url = $url
heartbeat = 5s
[shutdown]
grace_period = 10s
kill_after = 3s
[consumer.e2e]
queue = $queue
command = /usr/local/bin/e2e-handler
prefetch = 8
concurrency = $1
C
}
write_config 4
cat > "$root_dir/etc/systemd/system/warren.service.d/e2e.conf" <<'D'
[Service]
ExecStopPost=/bin/sh -c 'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> /var/lib/warren-e2e/stops'
D

echo "== booting the container"
systemd-nspawn -D "$root_dir" -b --register=no --keep-unit --console=read-only > "$work/console.log" 2>&1 &
nspawn_pid=$!
container=""
for _ in $(seq 1 100); do
    container=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$container" ] && nsenter -t "$container" -a systemctl is-system-running >/dev/null 2>&1 && break
    state=$( [ -n "$container" ] && nsenter -t "$container" -a systemctl is-system-running 2>/dev/null || true)
    [ "$state" = degraded ] && break
    sleep 0.2
done
[ -n "$container" ] || fail "the container's systemd did not start: $(cat "$work/console.log")"
ctl() { nsenter -t "$container" -a systemctl "$@"; }
# This boot only: the cached root keeps the journals of earlier runs.
journal() { nsenter -t "$container" -a journalctl --no-pager -b "$@"; }
ctl daemon-reload

echo "== exposure of the units as loaded, drop-ins included (3.0 at most)"
for unit in warren.service warren@langs.service; do
    report=$(nsenter -t "$container" -a systemd-analyze security --threshold=30 "$unit" 2>&1) \
        || fail "$unit: exposure above 3.0: $(printf '%s\n' "$report" | grep -E '✗|Overall')"
    printf '   %s\n' "$(printf '%s\n' "$report" | grep Overall)"
done

published=()
publish() {  # publish N ids with a prefix
    for n in $(seq 1 "$2"); do
        amqp-publish --url="amqp://guest:guest@127.0.0.1:$port" -r "$queue" -b "$1-$n"
        published+=("$1-$n")
    done
}
finished_count() { wc -l < "$root_dir/var/lib/warren-e2e/finished"; }
at_least() { [ "$(finished_count)" -ge "$1" ]; }
wait_for() {  # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}

check_stop() {  # check_stop WHAT [UNIT STOPS-FILE]: the last ExecStopPost record must be a clean exit
    local unit=${2:-warren} stops=${3:-stops} last
    last=$(tail -n 1 "$root_dir/var/lib/warren-e2e/$stops")
    [ "$last" = "success exited 0" ] || fail "$1: the stop was not clean: '$last'"
    if journal -u "$unit" | grep -E "SIGKILL|Killing process|timed out" >/dev/null; then
        fail "$1: systemd had to kill $unit: $(journal -u "$unit" | tail -n 20)"
    fi
}

echo "== systemctl start; systemctl stop mid-work"
publish stop 40
ctl start warren
ctl is-active warren >/dev/null || fail "warren did not become active: $(journal -u warren | tail -n 20)"
wait_for 30 at_least 4 || fail "no work started"
ctl stop warren
check_stop "systemctl stop"
done_after_stop=$(finished_count)
[ "$done_after_stop" -lt 40 ] || fail "the stop came too late to be mid-work"
journal -u warren | grep "stop requested: draining" >/dev/null || fail "no drain in the journal"

echo "== systemctl start; systemctl reload with a new config; systemctl restart"
ctl start warren
publish reload 20
wait_for 30 at_least $((done_after_stop + 4)) || fail "no work after the restart"
write_config 2
ctl reload warren
wait_for 20 sh -c "nsenter -t $container -a journalctl --no-pager -b -u warren | grep -q 'the replaced consumers have drained'" \
    || fail "the reload did not drain the old consumers: $(journal -u warren | tail -n 20)"
ctl is-active warren >/dev/null || fail "warren is not active after the reload"
publish restart 20
ctl restart warren
check_stop "systemctl restart"
wait_for 60 at_least ${#published[@]} || true
ctl stop warren
check_stop "final systemctl stop"

echo "== accounting"
left=$(tool count 127.0.0.1 "$port" "$queue" 0 0)
finished=$(finished_count)
unique=$(sort -u "$root_dir/var/lib/warren-e2e/finished" | wc -l)
[ "$finished" -eq "$unique" ] || fail "$((finished - unique)) messages were processed twice"
[ $((unique + left)) -eq ${#published[@]} ] || fail "published ${#published[@]}, processed $unique, still queued $left: lost $(( ${#published[@]} - unique - left ))"
echo "e2e-systemd: published ${#published[@]}, processed once $unique, processed twice 0, still queued $left, lost 0"
echo "e2e-systemd: stops: $(tr '\n' ';' < "$root_dir/var/lib/warren-e2e/stops")"

echo "== warren@langs: Python and Node.js handlers, the password from LoadCredential="
langs_ids=()
for n in $(seq 1 15); do
    amqp-publish --url="amqp://guest:guest@127.0.0.1:$port" -r e2e.python -b "py-$n"
    amqp-publish --url="amqp://guest:guest@127.0.0.1:$port" -r e2e.node -b "js-$n"
    langs_ids+=("py-$n python ok" "js-$n node ok")
done
langs_count() { wc -l < "$root_dir/var/lib/warren-e2e/langs-finished"; }
ctl start warren@langs || fail "warren@langs did not start: $(journal -u warren@langs | tail -n 20)"
wait_for 90 sh -c "[ \$(wc -l < '$root_dir/var/lib/warren-e2e/langs-finished') -ge ${#langs_ids[@]} ]" \
    || fail "warren@langs processed $(langs_count) of ${#langs_ids[@]}: $(journal -u warren@langs | tail -n 20)"
ctl stop warren@langs
check_stop "systemctl stop warren@langs" warren@langs langs-stops
left_py=$(tool count 127.0.0.1 "$port" e2e.python 0 0)
left_js=$(tool count 127.0.0.1 "$port" e2e.node 0 0)
expected=$(printf '%s\n' "${langs_ids[@]}" | sort)
got=$(sort "$root_dir/var/lib/warren-e2e/langs-finished")
[ "$got" = "$expected" ] || fail "warren@langs: each id once, by its language, without the credentials variable; got: $(diff <(echo "$expected") <(echo "$got") | head -n 10)"
[ "$left_py" = 0 ] && [ "$left_js" = 0 ] || fail "warren@langs: still queued: python $left_py, node $left_js"
echo "e2e-systemd: warren@langs: published ${#langs_ids[@]}, processed once ${#langs_ids[@]} (python 15, node 15), still queued 0, lost 0; stop: $(tail -n 1 "$root_dir/var/lib/warren-e2e/langs-stops")"
echo "1 passed, 0 failed"

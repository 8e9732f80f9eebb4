#!/usr/bin/env bash
# `make e2e-systemd`: warren under a real systemd. Boots a minimal Debian in
# systemd-nspawn (debootstrap, cached under .build/e2e-root), installs the
# statically linked binary and the real unit with a drop-in, points it at a
# private broker on the host (the container shares the host network), and
# checks `systemctl stop`, `reload` and `restart` message by message: every
# id processed once and acked, or still queued; stops clean (no SIGKILL,
# result success).
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
    [ -n "${container:-}" ] && nsenter -t "$container" -a journalctl --no-pager -u warren 2>/dev/null | tail -n 30 >&2
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

if [ ! -x "$root_dir/lib/systemd/systemd" ]; then
    echo "== debootstrap (once; cached in $root_dir)"
    mirror=$(apt_mirror /etc/apt) || {
        echo "no Debian archive found in apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list or *.sources);" \
             "add one, or give the mirror to use as DEBIAN_MIRROR=URL" >&2
        exit 1
    }
    echo "   from $mirror"
    rm -rf "$root_dir"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,librabbitmq4,procps bookworm "$root_dir" "$mirror" >/dev/null
fi

port=$(scripts/free-port.sh 26672)
scripts/broker.sh start "$work/broker" "$port" >/dev/null
url="amqp://guest:guest@127.0.0.1:$port/%2f"
queue="e2e.systemd"
tool() { .build/bench-tool "$@"; }
tool count 127.0.0.1 "$port" "$queue" 0 0 >/dev/null

echo "== installing warren in the container"
install -m 0755 .build-static/release/warren "$root_dir/usr/local/bin/warren"
install -m 0644 systemd/warren.service "$root_dir/etc/systemd/system/warren.service"
mkdir -p "$root_dir/etc/warren" "$root_dir/etc/systemd/system/warren.service.d" "$root_dir/var/lib/warren-e2e"
chroot "$root_dir" /bin/sh -c 'id warren >/dev/null 2>&1 || useradd --system --user-group --no-create-home warren'
chroot "$root_dir" chown warren:warren /var/lib/warren-e2e
: > "$root_dir/var/lib/warren-e2e/finished"
: > "$root_dir/var/lib/warren-e2e/stops"
chmod 666 "$root_dir/var/lib/warren-e2e/finished" "$root_dir/var/lib/warren-e2e/stops"
cat > "$root_dir/usr/local/bin/e2e-handler" <<'H'
#!/bin/sh
# Records the message id (its body) once the work is done.
id=$(cat)
sleep 1
echo "$id" >> /var/lib/warren-e2e/finished
H
chmod 755 "$root_dir/usr/local/bin/e2e-handler"
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
journal() { nsenter -t "$container" -a journalctl --no-pager "$@"; }
ctl daemon-reload

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

check_stop() {  # the last ExecStopPost record must be a clean exit
    local last; last=$(tail -n 1 "$root_dir/var/lib/warren-e2e/stops")
    [ "$last" = "success exited 0" ] || fail "$1: the stop was not clean: '$last'"
    if journal -u warren | grep -E "SIGKILL|Killing process|timed out" >/dev/null; then
        fail "$1: systemd had to kill warren: $(journal -u warren | tail -n 20)"
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
wait_for 20 sh -c "nsenter -t $container -a journalctl --no-pager -u warren | grep -q 'the replaced consumers have drained'" \
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
echo "1 passed, 0 failed"

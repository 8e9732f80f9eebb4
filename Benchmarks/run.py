#!/usr/bin/env python3
"""make bench: warren against a plain rabbitmq-c consumer, in one run.

Alternates the consumers (A B A B ...) so the machine's noise hits them
alike, and reports medians and ratios to the faster of the two C
baselines. Writes the table to bench-results/latest.md and prints it.

Consumers:
  c-ack-drained  Benchmarks/bench-tool.c: rabbitmq-c, one thread, acks with
                 multiple whenever the socket is drained (and every prefetch/2)
  c-ack-half     the same, acking with multiple every prefetch/2 deliveries only
  warren-lib     warren's library, in-process no-op handler (warren-bench)
  warren-cat     the warren binary, command = /bin/cat, one process per message
  amqp-consume   amqp-consume /bin/cat from amqp-tools
  spawn-ceiling  bench-tool spawn: /bin/cat per message, 4 at once, no broker
                 at all; no consumer that runs /bin/cat can beat it here

The first three run at every body size (BENCH_SIZES, bytes, comma
separated); the /bin/cat ones at 256 bytes only.
"""
import calendar, os, re, resource, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPS = int(os.environ.get("BENCH_REPS", "5"))
FAST_N = int(os.environ.get("BENCH_MESSAGES", "100000"))
SLOW_N = int(os.environ.get("BENCH_SLOW_MESSAGES", "3000"))
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "256,4096,65536,1048576").split(",")]
# Bigger bodies, fewer messages: each run stays about as short, and a full
# queue stays well under the broker's memory watermark.
BYTES_PER_RUN = int(os.environ.get("BENCH_BYTES", str(512 << 20)))
PREFETCHES = (100, 1000)
BASELINES = ("c-ack-drained", "c-ack-half")


def messages_for(size):
    n = min(FAST_N, BYTES_PER_RUN // size)
    return max(100, n // 1000 * 1000 if n >= 10000 else n // 100 * 100)


def size_label(size):
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def run_child(argv, stdin=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None):
    """Starts a child under GNU time, which reports its peak RSS; a forked
    Python's own memory would otherwise count as the child's."""
    rss_file = tempfile.mktemp()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + [str(a) for a in argv],
                         stdin=stdin, stdout=stdout, stderr=stderr, env=env)
    p.rss_file = rss_file
    return p


def wait_rusage(p):
    """Waits for p; returns (status, cpu_seconds, maxrss_kb) of the command and every child it reaped."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    with open(p.rss_file) as f:
        rss = int(f.read().split()[-1])
    return p.returncode, ru.ru_utime + ru.ru_stime, rss


def signal_child(p, number):
    """Signals the command under GNU time (time forwards nothing itself)."""
    child = subprocess.check_output(["pgrep", "-P", str(p.pid)], text=True).split()[0]
    os.kill(int(child), number)


class Broker:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="warren-bench-broker.")
        self.port = int(subprocess.check_output([f"{ROOT}/scripts/free-port.sh", "25800"]).strip())
        sh(f"{ROOT}/scripts/broker.sh", "start", self.dir, str(self.port), stdout=subprocess.DEVNULL)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def stop(self):
        subprocess.run([f"{ROOT}/scripts/broker.sh", "stop", self.dir])


def tool(*args):
    return subprocess.check_output([f"{ROOT}/.build/bench-tool", *map(str, args)], text=True)


def fill(broker, queue, n, size=256):
    tool("publish", "127.0.0.1", broker.port, queue, n, size)


def ready(broker, queue):
    out = tool("count", "127.0.0.1", broker.port, queue, 0, 0)
    return int(out.split()[0])


def bench_self_timed(argv):
    p = run_child(argv, stdout=subprocess.PIPE)
    out = p.stdout.read().decode()
    code, cpu, rss = wait_rusage(p)
    if code != 0:
        raise SystemExit(f"{argv[0]} failed with {code}")
    elapsed, count = out.split()[:2]
    return int(count) / float(elapsed), cpu / int(count) * 1e6, rss


def log_time(line):
    """The timestamp warren puts first on each log line, in seconds."""
    stamp = line.split(" ", 1)[0]
    t = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) + float("0" + stamp[19:].rstrip("Z"))


def bench_warren_binary(argv, n):
    """warren in its default configuration logs each line a handler writes
    (here: /bin/cat echoing the body, at info), so its log counts the
    messages done. Timed by the log's own timestamps, from the first
    message's line to the n-th (startup and connecting excluded); then
    stopped."""
    log = tempfile.mktemp()
    with open(log, "w") as err:
        p = run_child(argv, stderr=err)
    done, first, last = 0, None, None
    with open(log) as f:
        pending = ""
        while done < n:
            chunk = f.read()
            if not chunk:
                if p.poll() is not None:
                    raise SystemExit(f"warren exited early: {open(log).read()[-2000:]}")
                time.sleep(0.01)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                if "stream=stdout" not in line:
                    continue
                done += 1
                if done == 1:
                    first = log_time(line)
                if done == n:
                    last = log_time(line)
    signal_child(p, signal.SIGTERM)
    code, cpu, rss = wait_rusage(p)
    return (n - 1) / (last - first), cpu / n * 1e6, rss


def bench_wall(argv, n):
    """For consumers that stop by themselves after n messages."""
    start = time.monotonic()
    p = run_child(argv)
    code, cpu, rss = wait_rusage(p)
    elapsed = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"{argv[0]} failed with {code}")
    return n / elapsed, cpu / n * 1e6, rss


def warren_config(broker, queue, prefetch, command, level="info"):
    path = tempfile.mktemp(suffix=".ini")
    with open(path, "w") as f:
        f.write(f"""[broker]
url = {broker.url}
; timeout = 0 below: the bench's handlers take microseconds, and its broker's
; own acknowledgement timeout is an hour, so warren's check of it is off.
consumer_timeout = 0
[shutdown]
grace_period = 30s
kill_after = 5s
[consumer.bench]
queue = {queue}
command = {command}
prefetch = {prefetch}
concurrency = {min(prefetch, 4)}
timeout = 0
declare = true
[log]
level = {level}
""")
    return path


def wait_running(p, log):
    while "NOTICE running" not in open(log).read():
        if p.poll() is not None:
            raise SystemExit(f"warren exited: {open(log).read()[-2000:]}")
        time.sleep(0.01)


def stop_latency(broker, warren):
    results = {}
    queue = "bench.stop"
    tool("count", "127.0.0.1", broker.port, queue, 0, 0)  # declares it
    samples = []
    for _ in range(REPS):
        cfg = warren_config(broker, queue, 10, "/bin/true", level="notice")
        log = tempfile.mktemp()
        with open(log, "w") as err:
            p = subprocess.Popen([warren, "--config", cfg], stderr=err, stdout=subprocess.DEVNULL)
        wait_running(p, log)
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait()
        samples.append((time.monotonic() - t) * 1000)
    results["nothing in flight"] = statistics.median(samples)
    samples = []
    for _ in range(REPS):
        marker = tempfile.mktemp()
        cfg = warren_config(broker, queue, 10, f"sh -c 'touch {marker}; sleep 1.5'", level="notice")
        log = tempfile.mktemp()
        with open(log, "w") as err:
            p = subprocess.Popen([warren, "--config", cfg], stderr=err, stdout=subprocess.DEVNULL)
        wait_running(p, log)
        fill(broker, queue, 1)
        while not os.path.exists(marker):
            time.sleep(0.005)
        time.sleep(0.5)  # the handler now finishes about 1 s after the signal
        t = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait()
        samples.append((time.monotonic() - t) * 1000)
    results["handler finishing 1 s after the signal"] = statistics.median(samples)
    return results


def main():
    # As `make install` builds it: the Swift runtime linked in.
    static = ["swift", "build", "-c", "release", "--static-swift-stdlib", "--scratch-path", ".build-static"]
    sh(*static, "--product", "warren", cwd=ROOT)
    sh(*static, "--product", "warren-bench", cwd=ROOT)
    os.makedirs(f"{ROOT}/.build", exist_ok=True)
    sh("cc", "-O2", "-Wall", "-o", f"{ROOT}/.build/bench-tool", f"{ROOT}/Benchmarks/bench-tool.c", "-lrabbitmq")
    bindir = subprocess.check_output(static + ["--show-bin-path"], cwd=ROOT, text=True).strip()
    warren, lib = f"{bindir}/warren", f"{bindir}/warren-bench"
    broker = Broker()
    rows = {}
    try:
        for size in SIZES:
            n = messages_for(size)
            for prefetch in PREFETCHES:
                queue = f"bench.s{size}.p{prefetch}"
                tool("count", "127.0.0.1", broker.port, queue, 0, 0)
                consumers = [
                    ("c-ack-drained", n, lambda: bench_self_timed(
                        [f"{ROOT}/.build/bench-tool", "consume", "127.0.0.1", broker.port, queue, n, prefetch])),
                    ("c-ack-half", n, lambda: bench_self_timed(
                        [f"{ROOT}/.build/bench-tool", "consume-half", "127.0.0.1", broker.port, queue, n, prefetch])),
                    ("warren-lib", n, lambda: bench_self_timed(
                        [lib, broker.url, queue, n, prefetch, min(prefetch, 4)])),
                ]
                if size == 256:
                    consumers += [
                        ("warren-cat", SLOW_N, lambda: bench_warren_binary(
                            [warren, "--config", warren_config(broker, queue, prefetch, "/bin/cat")], SLOW_N)),
                        ("amqp-consume", SLOW_N, lambda: bench_wall(
                            ["amqp-consume", "--url", f"amqp://guest:guest@127.0.0.1:{broker.port}", "-q", queue,
                             "-p", str(prefetch), "-c", str(SLOW_N), "/bin/cat"], SLOW_N)),
                        ("spawn-ceiling", SLOW_N, lambda: bench_self_timed(
                            [f"{ROOT}/.build/bench-tool", "spawn", "-", 0, "-", SLOW_N, 4])),
                    ]
                for rep in range(REPS):
                    for name, count, run in consumers:
                        if name != "spawn-ceiling":
                            fill(broker, queue, count, size)
                        rate, cpu, rss = run()
                        # A consumer stopped before the end leaves some behind; empty it for the next.
                        tool("purge", "127.0.0.1", broker.port, queue, 0, 0)
                        rows.setdefault((name, size, prefetch), []).append((rate, cpu, rss))
                        print(f"  {name:13} {size_label(size):>7} prefetch {prefetch:5} run {rep + 1}: {rate:9.0f} msg/s"
                              f"  {cpu:8.1f} µs/msg  {rss / 1024:7.1f} MB", flush=True)
        latency = stop_latency(broker, warren)
    finally:
        broker.stop()

    def med(key, i):
        return statistics.median(r[i] for r in rows[key])

    def paired(a, b, i):
        """The median over repetitions of a/b, each measured right after the
        other: the machine's slow moments cancel out."""
        return statistics.median(x[i] / y[i] for x, y in zip(rows[a], rows[b]))

    lines = [f"warren benchmark, {time.strftime('%Y-%m-%d')}, {os.uname().nodename}: {os.cpu_count()} cores, "
             f"RabbitMQ on loopback, transient messages, manual acks, medians of {REPS}; "
             f"ratios are medians of the {REPS} ratios of runs made one right after the other, "
             f"against the faster C baseline of each row group (marked *)",
             "",
             "| consumer | body | messages | prefetch | msg/s | x faster C | client CPU µs/msg | x its CPU | peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size in SIZES:
        for prefetch in PREFETCHES:
            fastest = max(BASELINES, key=lambda b: med((b, size, prefetch), 0))
            ref = (fastest, size, prefetch)
            for name in ("c-ack-drained", "c-ack-half", "warren-lib", "warren-cat", "amqp-consume", "spawn-ceiling"):
                key = (name, size, prefetch)
                if key not in rows:
                    continue
                count = SLOW_N if name in ("warren-cat", "amqp-consume", "spawn-ceiling") else messages_for(size)
                mark = " *" if name == fastest else ""
                rate, cpu, rss = med(key, 0), med(key, 1), max(r[2] for r in rows[key])
                lines.append(f"| {name}{mark} | {size_label(size)} | {count:,} | {prefetch} | {rate:,.0f} | "
                             f"{paired(key, ref, 0):.2f} | {cpu:.1f} | {paired(key, ref, 1):.1f} | {rss / 1024:.1f} |")
            if size == 256:
                for a, b in (("warren-cat", "amqp-consume"), ("warren-cat", "spawn-ceiling"),
                             ("spawn-ceiling", "amqp-consume")):
                    lines.append(f"| {a} / {b} | {size_label(size)} | | {prefetch} | | "
                                 f"{paired((a, size, prefetch), (b, size, prefetch), 0):.2f} | | | |")
    lines += ["", "| stop latency (SIGTERM to exit) | ms |", "| --- | --- |"]
    for what, ms in latency.items():
        lines.append(f"| {what} | {ms:.0f} |")
    table = "\n".join(lines) + "\n"
    os.makedirs(f"{ROOT}/bench-results", exist_ok=True)
    with open(f"{ROOT}/bench-results/latest.md", "w") as f:
        f.write(table)
    print()
    print(table)


if __name__ == "__main__":
    main()

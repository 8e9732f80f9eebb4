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

Persistent workers (256 bytes, prefetch 100, concurrency 4), each timed by
warren's own ack counter (its /metrics, polled) from the first ack to the
last, with warren's CPU apart from its workers':
  persist-min     mode = persistent, Benchmarks/min-worker.c (acks each id)
  persist-py      mode = persistent, examples/worker.py
  exec-py         the same examples/worker.py run per message
                  (mode = exec, input = envelope)
  amqp-consume-py amqp-consume running examples/worker.py per message
  persist-min x8  persist-min with 8 workers: warren's peak RSS
  persist-min log persist-min at [log] level = info (what an operator runs;
                  the rows above run at warning): one outcome line a message
  persist-min quiet
                  the same with log_outcomes = false: the lines' cost is the
                  ratio of the two (target: at least 0.95)

BENCH_ONLY=persistent runs the persistent rows alone; BENCH_ONLY=outcomes
the last two alone.
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


PERSIST_N = int(os.environ.get("BENCH_PERSIST_MESSAGES", "20000"))
PY_N = int(os.environ.get("BENCH_PY_MESSAGES", "4000"))
PER_MESSAGE_N = int(os.environ.get("BENCH_PER_MESSAGE", "200"))
# One envelope-shaped body, so the same Python program can read it from
# amqp-consume (body on stdin) as from warren (the envelope on stdin).
ENVELOPE_BODY = '{"id":"1","attempt":1,"body":"x","properties":{"message_id":"m"}}'


def process_cpu(pid):
    """CPU seconds of `pid` itself (all its threads, none of its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def acked(port):
    """warren's ack counter, from its /metrics; 0 before the first."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        if line.startswith("warren_outcomes_total") and 'outcome="ack"' in line:
            total += int(float(line.split()[-1]))
    return total


def bench_warren_acks(broker, queue, n, extra, concurrency=4, level="warning"):
    """warren on a full queue, timed by its own ack counter from the first
    ack to the n-th (polled every 20 ms: worker start-up is not counted).
    Returns msg/s, warren's own CPU µs/msg, its workers' (or commands')
    CPU µs/msg, and warren's peak RSS in KB."""
    port = int(subprocess.check_output([f"{ROOT}/scripts/free-port.sh", "26800"]).strip())
    path = warren_config(broker, queue, 100, None, level=level, concurrency=concurrency, extra=extra,
                         metrics_port=port)
    log = tempfile.mktemp()
    with open(log, "w") as err:
        p = subprocess.Popen([warren, "--config", path], stderr=err, stdout=subprocess.DEVNULL)
    first = last = None
    count0 = 0
    while True:
        if p.poll() is not None:
            raise SystemExit(f"warren exited early: {open(log).read()[-2000:]}")
        count = acked(port)
        if first is None and count > 0:
            first, count0 = time.monotonic(), count
        if count >= n:
            last = time.monotonic()
            break
        time.sleep(0.02)
    own = process_cpu(p.pid)
    rss = peak_rss_kb(p.pid)
    p.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(p.pid, 0)
    total = ru.ru_utime + ru.ru_stime
    rate = (n - count0) / (last - first) if last > first else float("nan")
    return rate, own / n * 1e6, max(0.0, total - own) / n * 1e6, rss


def bench_amqp_consume_py(broker, queue, n):
    """amqp-consume running the Python example per message: msg/s and the
    CPU of it and its children per message."""
    start = time.monotonic()
    p = subprocess.Popen(["amqp-consume", "--url", f"amqp://guest:guest@127.0.0.1:{broker.port}", "-q", queue,
                          "-p", "100", "-c", str(n), "python3", f"{ROOT}/examples/worker.py"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    elapsed = time.monotonic() - start
    return n / elapsed, float("nan"), (ru.ru_utime + ru.ru_stime) / n * 1e6, 0


def persistent_rows(broker, only_outcomes=False):
    """The persistent-worker rows, REPS times each, alternating."""
    worker = f"{ROOT}/.build/min-worker"
    python = f"python3 {ROOT}/examples/worker.py"
    outcome_runs = [
        ("persist-min log", PERSIST_N, 4, f"mode = persistent\ncommand = {worker}", "info"),
        ("persist-min quiet", PERSIST_N, 4, f"mode = persistent\ncommand = {worker}\nlog_outcomes = false", "info"),
    ]
    runs = [
        ("persist-min", PERSIST_N, 4, f"mode = persistent\ncommand = {worker}", "warning"),
        ("persist-py", PY_N, 4, f"mode = persistent\ncommand = {python}", "warning"),
        ("exec-py", PER_MESSAGE_N, 4, f"input = envelope\ncommand = {python}", "warning"),
        ("amqp-consume-py", PER_MESSAGE_N, 1, None, "warning"),
        ("persist-min x8", PERSIST_N, 8, f"mode = persistent\ncommand = {worker}", "warning"),
    ]
    runs = outcome_runs if only_outcomes else runs + outcome_runs
    queue = "bench.persistent"
    tool("count", "127.0.0.1", broker.port, queue, 0, 0)
    rows = {}
    for rep in range(REPS):
        for name, n, concurrency, extra, level in runs:
            os.environ["BENCH_BODY"] = ENVELOPE_BODY
            fill(broker, queue, n)
            del os.environ["BENCH_BODY"]
            if extra is None:
                result = bench_amqp_consume_py(broker, queue, n)
            else:
                result = bench_warren_acks(broker, queue, n, extra, concurrency, level)
            tool("purge", "127.0.0.1", broker.port, queue, 0, 0)
            rows.setdefault(name, []).append(result)
            rate, own, workers, rss = result
            print(f"  {name:15} run {rep + 1}: {rate:9.0f} msg/s  warren {own:7.1f} µs/msg  "
                  f"workers {workers:9.1f} µs/msg  warren RSS {rss / 1024:6.1f} MB", flush=True)
    return rows


def outcome_table(rows):
    """The outcome lines' cost: the same run at level info with and without them."""
    def med(name, i):
        return statistics.median(r[i] for r in rows[name])

    ratios = [x[0] / y[0] for x, y in zip(rows["persist-min log"], rows["persist-min quiet"])]
    return ["", f"Outcome lines: persist-min at [log] level = info, log_outcomes on and off, medians of {REPS}",
            "",
            "| consumer | msg/s | warren CPU µs/msg |", "| --- | --- | --- |",
            f"| persist-min log (an outcome line a message) | {med('persist-min log', 0):,.0f} | {med('persist-min log', 1):.1f} |",
            f"| persist-min quiet (log_outcomes = false) | {med('persist-min quiet', 0):,.0f} | {med('persist-min quiet', 1):.1f} |",
            "", "| ratio | value | target |", "| --- | --- | --- |",
            f"| log / quiet, msg/s (each run's ratio: {', '.join(f'{r:.3f}' for r in ratios)}) | "
            f"{statistics.median(ratios):.3f} | at least 0.95 |"]


def persistent_table(rows, lib_rates):
    def med(name, i):
        return statistics.median(r[i] for r in rows[name])

    def paired(a, b):
        return statistics.median(x[0] / y[0] for x, y in zip(rows[a], rows[b]))

    lines = ["", f"Persistent workers: 256 B bodies, prefetch 100, concurrency 4 (x8: 8), medians of {REPS}; "
             "CPU per message is warren's own, then its workers' (or commands'), start-up included",
             "",
             "| consumer | messages | msg/s | warren CPU µs/msg | workers CPU µs/msg | warren peak RSS MB |",
             "| --- | --- | --- | --- | --- | --- |"]
    counts = {"persist-min": PERSIST_N, "persist-py": PY_N, "exec-py": PER_MESSAGE_N,
              "amqp-consume-py": PER_MESSAGE_N, "persist-min x8": PERSIST_N}
    for name in counts:
        own = med(name, 1)
        own_text = "-" if own != own else f"{own:.1f}"
        rss = max(r[3] for r in rows[name])
        lines.append(f"| {name} | {counts[name]:,} | {med(name, 0):,.0f} | {own_text} | {med(name, 2):.1f} | "
                     f"{'-' if rss == 0 else f'{rss / 1024:.1f}'} |")
    lines += ["", "| ratio | value | target |", "| --- | --- | --- |"]
    if lib_rates:
        lines.append(f"| persist-min / warren-lib (256 B, prefetch 100) | "
                     f"{med('persist-min', 0) / statistics.median(lib_rates):.2f} | at least 0.5 |")
    lines.append(f"| persist-py / exec-py | {paired('persist-py', 'exec-py'):.1f} | at least 50 |")
    lines.append(f"| persist-py / amqp-consume-py | {paired('persist-py', 'amqp-consume-py'):.1f} | |")
    lines.append(f"| exec-py / amqp-consume-py | {paired('exec-py', 'amqp-consume-py'):.2f} | |")
    lines.append(f"| warren CPU, persist-min | {med('persist-min', 1):.1f} µs/msg | at most 15 |")
    lines.append(f"| warren peak RSS, 8 workers | {max(r[3] for r in rows['persist-min x8']) / 1024:.1f} MB | under 30 |")
    return lines + outcome_table(rows)


def warren_config(broker, queue, prefetch, command, level="info", concurrency=None, extra="", metrics_port=None):
    """A config file for one consumer; `command` None when `extra` names it."""
    command_line = "" if command is None else f"command = {command}\n"
    metrics = "" if metrics_port is None else f"[metrics]\nlisten = 127.0.0.1:{metrics_port}\n"
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
{command_line}prefetch = {prefetch}
concurrency = {concurrency or min(prefetch, 4)}
timeout = 0
declare = true
{extra}
{metrics}[log]
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
    only_outcomes = os.environ.get("BENCH_ONLY") == "outcomes"
    if not only_outcomes:  # the outcome rows run the warren binary alone
        sh(*static, "--product", "warren-bench", cwd=ROOT)
    os.makedirs(f"{ROOT}/.build", exist_ok=True)
    sh("cc", "-O2", "-Wall", "-o", f"{ROOT}/.build/bench-tool", f"{ROOT}/Benchmarks/bench-tool.c", "-lrabbitmq")
    sh("cc", "-O2", "-Wall", "-o", f"{ROOT}/.build/min-worker", f"{ROOT}/Benchmarks/min-worker.c")
    bindir = subprocess.check_output(static + ["--show-bin-path"], cwd=ROOT, text=True).strip()
    global warren
    warren, lib = f"{bindir}/warren", f"{bindir}/warren-bench"
    only_persistent = os.environ.get("BENCH_ONLY") == "persistent"
    broker = Broker()
    rows = {}
    try:
        if only_outcomes:
            print("\n".join(outcome_table(persistent_rows(broker, only_outcomes=True))) + "\n")
            return
        if only_persistent:
            lib_rates = []
            for _ in range(REPS):
                queue = "bench.lib"
                fill(broker, queue, FAST_N)
                lib_rates.append(bench_self_timed([lib, broker.url, queue, FAST_N, 100, 4])[0])
                tool("purge", "127.0.0.1", broker.port, queue, 0, 0)
            table = "\n".join(persistent_table(persistent_rows(broker), lib_rates)) + "\n"
            print(table)
            return
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
        persistent = persistent_rows(broker)
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
    lines += persistent_table(persistent, [r[0] for r in rows.get(("warren-lib", 256, 100), [])])
    table = "\n".join(lines) + "\n"
    os.makedirs(f"{ROOT}/bench-results", exist_ok=True)
    with open(f"{ROOT}/bench-results/latest.md", "w") as f:
        f.write(table)
    print()
    print(table)


if __name__ == "__main__":
    main()

import AMQP
import Foundation
import Glibc
import Testing

/// `mode = persistent`: long-lived workers, the built binary, a real broker,
/// real signals. Each test accounts for every message it published:
/// answered and acked, retried or dead-lettered by the usual rules, or
/// still in the queue; and for every worker process: gone at the end.
@Suite(.serialized) struct PersistentWorkerTests {
    static let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")

    /// A worker in Python: notes its pid in `pids`, runs `setup`, says
    /// ready, then for each message notes its id in `started`, runs
    /// `handle` (which has `env`, `mid`, `body` and `answer(outcome)`).
    static func worker(setup: String = "", handle: String = "answer()") throws -> String {
        let directory = try WarrenBinary.makeDirectory()
        let indent = { (code: String) in code.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n") }
        let script = """
            import json, os, signal, subprocess, sys, time
            d = sys.argv[1]
            def note(name, text):
                with open(os.path.join(d, name), "a") as f:
                    f.write(text + "\\n")
            note("pids", str(os.getpid()))
            \(setup)
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                env = json.loads(line)
                mid = env["properties"]["message_id"]
                body = env["body"]
                def answer(outcome="ack", id=None, reason=None):
                    a = {"id": id or env["id"], "outcome": outcome}
                    if reason: a["reason"] = reason
                    print(json.dumps(a), flush=True)
                note("started", mid)
            \(indent(handle))
            """
        try script.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
        return "python3 \(directory)/worker.py {dir}"
    }

    static func persistent(_ extra: String = "") -> String { "mode = persistent\n" + extra }

    static func pids(_ warren: WarrenBinary) -> [pid_t] { warren.lines("pids").compactMap { pid_t($0) } }

    /// Log lines containing `text`.
    static func logLines(_ warren: WarrenBinary, _ text: String) -> [Substring] {
        warren.log.split(separator: "\n").filter { $0.contains(text) }
    }

    // MARK: The examples

    @Test(arguments: ["python3 examples/worker.py", "node examples/worker.js"])
    func theShippedExampleWorkerHandlesEveryMessageOnceWithoutAProcessPerMessage(_ command: String) async throws {
        let parts = command.split(separator: " ")
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "\(parts[0]) \(Self.root)/\(parts[1])", concurrency: 3, extra: Self.persistent()))
            try await eventually("three workers ready") { Self.logLines(warren, "worker ready").count == 3 }
            let ids = (1...30).map { "m-\($0)" }
            try await client.publish(ids: ids, to: queue)
            try await client.connection.publish(Array("poison".utf8), routingKey: queue, on: 1,
                                                properties: .init(deliveryMode: 2, messageId: "poison"))
            try await eventually("every message handled") {
                try await client.count(queue + ".dead") == 1 && Self.logLines(warren, "handling m-").count == ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let handled = Self.logLines(warren, "handling m-")
            for id in ids {
                #expect(handled.filter { $0.contains("handling \(id):") }.count == 1, "\(id) handled once")
            }
            // Each stderr line names the worker's pid and the message in hand.
            #expect(handled.allSatisfy { $0.contains("pid=") && $0.contains("stream=stderr") })
            for line in handled {
                let id = line.components(separatedBy: "handling ").last?.components(separatedBy: ":").first ?? "?"
                #expect(line.contains("message_id=\(id) ") || line.hasSuffix("message_id=\(id)"), "\(line)")
            }
            #expect(Self.logLines(warren, "worker ready").count == 3, "three workers, not one per message")
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["poison"])
            #expect(dead.first?.headers?["x-warren-reason"]?.stringValue?.contains("cannot handle a poison message") == true)
            #expect(try await client.count(queue) == 0)
        }
    }

    // MARK: Drain

    @Test func drainUnderLoadFinishesTheMessagesInHandRequeuesTheRestAndLeavesNoWorker() async throws {
        let command = try Self.worker(handle: """
            time.sleep(0.2)
            note("finished", mid)
            answer()
            """)
        try await withTestQueue { client, queue in
            let ids = (1...200).map { "id-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 8, concurrency: 4, extra: Self.persistent()))
            try await eventually("work in flight") { warren.lines("finished").count >= 20 }
            let workers = Self.pids(warren)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let started = warren.lines("started")
            let finished = warren.lines("finished")
            let left = try await client.drain(queue).map(\.id)
            #expect(Set(started) == Set(finished), "a message in hand at the stop did not finish: \(Set(started).subtracting(finished))")
            #expect(finished.count == Set(finished).count, "a message was finished twice")
            #expect(Set(finished).isDisjoint(with: left), "a finished message was not acked")
            #expect(Set(finished).union(left) == Set(ids), "a message was lost")
            #expect(finished.count < ids.count, "the stop came before the queue was empty")
            #expect(workers.count == 4, "one worker per slot: \(workers)")
            for pid in workers { #expect(isGone(pid), "worker \(pid) outlived warren (\(state(of: pid) ?? "-"))") }
        }
    }

    @Test func aWorkerIgnoringEndOfFileAtTheDrainGetsSigtermAfterKillAfterAndTheStopStaysBounded() async throws {
        // It ignores end of file (keeps sleeping) and SIGTERM: only SIGKILL ends it.
        let command = try Self.worker(setup: "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nsys.stdin = iter(lambda: (time.sleep(3600), '')[1], None)")
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 1, grace: "1s", killAfter: "1s", extra: Self.persistent()))
            try await eventually("the worker is ready") { !Self.logLines(warren, "worker ready").isEmpty }
            let workers = Self.pids(warren)
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let stopTime = clock.now - signalled
            // End of file, kill_after, SIGTERM (ignored), kill_after, SIGKILL.
            #expect(stopTime >= .seconds(2), "stopped after \(stopTime): the worker was not given kill_after after end of file")
            #expect(stopTime < .seconds(8), "stopped after \(stopTime)")
            for pid in workers { #expect(isGone(pid), "worker \(pid) outlived warren") }
        }
    }

    // MARK: The watchdog

    @Test func aHungWorkerIsKilledWithItsChildrenAfterItsTimeoutItsMessageRetriedAndTheOtherWorkersUntouched() async throws {
        let command = try Self.worker(handle: """
            if body == "hang":
                child = subprocess.Popen(["sleep", "300"])
                note("children", str(child.pid))
                time.sleep(300)
            note("served", mid + " " + str(os.getpid()))
            answer()
            """)
        try await withTestQueue { client, queue in
            let others = (1...20).map { "a\($0)" }
            try await client.publish(ids: ["hang"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 4, concurrency: 2, killAfter: "1s",
                extra: Self.persistent("timeout = 2s\nretry_delay = 60s")))
            try await eventually("the hung worker's child started") { warren.lines("children").count == 1 }
            let firstWorkers = Self.pids(warren)
            try await client.publish(ids: others, to: queue)
            try await eventually("the hung message timed out", timeout: .seconds(30)) {
                !Self.logLines(warren, "handler timed out").isEmpty
            }
            try await eventually("the others were served") { warren.lines("served").count == others.count }
            try await eventually("a new worker is ready") { Self.logLines(warren, "worker ready").count == 3 }
            let child = try #require(warren.lines("children").first.flatMap { pid_t($0) })
            #expect(isGone(child), "the hung worker's child survived")
            // One worker replaced, the other untouched: three ready in all.
            #expect(Self.logLines(warren, "worker ready").count == 3)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            for pid in firstWorkers + Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
            let retried = try await client.drain(queue + ".retry.1")
            #expect(retried.map(\.id) == ["hang"])
            #expect(retried.first?.headers?["x-warren-attempt"]?.integerValue == 2, "the attempt was counted")
            #expect(try await client.count(queue) == 0)
            #expect(Set(warren.lines("served").map { String($0.split(separator: " ")[0]) }) == Set(others))
        }
    }

    // MARK: Workers that break the protocol or die

    @Test func crashesGarbageAndWrongIdsEachRetryTheirMessageAndReplaceTheWorkerWhileTheOthersFlow() async throws {
        let command = try Self.worker(handle: """
            if body == "crash":
                os._exit(3)
            elif body == "garbage":
                print("hello, warren", flush=True)
            elif body == "wrong":
                answer(id="not-" + env["id"])
            else:
                note("finished", mid)
                answer()
            """)
        try await withTestQueue { client, queue in
            let bad = ["crash", "garbage", "wrong"]
            let good = (1...30).map { "g\($0)" }
            try await client.publish(ids: bad + good, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 8, concurrency: 3,
                extra: Self.persistent("retry_delay = 60s")))
            try await eventually("every good message finished") { Set(warren.lines("finished")) == Set(good) }
            try await eventually("every bad message retried") { try await client.count(queue + ".retry.1") == bad.count }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(Self.logLines(warren, "the worker died holding message").count == 1)
            let protocolErrors = Self.logLines(warren, "worker protocol error")
            #expect(protocolErrors.count == 2, "\(protocolErrors)")
            #expect(protocolErrors.contains { $0.contains("hello, warren") }, "the garbage line is quoted")
            #expect(protocolErrors.contains { $0.contains("got an answer to message not-") })
            #expect(warren.lines("finished").count == good.count, "no good message ran twice")
            let retried = try await client.drain(queue + ".retry.1")
            #expect(Set(retried.map(\.id)) == Set(bad))
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
        }
    }

    /// A worker that closes its stdout can never answer, and one that closes
    /// its stdin can never get the next message: either way, alive or not,
    /// it is replaced at once, whatever `timeout` is. The message it held
    /// is retried; one it never read goes back with no attempt spent.
    @Test func aWorkerThatClosesItsStdoutOrStdinIsReplacedWithoutWaitingForTheTimeout() async throws {
        let command = try Self.worker(handle: """
            if body == "closeout":
                os.close(1)
                time.sleep(600)
            elif body == "closein":
                os.close(0)
                note("finished", mid)
                answer()
                time.sleep(600)
            else:
                note("finished", mid)
                answer()
            """)
        try await withTestQueue { client, queue in
            // In order, one at a time: "victim" is the message written to the
            // worker that closed its stdin, which never read it.
            let good = (1...5).map { "g\($0)" }
            try await client.publish(ids: ["closein", "victim", "closeout"] + good, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 1, concurrency: 1,
                extra: Self.persistent("timeout = 300s\nretry_delay = 60s")))
            try await eventually("every other message finished") {
                Set(warren.lines("finished")) == Set(["closein", "victim"] + good)
            }
            try await eventually("closeout retried") { try await client.count(queue + ".retry.1") == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let protocolErrors = Self.logLines(warren, "worker protocol error")
            #expect(protocolErrors.count == 2, "\(protocolErrors)")
            #expect(protocolErrors.contains { $0.contains("closed its stdin but did not exit (holding message") })
            #expect(protocolErrors.contains { $0.contains("closed its stdout but did not exit (holding message") })
            #expect(try await client.drain(queue + ".retry.1").map(\.id) == ["closeout"])
            #expect(warren.lines("finished").count == 7, "nothing ran twice")
            #expect(warren.lines("started").filter { $0 == "victim" }.count == 1, "victim reached a worker once: the one that read it")
            #expect(try await client.count(queue) == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
        }
    }

    /// A slot waiting out a backoff holds no message: one the buffer hands
    /// it then goes back at once, to a worker that can run it now.
    @Test func aMessageGivenToASlotThatIsBackingOffGoesBackAtOnceToAWorkerThatCanRunIt() async throws {
        // The first worker to start says ready at once and exits: its slot asks
        // for a message first and then backs off for 30 s. The other is ready 1 s later.
        let command = try Self.worker(setup: """
            try:
                os.close(os.open(os.path.join(d, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                print(json.dumps({"ready": True}), flush=True)
                sys.exit(0)
            except FileExistsError:
                time.sleep(1)
            """, handle: "note(\"finished\", mid)\nanswer()")
        try await withTestQueue { client, queue in
            let config = try warrenConfig(queue: queue, command: command, concurrency: 2, extra: Self.persistent())
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 30s\nreconnect_max = 60s")
            let warren = try WarrenBinary(config: config)
            try await eventually("one worker backs off, the other is ready") {
                !Self.logLines(warren, "worker did not start").isEmpty && !Self.logLines(warren, "worker ready").isEmpty
            }
            try await client.publish(ids: ["waiting"], to: queue)
            try await eventually("the message ran long before the backoff ends", timeout: .seconds(10)) {
                warren.lines("finished") == ["waiting"]
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".retry.1") == 0, "no attempt was spent")
        }
    }

    /// A consumer none of whose workers can start cannot run a delivery:
    /// it stops consuming (its deliveries go back, to consumers that can)
    /// and consumes again once a worker is ready.
    @Test func aConsumerWhoseWorkersCannotStartStopsConsumingUntilOneIsReady() async throws {
        let command = try Self.worker(setup: "if not os.path.exists(os.path.join(d, 'fixed')):\n    sys.exit(1)",
                                      handle: "note(\"finished\", mid)\nanswer()")
        try await withTestQueue { client, queue in
            let broken = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 10, concurrency: 2, extra: Self.persistent())
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 200ms\nreconnect_max = 400ms"))
            try await eventually("both workers fail to start") { Self.logLines(broken, "worker did not start").count >= 2 }
            try await Task.sleep(for: .milliseconds(500))
            let healthy = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#, prefetch: 10, concurrency: 2))
            try await eventually("the healthy one consumes") { healthy.log.contains("consuming") }
            let first = (1...20).map { "a\($0)" }
            try await client.publish(ids: first, to: queue)
            try await eventually("the healthy one ran every message", timeout: .seconds(10)) {
                Set(healthy.lines("finished")) == Set(first)
            }
            healthy.signal(SIGTERM)
            #expect(await healthy.waitForExit() == 0)
            #expect(Self.logLines(broken, "no worker can start: stopped consuming").count == 1)
            // Fixed: the next start succeeds, and it consumes again.
            FileManager.default.createFile(atPath: broken.file("fixed"), contents: nil)
            try await eventually("it consumes again") { !Self.logLines(broken, "consuming again").isEmpty }
            let second = (1...5).map { "b\($0)" }
            try await client.publish(ids: second, to: queue)
            try await eventually("its workers ran the new ones") { Set(broken.lines("finished")) == Set(second) }
            broken.signal(SIGTERM)
            #expect(await broken.waitForExit() == 0, "\(broken.log)")
            #expect(healthy.lines("finished").count == first.count, "none ran twice")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// Workers fail faster than a connection is made: the consumer holds
    /// before warren has any connection, and must still connect, and
    /// consume once a worker is ready.
    @Test func aConsumerHeldBeforeItsFirstConnectionConsumesOnceAWorkerIsReady() async throws {
        let worker = try Self.worker(handle: "note(\"finished\", mid)\nanswer()")
        let command = "sh -c 'test -f {dir}/fixed || exit 1; exec \(worker)'"
        try await withTestQueue { client, queue in
            // The first URL refuses: the first connection comes a backoff
            // (at least 500 ms) after the workers have failed.
            let dead = "amqp://guest:guest@127.0.0.1:\(MetricsTests.freePort())/%2f"
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 4, concurrency: 1, extra: Self.persistent())
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(dead) \(TestBroker.url)")
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 1s\nreconnect_max = 2s"))
            try await eventually("it holds") { !Self.logLines(warren, "no worker can start").isEmpty }
            try await Task.sleep(for: .seconds(1))
            FileManager.default.createFile(atPath: warren.file("fixed"), contents: nil)
            try await eventually("a worker is ready") { !Self.logLines(warren, "worker ready").isEmpty }
            let ids = ["h1", "h2", "h3"]
            try await client.publish(ids: ids, to: queue)
            try await eventually("its worker ran them") { Set(warren.lines("finished")) == Set(ids) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aCrashLoopAtStartupBacksOffSaysWhyOnReadyzAndLosesNothing() async throws {
        let port = MetricsTests.freePort()
        let command = try Self.worker(setup: "sys.exit(1)")
        try await withTestQueue { client, queue in
            let ids = (1...5).map { "c\($0)" }
            try await client.publish(ids: ids, to: queue)
            let config = try warrenConfig(queue: queue, command: command, concurrency: 1, extra: Self.persistent())
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 200ms\nreconnect_max = 1s")
                .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
            let warren = try WarrenBinary(config: config)
            try await eventually("the worker failed to start") { !Self.logLines(warren, "worker did not start").isEmpty }
            let readyz = MetricsTests.get("http://127.0.0.1:\(port)/readyz")
            #expect(readyz.status == 503)
            #expect(readyz.body.contains("failing to start"), "\(readyz.body)")
            // The gauge follows /readyz whatever the reason.
            let metrics = MetricsTests.get("http://127.0.0.1:\(port)/metrics").body
            #expect(metrics.contains("warren_ready 0"), "\(metrics)")
            let before = Self.pids(warren).count
            try await Task.sleep(for: .seconds(4))
            let starts = Self.pids(warren).count - before
            // Backoff from 200 ms doubling to 1 s: a handful of starts in 4 s; a tight loop makes hundreds.
            #expect(starts >= 2 && starts <= 12, "\(starts) starts in 4 s")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(warren.lines("started").isEmpty, "no message reached a worker")
            #expect(Set(try await client.drain(queue).map(\.id)) == Set(ids), "every message is still queued")
            #expect(try await client.count(queue + ".retry.1") == 0, "no attempt was spent")
        }
    }

    @Test func aWorkerThatNeverSaysReadyIsReplacedAfterStartupTimeoutAndOneThatExitsAfterReadyBacksOff() async throws {
        for (setup, expected) in [("time.sleep(300)", "not ready within startup_timeout"),
                                  ("print(json.dumps({\"ready\": True}), flush=True); sys.exit(0)", "exited before finishing a message")] {
            let command = try Self.worker(setup: setup)
            try await withTestQueue { client, queue in
                try await client.publish(ids: ["x"], to: queue)
                let config = try warrenConfig(queue: queue, command: command, concurrency: 1,
                                              extra: Self.persistent("startup_timeout = 1s"))
                    .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 500ms")
                let warren = try WarrenBinary(config: config)
                try await eventually("a second worker started after: \(expected)") {
                    !Self.logLines(warren, expected).isEmpty && Self.pids(warren).count >= 2
                }
                warren.signal(SIGTERM)
                #expect(await warren.waitForExit() == 0, "\(warren.log)")
                for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
                // The message either never reached a worker or was retried with its attempt counted.
                var left = try await client.count(queue)
                for level in 1...3 { left += try await client.count(queue + ".retry.\(level)") }
                left += try await client.count(queue + ".dead")
                #expect(left == 1, "the message is lost or duplicated")
            }
        }
    }

    // MARK: warren's own end

    @Test func killingWarrenWithSigkillTakesItsWorkersAlongAndLosesNothing() async throws {
        let command = try Self.worker(handle: """
            time.sleep(300)
            answer()
            """)
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "k\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 3, extra: Self.persistent()))
            try await eventually("every worker holds a message") { warren.lines("started").count == 3 }
            let workers = Self.pids(warren)
            warren.signal(SIGKILL)
            _ = await warren.waitForExit()
            try await eventually("the workers are gone", timeout: .seconds(5)) { workers.allSatisfy(isGone) }
            try await eventually("every message is back in the queue") { try await client.count(queue) == ids.count }
            #expect(Set(try await client.drain(queue).map(\.id)) == Set(ids))
        }
    }

    @Test func sigquitStopsAtOnceKillsTheWorkersAndRequeuesTheirMessages() async throws {
        let command = try Self.worker(setup: "signal.signal(signal.SIGTERM, signal.SIG_IGN)", handle: """
            time.sleep(300)
            answer()
            """)
        try await withTestQueue { client, queue in
            let ids = (1...4).map { "q\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 2, grace: "60s", killAfter: "1s", extra: Self.persistent()))
            try await eventually("the workers hold messages") { warren.lines("started").count == 2 }
            let workers = Self.pids(warren)
            warren.signal(SIGQUIT)
            #expect(await warren.waitForExit(timeout: .seconds(15)) == 0, "\(warren.log)")
            for pid in workers { #expect(isGone(pid), "worker \(pid) survived") }
            #expect(Set(try await client.drain(queue).map(\.id)) == Set(ids), "every message requeued, none retried")
            #expect(try await client.count(queue + ".retry.1") == 0)
        }
    }

    // MARK: Reloads and second signals

    @Test func aReloadStartsWorkersRunningTheNewCodeAndDrainsTheOldOnesLosingNothing() async throws {
        let v1 = try Self.worker(handle: "time.sleep(0.2)\nnote(\"finished\", \"v1 \" + mid)\nanswer()")
        let v2 = try Self.worker(handle: "note(\"finished\", \"v2 \" + mid)\nanswer()")
        try await withTestQueue { client, queue in
            func config(_ command: String) throws -> String {
                try warrenConfig(queue: queue, command: command, prefetch: 4, concurrency: 2, extra: Self.persistent())
            }
            let warren = try WarrenBinary(config: try config(v1))
            let first = (1...20).map { "a\($0)" }
            try await client.publish(ids: first, to: queue)
            try await eventually("v1 is working") { warren.lines("finished").count >= 2 }
            let old = Self.pids(warren)
            #expect(old.count == 2)
            try config(v2).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            let second = (1...10).map { "b\($0)" }
            try await client.publish(ids: second, to: queue)
            try await eventually("everything processed", timeout: .seconds(40)) { warren.lines("finished").count >= 30 }
            try await eventually("the old consumers drained") { warren.log.contains("the replaced consumers have drained") }
            for pid in old { #expect(isGone(pid), "old worker \(pid) survived the reload") }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            let ids = finished.map { String($0.split(separator: " ")[1]) }
            #expect(ids.count == Set(ids).count, "a message ran twice: \(finished)")
            #expect(Set(ids) == Set(first + second), "a message was lost")
            #expect(second.allSatisfy { finished.contains("v2 \($0)") }, "messages published after the reload go to the new workers")
            #expect(try await client.count(queue) == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
        }
    }

    /// The new runtime of a reload starts its workers before its broker
    /// answers; when the broker never does, the runtime gives up, and its
    /// workers must go with it rather than idle until warren exits.
    /// A deploy whose workers cannot start must not replace the running
    /// ones: the reload fails, and the old workers go on.
    @Test func aReloadWhoseWorkersCannotStartKeepsTheRunningWorkers() async throws {
        let good = try Self.worker(handle: "note(\"finished\", mid)\nanswer()")
        let broken = try Self.worker(setup: "sys.exit(3)")
        try await withTestQueue { client, queue in
            func config(_ command: String) throws -> String {
                try warrenConfig(queue: queue, command: command, prefetch: 4, concurrency: 2, extra: Self.persistent())
                    .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 200ms")
            }
            let warren = try WarrenBinary(config: try config(good))
            try await eventually("two workers ready") { Self.logLines(warren, "worker ready").count == 2 }
            try config(broken).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("the reload failed", timeout: .seconds(10)) { warren.log.contains("reload failed") }
            #expect(!warren.log.contains("reloaded: the new consumers consume"))
            let ids = (1...10).map { "k\($0)" }
            try await client.publish(ids: ids, to: queue)
            try await eventually("the old workers ran them") { Set(warren.lines("finished")) == Set(ids) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aReloadWhoseBrokerCannotBeReachedLeavesNoWorkerBehind() async throws {
        let command = try Self.worker()
        try await withTestQueue { client, queue in
            let good = try warrenConfig(queue: queue, command: command, concurrency: 2, extra: Self.persistent())
            let warren = try WarrenBinary(config: good)
            try await eventually("two workers ready") { Self.logLines(warren, "worker ready").count == 2 }
            let old = Self.pids(warren)
            #expect(old.count == 2)
            let unreachable = good.replacingOccurrences(of: TestBroker.url, with: "amqp://guest:guest@127.0.0.1:1/%2f")
            #expect(unreachable != good)
            try unreachable.replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("the reload failed", timeout: .seconds(60)) { warren.log.contains("reload failed") }
            try await eventually("the failed reload's workers are gone", timeout: .seconds(20)) {
                Self.pids(warren).filter { !old.contains($0) }.allSatisfy { isGone($0) }
            }
            for pid in old { #expect(!isGone(pid), "a running worker \(pid) was stopped by the failed reload") }
            try await client.publish(ids: ["r1", "r2", "r3"], to: queue)
            try await eventually("the running workers still work") { warren.lines("started").count == 3 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
        }
    }

    @Test func aStopRightAfterAReloadLetsTheOldWorkersFinishTheirMessagesWithinTheGrace() async throws {
        let v1 = try Self.worker(handle: "time.sleep(3)\nnote(\"finished\", mid)\nanswer()")
        let v2 = try Self.worker()
        try await withTestQueue { client, queue in
            func config(_ command: String) throws -> String {
                try warrenConfig(queue: queue, command: command, concurrency: 2, grace: "30s", extra: Self.persistent())
            }
            let warren = try WarrenBinary(config: try config(v1))
            try await eventually("two workers ready") { Self.logLines(warren, "worker ready").count == 2 }
            try await client.publish(ids: ["x1", "x2"], to: queue)
            try await eventually("both in hand") { warren.lines("started").count == 2 }
            try config(v2).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(Set(warren.lines("finished")) == ["x1", "x2"], "the old workers' messages finished within the grace")
            #expect(try await client.count(queue) == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid), "worker \(pid) survived") }
        }
    }

    @Test func aSecondStopSignalTerminatesWorkersHoldingMessagesAndRequeuesThem() async throws {
        let command = try Self.worker(handle: "time.sleep(300)\nanswer()")
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["s1", "s2"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 2, grace: "60s", killAfter: "1s", extra: Self.persistent()))
            try await eventually("both in hand") { warren.lines("started").count == 2 }
            let workers = Self.pids(warren)
            warren.signal(SIGTERM)
            try await eventually("draining") { warren.log.contains("stop requested: draining") }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit(timeout: .seconds(15)) == 0, "\(warren.log)")
            for pid in workers { #expect(isGone(pid), "worker \(pid) survived") }
            #expect(Set(try await client.drain(queue).map(\.id)) == ["s1", "s2"], "both requeued, none retried")
            #expect(try await client.count(queue + ".retry.1") == 0)
        }
    }

    /// A process that escaped a handler command's group is killed once the
    /// commands running when it was found have ended; a persistent worker
    /// of another consumer never ends, so it must not count as one of them.
    @Test func aProcessEscapingAHandlerIsKilledWhenTheHandlerEndsEvenBesideALongLivedWorker() async throws {
        let worker = try Self.worker()
        let escaping = #"sh -c '( setsid sleep 300 & echo $! >> {dir}/escaped ); sleep 0.3; echo done >> {dir}/finished'"#
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: escaping, concurrency: 1,
                extra: "\n[consumer.workers]\nqueue = \(queue).workers\ncommand = \(worker)\nmode = persistent\nconcurrency = 1"))
            try await eventually("the worker is ready") { Self.logLines(warren, "worker ready").count == 1 }
            try await client.publish(ids: ["one"], to: queue)
            try await eventually("the handler finished") { warren.lines("finished") == ["done"] }
            let sleeper = try #require(warren.lines("escaped").first.flatMap { pid_t($0) })
            try await eventually("the escaped sleeper is gone", timeout: .seconds(5)) { isGone(sleeper) }
            let workers = Self.pids(warren)
            #expect(workers.count == 1 && workers.allSatisfy { !isGone($0) }, "the worker itself lives on")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            if !isGone(sleeper) { kill(sleeper, SIGKILL) }
            for pid in workers { #expect(isGone(pid)) }
            for name in [".workers", ".workers.dead"] { _ = try? await client.connection.deleteQueue(queue + name, on: 1) }
        }
    }

    /// A worker lives for days; what it leaves behind must not: children
    /// orphaned to warren are reaped as they exit, and a process that left
    /// the worker's group is killed, while the worker goes on.
    @Test func aLongLivedWorkersOrphansAreReapedAndEscapedProcessesKilledWhileItLives() async throws {
        let command = try Self.worker(handle: """
            subprocess.run("sleep 0.01 &", shell=True)
            if body == "escape":
                subprocess.run("setsid sleep 300 & echo $! >> " + d + "/escaped", shell=True)
            note("finished", mid)
            answer()
            """)
        try await withTestQueue { client, queue in
            let ids = (1...40).map { "z\($0)" } + ["escape"]
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: command, concurrency: 2,
                                                                   extra: Self.persistent()))
            try await eventually("both workers ready") { Self.logLines(warren, "worker ready").count == 2 }
            try await client.publish(ids: ids, to: queue)
            try await eventually("all finished") { Set(warren.lines("finished")) == Set(ids) }
            let sleeper = try #require(warren.lines("escaped").first.flatMap { pid_t($0) })
            try await eventually("the escaped sleeper is killed", timeout: .seconds(5)) { isGone(sleeper) }
            try await eventually("no zombie left", timeout: .seconds(5)) {
                childrenOf(warren.pid).filter { $0.state == "Z" }.isEmpty
            }
            let workers = Self.pids(warren)
            #expect(workers.count == 2 && workers.allSatisfy { !isGone($0) }, "the workers themselves live on")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            if !isGone(sleeper) { kill(sleeper, SIGKILL) }
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A worker that exits after its answer (a self-imposed recycle) may be
    /// sent the next message first: it never read it, so it goes back to
    /// the queue with no attempt spent (here, `max_attempts = 1` would
    /// dead-letter it).
    @Test func aWorkerThatExitsAfterItsAnswerNeverCostsTheNextMessageAnAttempt() async throws {
        let command = try Self.worker(setup: "served = [0]", handle: """
            note("finished", mid)
            answer()
            served[0] += 1
            if served[0] % 3 == 0:
                sys.exit(0)
            """)
        try await withTestQueue { client, queue in
            let ids = (1...30).map { "x\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, prefetch: 10, concurrency: 2, extra: Self.persistent("max_attempts = 1")))
            try await eventually("all finished") { Set(warren.lines("finished")) == Set(ids) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue + ".dead") == 0, "a message the worker never read was dead-lettered")
            #expect(warren.lines("finished").count == ids.count, "nothing ran twice")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A worker that dies on a message it read in part (a line too long for
    /// it) was handed that message: each death is an attempt, and the
    /// message reaches the dead-letter queue instead of looping for ever.
    @Test func aWorkerDyingOnAMessageItReadInPartSpendsItsAttempts() async throws {
        let directory = try WarrenBinary.makeDirectory()
        let script = """
            import json, os, sys
            print(json.dumps({"ready": True}), flush=True)
            while True:
                chunk = os.read(0, 4096)
                if not chunk:
                    break
                if b"\\n" not in chunk:
                    sys.exit(1)  # a line longer than this worker takes
                env = json.loads(chunk)
                with open(os.path.join(sys.argv[1], "finished"), "a") as f:
                    f.write(env["properties"]["message_id"] + "\\n")
                print(json.dumps({"id": env["id"], "outcome": "ack"}), flush=True)
            """
        try script.write(toFile: directory + "/chunky.py", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            try await client.connection.publish(Array(repeating: UInt8(ascii: "x"), count: 300_000), routingKey: queue, on: 1,
                                                properties: MessageProperties(deliveryMode: 2, messageId: "big"))
            try await client.publish(ids: ["small"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/chunky.py {dir}", concurrency: 1,
                extra: Self.persistent("max_attempts = 2\nretry_delay = 100ms"))
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 200ms"))
            try await eventually("big dead-lettered", timeout: .seconds(15)) { try await client.count(queue + ".dead") == 1 }
            try await eventually("small finished") { warren.lines("finished") == ["small"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.drain(queue + ".dead").map(\.id) == ["big"])
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A stray line on stdout makes the worker a protocol breaker, but it may
    /// still be working on its message: the message is not run anywhere
    /// else until the worker has gone, and an answer it still gives stands.
    @Test func aWorkerThatBreaksTheProtocolMidMessageIsNeverRacedByARetryOfIt() async throws {
        let command = try Self.worker(setup: "signal.signal(signal.SIGTERM, signal.SIG_IGN)", handle: """
            if body == "chatty":
                print("debug: starting", flush=True)
                time.sleep(0.5)
                # Told to go by now: more chatter, then its answer.
                for _ in range(20):
                    print("debug: working", flush=True)
                time.sleep(1.5)
            note("finished", mid + " " + str(time.time()))
            answer()
            """)
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["chatty", "other"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 2, killAfter: "5s", extra: Self.persistent("retry_delay = 1s")))
            try await eventually("chatty finished") { warren.lines("finished").contains { $0.hasPrefix("chatty ") } }
            try await Task.sleep(for: .seconds(2))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let chatty = warren.lines("finished").filter { $0.hasPrefix("chatty ") }
            #expect(chatty.count == 1, "the message ran twice: \(chatty)")
            #expect(Self.logLines(warren, "worker protocol error").count == 1)
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".retry.1") == 0, "its late answer stood: acked, not retried")
        }
    }

    /// A worker's words end up in logs and headers: an answer with a huge id
    /// is quoted in part, and the retry copy carries a bounded reason (a
    /// header over the frame size would fail the copy and loop the message).
    @Test func aHugeWrongIdIsQuotedInPartAndRetriedOnce() async throws {
        let command = try Self.worker(handle: """
            if body == "huge":
                answer(id="x" * 300000)
            else:
                note("finished", mid)
                answer()
            """)
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["huge", "fine"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 1, extra: Self.persistent("retry_delay = 60s")))
            try await eventually("huge retried") { try await client.count(queue + ".retry.1") == 1 }
            try await eventually("fine finished") { warren.lines("finished") == ["fine"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let longest = warren.log.split(separator: "\n").map(\.utf8.count).max() ?? 0
            #expect(longest < 16384, "a log line of \(longest) bytes")
            #expect(Self.logLines(warren, "worker protocol error").count == 1, "retried once, not looping")
            let retried = try await client.drain(queue + ".retry.1")
            #expect(retried.map(\.id) == ["huge"])
        }
    }

    // MARK: Recycling and floods

    @Test func maxMessagesReplacesAWorkerAfterThatManyAnswersAndEveryMessageRunsOnce() async throws {
        let command = try Self.worker(handle: "note(\"served\", mid + \" \" + str(os.getpid()))\nanswer()")
        try await withTestQueue { client, queue in
            let ids = (1...9).map { "r\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 1, extra: Self.persistent("max_messages = 3")))
            try await eventually("all served") { warren.lines("served").count == ids.count }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            var perWorker: [Substring: Int] = [:]
            for line in warren.lines("served") { perWorker[line.split(separator: " ")[1], default: 0] += 1 }
            #expect(perWorker.values.sorted() == [3, 3, 3], "\(perWorker)")
            #expect(Set(warren.lines("served").map { String($0.split(separator: " ")[0]) }) == Set(ids))
            for pid in Self.pids(warren) { #expect(isGone(pid)) }
        }
    }

    @Test func aWorkerOverMaxMemoryIsReplacedAfterItsAnswerAndTheMessageIsAckedOnce() async throws {
        // "big" leaves 96 MiB resident (touched, so it counts in RSS) in the worker.
        let command = try Self.worker(setup: "hoard = []", handle: """
            if body == "big":
                hoard.append(bytearray(b"x" * (96 << 20)))
            note("served", mid + " " + str(os.getpid()))
            answer()
            """)
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 1, extra: Self.persistent("max_memory = 64MB")))
            try await eventually("the worker is ready") { Self.logLines(warren, "worker ready").count == 1 }
            try await client.publish(ids: ["small1", "big", "small2"], to: queue)
            try await eventually("all served") { warren.lines("served").count == 3 }
            try await eventually("a new worker is ready") { Self.logLines(warren, "worker ready").count == 2 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(Self.logLines(warren, "worker over max_memory").count == 1)
            let served = warren.lines("served").map { $0.split(separator: " ") }
            #expect(served.map { String($0[0]) } == ["small1", "big", "small2"])
            #expect(served[0][1] == served[1][1] && served[2][1] != served[1][1], "replaced after big, not before: \(served)")
            #expect(try await client.count(queue) == 0)
            for pid in Self.pids(warren) { #expect(isGone(pid)) }
        }
    }

    @Test func aWorkerFloodingStderrIsBoundedPerMessageAndStallsNobody() async throws {
        let command = try Self.worker(handle: """
            if body == "flood":
                sys.stderr.write("y\\n" * 200000)
                sys.stderr.flush()
            note("finished", mid)
            answer()
            """)
        try await withTestQueue { client, queue in
            let ids = ["flood"] + (1...10).map { "f\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: command, concurrency: 2, extra: Self.persistent()))
            try await eventually("all finished") { Set(warren.lines("finished")) == Set(ids) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let lines = Self.logLines(warren, "message_id=flood")
            // The bounded stderr, the line saying the rest is not logged, and its outcome line.
            #expect(lines.count <= 32768 + 2, "\(lines.count) log lines for one message")
            #expect(warren.log.contains("further stderr of this handler is not logged"))
            #expect(try await client.count(queue) == 0)
        }
    }
}

/// The parent pid of `pid`, from /proc.
func parent(of pid: pid_t) -> pid_t? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
    return fields.count > 1 ? pid_t(fields[1]) : nil
}

import Foundation
import Glibc
import Testing

/// SIGTSTP pauses the `warren` binary (nothing new starts, what runs
/// finishes and is acked, the rest goes back to the queue, the connection
/// stays), SIGCONT resumes it. Each test accounts for every message: done
/// exactly once, or still in the queue.
@Suite(.serialized) struct PauseTests {
    static let handler = #"sh -c 'sleep 0.05; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#

    func withMetrics(_ config: String, port: Int) -> String {
        config.replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
    }

    func consumers(_ client: TestClient, _ queue: String) async throws -> UInt32 {
        try await client.connection.declareQueue(queue, on: 1, passive: true).consumerCount
    }

    @Test func pauseUnderLoadStopsConsumingFinishesWhatRunsAndResumeFinishesTheRestOnce() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...300).map { "p-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let port = MetricsTests.freePort()
            let base = "http://127.0.0.1:\(port)"
            let notify = try SystemdNotifyTests.NotifySocket(abstract: true)
            let warren = try WarrenBinary(
                config: withMetrics(try warrenConfig(queue: queue, command: Self.handler, prefetch: 16, concurrency: 4), port: port),
                environment: ["NOTIFY_SOCKET": notify.name])
            try await eventually("work under way") { warren.lines("finished").count >= 30 }
            #expect(MetricsTests.get(base + "/readyz").status == 200)

            warren.signal(SIGTSTP)
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            // Running handlers finish and are acked; everything else is back in the queue.
            try await eventually("nothing unacked: every message finished or ready in the queue") {
                let finished = Set(warren.lines("finished"))
                return try await client.count(queue) == ids.count - finished.count
            }
            let pausedAt = warren.lines("finished")
            try await Task.sleep(for: .seconds(1))
            #expect(warren.lines("finished") == pausedAt, "a handler started while paused")
            #expect(pausedAt.count < ids.count, "the pause came before the queue was empty")
            let readiness = MetricsTests.get(base + "/readyz")
            #expect(readiness.status == 503 && readiness.body.contains("paused"), "\(readiness)")
            #expect(MetricsTests.get(base + "/metrics").body.contains("warren_paused 1"))
            #expect(notify.drain().contains { $0.contains("STATUS=paused") }, "systemd is told")
            #expect(!isStopped(warren.pid), "SIGTSTP must never stop the process")

            warren.signal(SIGCONT)
            try await eventually("every message done after the resume", timeout: .seconds(60)) {
                warren.lines("finished").count >= ids.count
            }
            #expect(MetricsTests.get(base + "/readyz").status == 200)
            #expect(MetricsTests.get(base + "/metrics").body.contains("warren_paused 0"))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let finished = warren.lines("finished")
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids), "a message was lost")
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
            #expect(warren.log.contains("paused (SIGTSTP)") && warren.log.contains("resumed (SIGCONT)"))
        }
    }

    @Test func aStopWhilePausedIsAnOrdinaryDrainThatExitsZero() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...60).map { "s-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'sleep 0.5; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 8, concurrency: 4))
            try await eventually("the consumer consumes") { try await consumers(client, queue) == 1 }
            warren.signal(SIGCONT)  // not paused: nothing happens
            try await eventually("work under way") { warren.lines("finished").count >= 4 }
            warren.signal(SIGTSTP)
            warren.signal(SIGTSTP)  // twice: one pause
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let finished = warren.lines("finished")
            let left = try await client.drain(queue).map(\.id)
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished).isDisjoint(with: left), "a done message was not acked")
            #expect(Set(finished).union(left) == Set(ids), "a message was lost")
            #expect(!left.isEmpty, "the pause came before the queue was empty")
            #expect(warren.log.contains("stop requested: draining"))
        }
    }

    /// systemd sends SIGCONT right after SIGTERM on every stop, and the two
    /// reach warren through different sources, in either order: a stop
    /// while paused never consumes again, whichever comes first.
    @Test(arguments: [true, false])
    func aStopWhilePausedWithSIGCONTBesideItStartsNothingNew(termFirst: Bool) async throws {
        try await withTestQueue { client, queue in
            let ids = (1...60).map { "c-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/started; sleep 0.3; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 8, concurrency: 4))
            try await eventually("work under way") { warren.lines("finished").count >= 4 }
            warren.signal(SIGTSTP)
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            // Settled: a delivery a worker took just before the pause reached
            // it starts a moment later (its process spawning); only a count
            // that stays put for a while is what the pause let run.
            try await eventually("what ran has finished, and nothing more starts") {
                let started = warren.lines("started").count
                try await Task.sleep(for: .milliseconds(800))
                return warren.lines("started").count == started && warren.lines("finished").count == started
            }
            let startedWhenPaused = warren.lines("started")
            warren.signal(termFirst ? SIGTERM : SIGCONT)
            warren.signal(termFirst ? SIGCONT : SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(warren.lines("started") == startedWhenPaused, "a handler started after the stop")
            #expect(!warren.log.contains("resumed (SIGCONT)"), "\(warren.log)")
            #expect(!warren.log.contains("received SIGCONT: resuming"), "\(warren.log)")
            let finished = warren.lines("finished")
            let left = try await client.drain(queue).map(\.id)
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished).union(left) == Set(ids), "a message was lost")
        }
    }

    @Test func aReloadWhilePausedStartsTheNewConsumersPausedAndResumeRunsEverything() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...40).map { "r-\($0)" }
            let config = try warrenConfig(queue: queue, command: Self.handler, prefetch: 8, concurrency: 2)
            let warren = try WarrenBinary(config: config)
            try await eventually("the consumer consumes") { try await consumers(client, queue) == 1 }
            warren.signal(SIGTSTP)
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            try await client.publish(ids: ids, to: queue)
            // The same file, reloaded: new consumers, which must not consume while paused.
            warren.signal(SIGHUP)
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            try await Task.sleep(for: .seconds(1))
            #expect(try await consumers(client, queue) == 0, "a reload while paused consumed")
            #expect(warren.lines("finished").isEmpty)
            #expect(try await client.count(queue) == ids.count)

            warren.signal(SIGCONT)
            try await eventually("every message done after the resume", timeout: .seconds(60)) {
                warren.lines("finished").count >= ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids), "a message was lost")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// `T` in /proc: stopped by a signal.
    func isStopped(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)] == "T"
    }
}

/// Persistent workers: deliveries waiting for a worker still starting
/// have not started either.
extension PauseTests {
    @Test func aPauseWhilePersistentWorkersStartReleasesWhatWaitsForThemAndNothingRunsUntilResumed() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...10).map { "w-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let directory = try WarrenBinary.makeDirectory()
            try #"""
                import json, sys, time
                time.sleep(3)
                print(json.dumps({"ready": True}), flush=True)
                for line in sys.stdin:
                    message = json.loads(line)
                    open("{dir}/finished", "a").write(message["properties"]["message_id"] + "\n")
                    print(json.dumps({"id": message["id"], "outcome": "ack"}), flush=True)
                """#.replacingOccurrences(of: "{dir}", with: directory)
                .write(toFile: directory + "/slow-start.py", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/slow-start.py", prefetch: 4, concurrency: 2,
                extra: "mode = persistent"))
            try await eventually("the consumer consumes") { try await consumers(client, queue) == 1 }
            // Deliveries arrive and wait for workers that are not ready yet.
            try await eventually("deliveries taken") { try await client.count(queue) < ids.count }
            warren.signal(SIGTSTP)
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            try await eventually("the workers ready", timeout: .seconds(15)) {
                warren.log.components(separatedBy: "worker ready").count - 1 >= 2
            }
            try await Task.sleep(for: .seconds(1))
            let lines = ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "").split(separator: "\n")
            #expect(lines.isEmpty, "a message ran while paused: \(lines)")
            #expect(try await client.count(queue) == ids.count, "every message back in the queue")

            warren.signal(SIGCONT)
            try await eventually("every message done after the resume", timeout: .seconds(30)) {
                ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "").split(separator: "\n").count >= ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "")
                .split(separator: "\n").map(String.init)
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids), "a message was lost")
            #expect(try await client.count(queue) == 0)
        }
    }
}

extension PauseTests {
    /// A slot that asked for a message, whose worker then went, keeps the
    /// delivery that comes for the next worker; a pause meanwhile sends it
    /// back rather than letting it run once that worker is ready.
    @Test func aDeliveryKeptForAReplacementWorkerGoesBackOnAPause() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "k-\($0)" }
            let directory = try WarrenBinary.makeDirectory()
            // The first worker answers one message and leaves a second later,
            // while its slot waits for the next; the next worker takes 3 s to be ready.
            try #"""
                import json, os, sys, time
                first = not os.path.exists("{dir}/first")
                open("{dir}/first", "a").close()
                if not first:
                    time.sleep(3)
                print(json.dumps({"ready": True}), flush=True)
                for line in sys.stdin:
                    message = json.loads(line)
                    open("{dir}/finished", "a").write(message["properties"]["message_id"] + "\n")
                    print(json.dumps({"id": message["id"], "outcome": "ack"}), flush=True)
                    if first:
                        time.sleep(1)
                        sys.exit(0)
                """#.replacingOccurrences(of: "{dir}", with: directory)
                .write(toFile: directory + "/leaves.py", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/leaves.py", prefetch: 4, concurrency: 1,
                extra: "mode = persistent"))
            try await client.publish(ids: ["k-0"], to: queue)
            try await eventually("the first worker left") { warren.log.contains("worker exited while waiting for a message") }
            try await client.publish(ids: ids, to: queue)
            try await eventually("a delivery taken") { try await client.count(queue) < ids.count }
            warren.signal(SIGTSTP)
            try await eventually("the consumer cancelled") { try await consumers(client, queue) == 0 }
            try await eventually("the next worker ready", timeout: .seconds(15)) {
                warren.log.components(separatedBy: "worker ready").count - 1 >= 2
            }
            try await Task.sleep(for: .seconds(1))
            let early = ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "").split(separator: "\n")
            #expect(early == ["k-0"], "a message ran while paused: \(early)")
            #expect(try await client.count(queue) == ids.count, "every message back in the queue")

            warren.signal(SIGCONT)
            try await eventually("every message done after the resume", timeout: .seconds(30)) {
                ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "").split(separator: "\n").count >= ids.count + 1
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = ((try? String(contentsOfFile: directory + "/finished", encoding: .utf8)) ?? "")
                .split(separator: "\n").map(String.init)
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids + ["k-0"]), "a message was lost")
        }
    }
}

import Foundation
import Glibc
import Testing

/// `pause_after_failures`, with the `warren` binary and a real broker: a
/// handler whose dependency is down for a while fails every attempt; the
/// breaker stops consuming instead of burning the messages' attempts, lets
/// one through now and then, and resumes by itself once one succeeds.
@Suite(.serialized) struct BreakerTests {
    /// Fails (exit 1) until the time in `{dir}/up`, then succeeds; a ledger of each.
    static let handler = #"sh -c 'if [ "$(date +%s)" -lt "$(cat {dir}/up)" ]; then echo "$WARREN_MESSAGE_ID" >> {dir}/failed; exit 1; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#

    /// A handler that rejects a run of bad messages (exit 65) is working:
    /// each goes to the dead-letter queue at once, and the breaker never
    /// opens (it would spare them back into the queue, rejected again for ever).
    @Test func rejectedMessagesAreDeadLetteredAndNeverTripTheBreaker() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "bad-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "sh -c 'exit 65'", prefetch: 8,
                                                                   concurrency: 2, extra: "pause_after_failures = 2\nretry_delay = 1s"))
            try await eventually("every message dead-lettered") { try await client.count(queue + ".dead") == ids.count }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(!warren.log.contains("circuit breaker opened"), "\(warren.log)")
            #expect(Set(try await client.drain(queue + ".dead").map(\.id)) == Set(ids))
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".retry.1") == 0)
        }
    }

    /// `limit`: both `max_attempts` and `pause_after_failures`. With 1, a
    /// failure the breaker did not spare is dead-lettered at once; with 3,
    /// spared ones go back through the delay queue, their attempt unchanged.
    @Test(arguments: zip(["exec", "persistent"], [1, 3]))
    func aHandlerFailingFor10sThenSucceedingDeadLettersNothingAndConsumptionResumesByItself(mode: String, limit: Int) async throws {
        try await withTestQueue { client, queue in
            let ids = (1...40).map { "b-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let port = MetricsTests.freePort()
            let base = "http://127.0.0.1:\(port)"
            // Without the breaker, 10 s of failures would spend every
            // message's attempts many times over.
            let command = mode == "exec" ? Self.handler : "python3 {dir}/worker.py"
            let config = try warrenConfig(queue: queue, command: command, prefetch: 8, concurrency: 2, extra: """
                mode = \(mode)
                max_attempts = \(limit)
                retry_delay = 1s
                retry_delay_max = 4s
                pause_after_failures = \(limit)
                """)
                .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
            let directory = try WarrenBinary.makeDirectory()
            // Written before warren starts: the dependency is down for the next 10 s.
            let up = Int(Date().timeIntervalSince1970) + 10
            try "\(up)\n".write(toFile: directory + "/up", atomically: true, encoding: .utf8)
            try Self.worker.replacingOccurrences(of: "{dir}", with: directory)
                .write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: config.replacingOccurrences(of: "{dir}", with: directory))

            try await eventually("the breaker opens", timeout: .seconds(20)) {
                MetricsTests.get(base + "/metrics").body.contains(#"warren_breaker_open{consumer="test"} 1"#)
            }
            try await eventually("every message done once the handler works", timeout: .seconds(90)) {
                Set(Self.lines(directory + "/finished")).count >= ids.count
            }
            try await eventually("the breaker closed", timeout: .seconds(10)) {
                MetricsTests.get(base + "/metrics").body.contains(#"warren_breaker_open{consumer="test"} 0"#)
            }
            // Each outcome line and the counter of its outcome say the same,
            // spared messages (outcome=retry) included.
            let counted = MetricsTests.get(base + "/metrics").body.split(separator: "\n")
                .first { $0.hasPrefix("warren_outcomes_total{") && $0.contains(#"outcome="retry""#) }
                .flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            let retryLines = warren.log.split(separator: "\n").filter { $0.contains(" outcome=retry") }.count
            #expect(counted.map(Int.init) == retryLines, "warren_outcomes_total{outcome=retry}: \(String(describing: counted)), outcome=retry lines: \(retryLines)")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let finished = Self.lines(directory + "/finished")
            let failed = Self.lines(directory + "/failed")
            #expect(!failed.isEmpty, "the handler failed while its dependency was down")
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids), "a message was lost")
            #expect(try await client.count(queue + ".dead") == 0, "a message was dead-lettered: \(warren.log)")
            #expect(try await client.count(queue) == 0)
            for level in 1...2 { #expect(try await client.count("\(queue).retry.\(level)") == 0) }
            #expect(warren.log.contains("the circuit breaker opened"))
            #expect(warren.log.contains("circuit breaker: letting one message through"))
            #expect(warren.log.contains("the circuit breaker closed"))
            #expect(!warren.log.contains("message dead-lettered"))
        }
    }

    /// Half-open, only the one message let through may be delivered: with
    /// the full prefetch the broker sends more, each goes back to the head
    /// of the queue unstarted, the same ones at every opening, and a quorum
    /// queue counts each return toward `delivery_limit` until it
    /// dead-letters them. Spared messages keep their attempt number.
    @Test func aHalfOpenBreakerOnAQuorumQueueTakesOneMessageAndNothingReachesTheDeliveryLimit() async throws {
        try await withTestQueue { client, queue in
            // warren declares it, as a quorum queue.
            _ = try await client.connection.deleteQueue(queue, on: 1)
            let directory = try WarrenBinary.makeDirectory()
            let command = #"sh -c 'echo "$WARREN_MESSAGE_ID $WARREN_ATTEMPT ${WARREN_DELIVERY_COUNT:-0}" >> {dir}/started; if [ "$(date +%s)" -lt "$(cat {dir}/up)" ]; then exit 1; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#
            let config = try warrenConfig(queue: queue, command: command, prefetch: 16, concurrency: 2, extra: """
                queue_type = quorum
                delivery_limit = 3
                max_attempts = 3
                retry_delay = 1s
                retry_delay_max = 2s
                pause_after_failures = 1
                """)
            // Down for 14 s: half a dozen openings, each of which returned
            // up to 15 messages before (past the limit of 3 by the fourth).
            let up = Int(Date().timeIntervalSince1970) + 14
            try "\(up)\n".write(toFile: directory + "/up", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: config.replacingOccurrences(of: "{dir}", with: directory))
            try await eventually("consuming") { warren.log.contains("running") }
            let ids = (1...30).map { "q-\($0)" }
            try await client.publish(ids: ids, to: queue)
            try await eventually("every message done once the handler works", timeout: .seconds(90)) {
                Set(Self.lines(directory + "/finished")).count >= ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let started = Self.lines(directory + "/started").map { $0.split(separator: " ").map(String.init) }
            let finished = Self.lines(directory + "/finished")
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(Set(finished) == Set(ids), "a message was lost")
            #expect(try await client.count(queue + ".dead") == 0, "dead-lettered (delivery_limit): \(warren.log)")
            #expect(!warren.log.contains("the broker's last delivery"), "\(warren.log)")
            // Every failure was spared (pause_after_failures = 1): each
            // message runs with the same attempt number every time (on a
            // quorum queue, 1 + the broker's count of returns before).
            let attempts = Dictionary(grouping: started, by: { $0[0] }).mapValues { Set($0.map { $0[1] }) }
            #expect(attempts.values.allSatisfy { $0.count == 1 }, "an attempt was counted: \(started)")
            // At most the trip's own return, and one when the drain or a hold gives one back.
            let counts = started.compactMap { Int($0[2]) }
            #expect(counts.allSatisfy { $0 <= 2 }, "returned again and again: \(started)")
            // One message per opening: the runs that failed are those under
            // way when it tripped (concurrency 2) and one per half-open cycle.
            let failedRuns = started.count - finished.count
            let openings = warren.log.components(separatedBy: "circuit breaker: letting one message through").count - 1
            #expect(openings >= 3, "\(warren.log)")
            #expect(failedRuns <= 2 + openings, "more than one message per half-open cycle: \(failedRuns) failed runs, \(openings) openings")
        }
    }

    /// `max_attempts = 1` (no delay queues): a spared message goes to the
    /// tail of its queue, not back to its head, so a message that always
    /// fails is not every message let through, and the ones behind it run.
    @Test func withoutDelayQueuesAPoisonMessageDoesNotBlockTheMessagesBehindIt() async throws {
        try await withTestQueue { client, queue in
            let command = #"sh -c 'echo "$WARREN_MESSAGE_ID $WARREN_ATTEMPT" >> {dir}/started; [ "$WARREN_MESSAGE_ID" != poison ] || exit 1; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: command, prefetch: 1, concurrency: 1, extra: """
                max_attempts = 1
                retry_delay = 500ms
                retry_delay_max = 1s
                pause_after_failures = 1
                """))
            try await eventually("consuming") { warren.log.contains("running") }
            let good = (1...8).map { "g-\($0)" }
            try await client.publish(ids: ["poison"] + good, to: queue)
            try await eventually("the messages behind the poison are done", timeout: .seconds(60)) {
                Set(warren.lines("finished")) == Set(good)
            }
            try await eventually("the poison went round again") {
                warren.lines("started").filter { $0.hasPrefix("poison ") }.count >= 2
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            #expect(finished.count == Set(finished).count, "a message was done twice")
            #expect(warren.lines("started").filter { $0.hasPrefix("poison ") }.allSatisfy { $0 == "poison 1" },
                    "the poison's attempt was counted: \(warren.lines("started"))")
            #expect(try await client.count(queue + ".dead") == 0, "\(warren.log)")
            #expect(try await client.drain(queue).map(\.id) == ["poison"], "the poison waits in the queue, once")
            #expect(warren.log.contains("requeued at the tail of the queue"))
        }
    }

    /// `warren_breaker_open` is 1 while the breaker keeps the consumer from
    /// consuming, 0 while it consumes: half-open, waiting for a message
    /// that does not come (an idle queue), is not an open breaker.
    @Test func aHalfOpenBreakerWaitingForAMessageReadsZero() async throws {
        try await withTestQueue { client, queue in
            let port = MetricsTests.freePort()
            let gauge = #"warren_breaker_open{consumer="test"} "#
            func reads() -> String? {
                MetricsTests.get("http://127.0.0.1:\(port)/metrics").body.split(separator: "\n")
                    .first { $0.hasPrefix(gauge) }.flatMap { Double($0.dropFirst(gauge.count)) }.map { String(Int($0)) }
            }
            let config = try warrenConfig(queue: queue, command: "false", prefetch: 1, concurrency: 1, extra: """
                max_attempts = 1
                retry_delay = 3s
                retry_delay_max = 3s
                pause_after_failures = 1
                """)
                .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
            let warren = try WarrenBinary(config: config)
            try await eventually("consuming") { warren.log.contains("running") }
            #expect(reads() == "0")
            try await client.publish(ids: ["x"], to: queue)
            try await eventually("the breaker opens") { reads() == "1" }
            // The failing message leaves the queue: nothing comes to let through.
            try await eventually("half-open with nothing to let through", timeout: .seconds(30)) {
                _ = try await client.connection.purgeQueue(queue, on: 1)
                return reads() == "0"
            }
            #expect(!warren.log.contains("the circuit breaker closed"), "\(warren.log)")
            try await Task.sleep(for: .seconds(1))
            #expect(reads() == "0", "\(warren.log)")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
        }
    }

    /// A reload that removes a consumer whose breaker is open leaves no
    /// `warren_breaker_open` of 1 behind (the critical alert would fire for
    /// a consumer that is gone); the retired runtime records nothing more.
    @Test func aReloadRemovingAConsumerWithAnOpenBreakerSetsItsGaugeToZero() async throws {
        try await withTestQueue { client, queue in
            let port = MetricsTests.freePort()
            func reads(_ consumer: String) -> String? {
                let gauge = "warren_breaker_open{consumer=\"\(consumer)\"} "
                return MetricsTests.get("http://127.0.0.1:\(port)/metrics").body.split(separator: "\n")
                    .first { $0.hasPrefix(gauge) }.flatMap { Double($0.dropFirst(gauge.count)) }.map { String(Int($0)) }
            }
            func config(_ name: String, breaker: Bool) throws -> String {
                try warrenConfig(queue: queue, command: "false", prefetch: 1, concurrency: 1, extra: """
                    max_attempts = 1
                    retry_delay = 60s
                    """ + (breaker ? "\npause_after_failures = 1" : ""))
                    .replacingOccurrences(of: "[consumer.test]", with: "[consumer.\(name)]")
                    .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
            }
            let warren = try WarrenBinary(config: try config("test", breaker: true))
            try await eventually("consuming") { warren.log.contains("running") }
            try await client.publish(ids: ["x"], to: queue)
            try await eventually("the breaker opens") { reads("test") == "1" }
            try config("renamed", breaker: false).write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            try await eventually("the removed consumer's gauge reads 0") { reads("test") == "0" }
            try await eventually("the old consumers drained") { warren.log.contains("the replaced consumers have drained") }
            #expect(reads("test") == "0", "\(warren.log)")
            #expect(reads("renamed") == "0")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
        }
    }

    /// A persistent worker doing what `handler` does, in the wire protocol.
    static let worker = #"""
        import json, sys, time
        print(json.dumps({"ready": True}), flush=True)
        up = int(open("{dir}/up").read())
        for line in sys.stdin:
            message = json.loads(line)
            mid = message["properties"]["message_id"]
            if time.time() < up:
                open("{dir}/failed", "a").write(mid + "\n")
                print(json.dumps({"id": message["id"], "outcome": "retry", "reason": "down"}), flush=True)
            else:
                open("{dir}/finished", "a").write(mid + "\n")
                print(json.dumps({"id": message["id"], "outcome": "ack"}), flush=True)
        """#

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}

import AMQP
import Foundation
import Glibc
import Testing

/// The outcome lines: every message a worker takes gets exactly one log
/// line with `outcome=`, saying what became of it, in both modes; the
/// broker's queues agree with every line.
@Suite(.serialized) struct OutcomeLogTests {
    /// The outcome lines of a text-format log, by message id, in order.
    static func outcomes(_ log: String) -> [String: [Substring]] {
        var found: [String: [Substring]] = [:]
        for line in log.split(separator: "\n") where line.contains(" outcome=") {
            let id = Self.value(of: "message_id", in: line) ?? "?"
            found[id, default: []].append(line)
        }
        return found
    }

    /// A `key=value` of a text-format line (an unquoted value).
    static func value(of key: String, in line: Substring) -> String? {
        guard let range = line.range(of: " \(key)=") else { return nil }
        return String(line[range.upperBound...].prefix { $0 != " " })
    }

    /// A command (exec) or a worker (persistent) that acks `ok…`, retries
    /// `retry…`, rejects `dead…` and hangs on `slow…`, chosen by the body.
    static func handler(persistent: Bool) throws -> String {
        if persistent {
            let directory = try WarrenBinary.makeDirectory()
            try """
                import json, sys, time
                print(json.dumps({"ready": True}), flush=True)
                for line in sys.stdin:
                    envelope = json.loads(line)
                    body = envelope["body"]
                    answer = {"id": envelope["id"], "outcome": "ack"}
                    if body.startswith("retry"):
                        answer = {"id": envelope["id"], "outcome": "retry", "reason": "try again later"}
                    elif body.startswith("dead"):
                        answer = {"id": envelope["id"], "outcome": "dead_letter", "reason": "bad input"}
                    elif not body.startswith("ok"):
                        time.sleep(300)
                    print(json.dumps(answer), flush=True)
                """.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
            return "python3 \(directory)/worker.py"
        }
        return #"sh -c 'b=$(cat); case "$b" in ok*) exit 0;; retry*) exit 75;; dead*) exit 65;; *) sleep 300;; esac'"#
    }

    @Test(arguments: ["exec", "persistent"])
    func everyMessageGetsExactlyOneOutcomeLineSayingWhatBecameOfIt(mode: String) async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["ok-1", "ok-2", "ok-3", "retry-1", "dead-1", "slow-1"], to: queue)
            // No message id: the line says `-`.
            try await client.connection.publish(Array("ok-anonymous".utf8), routingKey: queue, on: 1,
                                                properties: MessageProperties(deliveryMode: 2))
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: try Self.handler(persistent: mode == "persistent"), concurrency: 2, killAfter: "1s",
                extra: (mode == "persistent" ? "mode = persistent\n" : "") + "timeout = 2s\nretry_delay = 60s"))
            try await eventually("every message settled", timeout: .seconds(40)) {
                let retried = try await client.count(queue + ".retry.1")
                let dead = try await client.count(queue + ".dead")
                return retried == 2 && dead == 1 && Self.outcomes(warren.log).values.joined().count >= 7
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let lines = Self.outcomes(warren.log)
            let expected = ["ok-1": "ack", "ok-2": "ack", "ok-3": "ack", "-": "ack", "retry-1": "retry",
                            "dead-1": "dead_letter", "slow-1": "retry"]
            #expect(Set(lines.keys) == Set(expected.keys), "\(lines)")
            for (id, outcome) in expected {
                let mine = lines[id] ?? []
                #expect(mine.count == 1, "\(id): \(mine)")
                guard let line = mine.first else { continue }
                #expect(Self.value(of: "outcome", in: line) == outcome, "\(line)")
                #expect(Self.value(of: "consumer", in: line) == "test", "\(line)")
                #expect(Self.value(of: "attempt", in: line) == "1", "\(line)")
                #expect(Self.value(of: "duration_ms", in: line).flatMap(Double.init) != nil, "\(line)")
                #expect(line.contains(" reason=") == (outcome != "ack"), "\(line)")
            }
            #expect(lines["slow-1"]?.first?.contains("reason=\"timed out after 2.0 seconds: ") == true, "\(lines["slow-1"] ?? [])")
            if mode == "exec" {
                #expect(lines["retry-1"]?.first?.contains("reason=\"exit code 75\"") == true, "\(lines["retry-1"] ?? [])")
                #expect(lines["dead-1"]?.first?.contains("exit code 65") == true, "\(lines["dead-1"] ?? [])")
            } else {
                #expect(lines["retry-1"]?.first?.contains("reason=\"try again later\"") == true, "\(lines["retry-1"] ?? [])")
                #expect(lines["dead-1"]?.first?.contains("bad input") == true, "\(lines["dead-1"] ?? [])")
            }
            // The queues agree with the lines.
            #expect(Set(try await client.drain(queue + ".retry.1").map(\.id)) == ["retry-1", "slow-1"])
            #expect(try await client.drain(queue + ".dead").map(\.id) == ["dead-1"])
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func inJSONEachOutcomeLineCarriesEveryFieldAsItsOwnKey() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["ok-1", "retry-1"], to: queue)
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: try Self.handler(persistent: false),
                                         extra: "retry_delay = 60s"),
                environment: ["WARREN_LOG_FORMAT": "json"])
            try await eventually("both settled") {
                try await client.count(queue + ".retry.1") == 1 && warren.log.contains("\"outcome\":\"ack\"")
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let objects = warren.log.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            let outcomes = objects.filter { $0["outcome"] != nil }
            #expect(outcomes.count == 2, "\(warren.log)")
            for object in outcomes {
                for key in ["time", "level", "message", "consumer", "message_id", "attempt", "outcome", "duration_ms"] {
                    #expect(object[key] is String, "no \(key): \(object)")
                }
            }
            let ack = outcomes.first { $0["outcome"] as? String == "ack" }
            let retry = outcomes.first { $0["outcome"] as? String == "retry" }
            #expect(ack?["message_id"] as? String == "ok-1" && ack?["level"] as? String == "info" && ack?["reason"] == nil)
            #expect(retry?["message_id"] as? String == "retry-1" && retry?["reason"] as? String == "exit code 75")
        }
    }

    @Test func withLogOutcomesFalseAcksPrintNoLineAndFailuresStillDo() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["ok-1", "ok-2", "ok-3", "dead-1"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'b=$(cat); echo "done $b" >> {dir}/done; case "$b" in dead*) exit 65;; esac'"#,
                extra: "log_outcomes = false"))
            try await eventually("every message handled") {
                let dead = try await client.count(queue + ".dead")
                return warren.lines("done").count == 4 && dead == 1
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let lines = Self.outcomes(warren.log)
            #expect(Set(lines.keys) == ["dead-1"], "\(lines)")
            #expect(lines["dead-1"]?.count == 1)
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A publisher picks the message id: a newline in it must not make a
    /// second line, and a line that looks like an outcome must not appear,
    /// whether the id has blanks (quoted anyway) or none.
    @Test func aMessageIdWithControlCharactersCannotForgeASecondOutcomeLine() async throws {
        try await withTestQueue { client, queue in
            let spaced = "ok-1\n2026-01-01T00:00:00.000Z INFO message acked consumer=test message_id=forged outcome=ack\r\u{1b}[2K"
            let compact = "ok-2\n<2>forged\r\u{1b}[2K\u{2028}"
            try await client.publish(ids: [spaced, compact], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.handler(persistent: false)))
            try await eventually("both acked") {
                warren.log.split(separator: "\n").filter { $0.contains("INFO message acked") && $0.contains(" consumer=test") }.count >= 2
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let outcomeLines = warren.log.split(separator: "\n").filter { $0.contains("outcome=") }
            #expect(outcomeLines.count == 2, "\(outcomeLines)")
            #expect(outcomeLines.contains { $0.contains(#"message_id="ok-1\n2026-01-01T00:00:00.000Z INFO message acked consumer=test message_id=forged outcome=ack\r\u001b[2K""#) },
                    "\(outcomeLines)")
            #expect(outcomeLines.contains { $0.contains(#"message_id="ok-2\n<2>forged\r\u001b[2K\u2028""#) }, "\(outcomeLines)")
            #expect(!warren.log.contains("\r") && !warren.log.contains("\u{1b}") && !warren.log.contains("\u{2028}"))
            // Every line is a record of warren's: it starts with its timestamp.
            for line in warren.log.split(separator: "\n") {
                #expect(line.hasPrefix("20") && line.dropFirst(4).first == "-", "a forged line: \(line.debugDescription)")
            }
        }
    }

    /// The drain line says how many messages went back to the queue without
    /// a handler ever seeing them.
    @Test func theDrainLineCountsTheMessagesReleasedUnstarted() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...10).map { "m\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh -c 'cat > /dev/null; echo started >> {dir}/started; sleep 2'",
                prefetch: 10, concurrency: 1))
            try await eventually("one started, the other nine delivered") {
                let ready = try await client.count(queue)
                return warren.lines("started").count == 1 && ready == 0
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let drain = warren.log.split(separator: "\n").filter { $0.contains("stop requested: draining") }
            #expect(drain.count == 1 && drain.first?.contains("released_unstarted=9") == true, "\(drain)")
            // The one started was acked; the nine are back.
            #expect(Self.outcomes(warren.log).values.joined().map { Self.value(of: "outcome", in: $0) } == ["ack"])
            #expect(try await client.count(queue) == 9)
        }
    }
}

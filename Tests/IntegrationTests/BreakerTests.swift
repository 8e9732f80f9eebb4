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

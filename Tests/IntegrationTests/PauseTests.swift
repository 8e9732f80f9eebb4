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

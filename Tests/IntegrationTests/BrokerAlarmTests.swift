import AMQP
import Foundation
import Glibc
import Synchronization
import Testing

/// A broker alarm (memory or disk) blocks every connection that publishes.
/// Retry copies then never get their confirm: warren must not wait for them
/// past its stop bound, and must never ack an original without one.
@Suite(.serialized) struct BrokerAlarmTests {
    /// Every message is in one of the consumer's queues: the handler never succeeds.
    static func everyIDIsStillQueued(_ ids: [String], queue: String, checker: TestClient) async throws {
        let retryQueues = (1...8).map { "\(queue).retry.\($0)" }
        // Copies in delay queues come back to the work queue when their delay is over.
        try await eventually("the delay queues emptied into the work queue", timeout: .seconds(30)) {
            var total = 0
            for name in retryQueues { total += try await checker.count(name) }
            return total == 0
        }
        let found = try await checker.drain(queue).map(\.id) + (try await checker.drain(queue + ".dead")).map(\.id)
        #expect(Set(found) == Set(ids), "lost: \(Set(ids).subtracting(found).sorted().prefix(5))")
    }

    @Test func aStopDuringABrokerAlarmExitsCleanlyWithinGracePlusKillAfterAndLosesNothing() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...20).map { "alarm-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let port = MetricsTests.freePort()
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/attempts; exit 75'"#,
                prefetch: 4, concurrency: 2, grace: "3s", killAfter: "1s",
                extra: "max_attempts = 1000\nretry_delay = 200ms\nretry_delay_max = 200ms")
                .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]"))
            try await eventually("retries flow") { warren.lines("attempts").count >= 10 }
            // Tests share the broker: the alarm is lifted whatever happens here.
            defer { try? FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.4") }
            try FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.00001")
            // Retries go on under the alarm for a while: copies without confirms.
            try await Task.sleep(for: .seconds(3))
            let ready = MetricsTests.get("http://127.0.0.1:\(port)/readyz")
            #expect(ready.status == 503 && ready.body.contains("broker blocked"), "\(ready)")
            let metrics = MetricsTests.get("http://127.0.0.1:\(port)/metrics").body
            #expect(metrics.contains("warren_broker_blocked 1"))
            #expect(metrics.contains("warren_ready 0"), "\(metrics)")
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGTERM)
            let code = await warren.waitForExit(timeout: .seconds(40))
            let took = clock.now - signalled
            #expect(code == 0, "\(warren.log)")
            // grace_period 3 s + kill_after 1 s, and a little for the close.
            #expect(took < .seconds(6), "the stop took \(took)")
            #expect(!warren.log.contains("stop did not finish"))
            #expect(!warren.log.contains("message dead-lettered"))
            #expect(warren.log.contains("the broker blocked the publishing connection"))
            try FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            let checker = try await TestClient()
            try await Self.everyIDIsStillQueued(ids, queue: queue, checker: checker)
            await checker.close()
        }
    }

    @Test func theBrokerSaysWhenItBlocksAPublishingConnectionAndWhenItUnblocksIt() async throws {
        try await withTestQueue { _, queue in
            let seen = Mutex<[String]>([])
            var options = try TestBroker.options
            options.connectionName = "warren-tests-blocked"
            let connection = try await AMQPConnection.connect(options) { event in
                switch event {
                case .blocked(let reason): seen.withLock { $0.append("blocked: \(reason)") }
                case .unblocked: seen.withLock { $0.append("unblocked") }
                default: break
                }
            }
            try await connection.openChannel(1, confirms: true)
            defer { try? FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.4") }
            try FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.00001")
            let confirmed = Mutex<Bool>(false)
            connection.publishConfirmed(Array("b".utf8), routingKey: queue, on: 1) { _ in confirmed.withLock { $0 = true } }
            try await eventually("blocked") { seen.withLock { $0.first?.hasPrefix("blocked: ") == true } }
            #expect(!confirmed.withLock { $0 }, "confirmed while blocked")
            try FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            try await eventually("unblocked") { seen.withLock { $0.last == "unblocked" } }
            try await eventually("the publish is confirmed once unblocked") { confirmed.withLock { $0 } }
            await connection.close()
        }
    }

    @Test func abortEndsABlockedConnectionAtOnce() async throws {
        try await withTestQueue { _, queue in
            let connection = try await TestBroker.connect()
            try await connection.openChannel(1, confirms: true)
            defer { try? FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.4") }
            try FaultTests.rabbitmqctl("set_vm_memory_high_watermark", "0.00001")
            let answer = Mutex<Result<Void, AMQPError>?>(nil)
            connection.publishConfirmed(Array("b".utf8), routingKey: queue, on: 1) { result in answer.withLock { $0 = result } }
            try await Task.sleep(for: .milliseconds(500))
            let clock = ContinuousClock()
            let start = clock.now
            connection.abort()
            await connection.closed()
            #expect(clock.now - start < .seconds(2))
            #expect(answer.withLock { (try? $0?.get()) == nil && $0 != nil }, "the unconfirmed publish failed")
        }
    }
}

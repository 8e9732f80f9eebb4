import AMQP
import Foundation
import Glibc
import Testing

/// Every outcome of a handler has a home: retries through delay queues,
/// dead letters with reasons, and nothing acked before its copy is confirmed.
@Suite(.serialized) struct RetryTests {
    /// A quorum queue's delivery count belongs to one message in the
    /// broker: the retry copy is a new one, and carries none on (a stale
    /// count would read as a message near its `delivery_limit`).
    @Test func aRetryCopyCarriesNoDeliveryCountOn() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["counted"], to: queue, headers: FieldTable([("x-delivery-count", .int64(1))]))
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'echo "$WARREN_ATTEMPT ${WARREN_DELIVERY_COUNT-none}" >> {dir}/seen; [ "${WARREN_DELIVERY_COUNT-none}" = none ] || exit 75'"#,
                extra: "retry_delay = 100ms"))
            try await eventually("the second attempt ran") { warren.lines("seen").count == 2 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            // Delivered once before (a quorum queue's count of 1): attempt 2, then 3 from the copy.
            #expect(warren.lines("seen") == ["2 1", "3 none"])
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aHungHandlerIsKilledAfterItsTimeoutRetriedThenDeadLetteredWhileOthersFlow() async throws {
        try await withTestQueue { client, queue in
            let good = (1...10).map { "ok-\($0)" }
            try await client.publish(ids: ["hang"] + good, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'if [ "$WARREN_MESSAGE_ID" = hang ]; then echo "$WARREN_ATTEMPT" >> {dir}/hang; trap "" TERM; sleep 300; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 4, concurrency: 2, killAfter: "500ms",
                extra: "timeout = 700ms\nmax_attempts = 3\nretry_delay = 100ms"))
            try await eventually("hang dead-lettered", timeout: .seconds(30)) { try await client.count(queue + ".dead") == 1 }
            try await eventually("the others finished") { Set(warren.lines("finished")) == Set(good) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(warren.lines("hang") == ["1", "2", "3"])
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["hang"])
            let headers = try #require(dead.first?.headers)
            #expect(headers["x-warren-timed-out"] == .bool(true))
            #expect(headers["x-warren-attempts"] == .int64(3))
            #expect(headers["x-warren-signal"] == .int32(SIGKILL))
            #expect(headers["x-warren-consumer"]?.stringValue == "test")
            #expect(headers["x-warren-reason"]?.stringValue?.hasPrefix("failed 3 of 3 attempts") == true)
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func exitCodesPickTheOutcomeAndAttemptsAreCounted() async throws {
        try await withTestQueue { client, queue in
            let headers = FieldTable([("x-tenant", .string("acme")), ("n", .int16(-3)), ("f", .double(1.5)),
                                      ("t", .timestamp(1_700_000_000)), ("raw", .bytes([0, 1, 255])),
                                      ("deep", .table(FieldTable([("list", .array([.bool(false), .string("é")]))])))])
            try await client.connection.publish(Array("payload-dl".utf8), routingKey: queue, on: 1, properties: MessageProperties(
                contentType: "application/x-test", contentEncoding: "identity", headers: headers, deliveryMode: 2, priority: 3,
                correlationId: "corr-1", replyTo: "replies", messageId: "dl", timestamp: 1_700_000_001, type: "t1", appId: "tests"))
            try await client.publish(ids: ["tmp", "err", "ok"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'echo "$WARREN_MESSAGE_ID $WARREN_ATTEMPT" >> {dir}/attempts; case "$WARREN_MESSAGE_ID" in dl) echo "cannot parse" >&2; exit 65;; tmp) exit 75;; err) exit 1;; esac'"#,
                prefetch: 4, concurrency: 2, extra: "max_attempts = 3\nretry_delay = 100ms"))
            try await eventually("three dead letters", timeout: .seconds(30)) { try await client.count(queue + ".dead") == 3 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let attempts = warren.lines("attempts")
            #expect(attempts.filter { $0.hasPrefix("dl ") } == ["dl 1"], "exit 65 dead-letters at once")
            #expect(attempts.filter { $0.hasPrefix("tmp ") } == ["tmp 1", "tmp 2", "tmp 3"])
            #expect(attempts.filter { $0.hasPrefix("err ") } == ["err 1", "err 2", "err 3"])
            #expect(attempts.filter { $0.hasPrefix("ok ") } == ["ok 1"])
            #expect(try await client.count(queue) == 0)

            // The dead-letter copy keeps body, properties and headers, and says why.
            let copy = try await consumeOne(from: queue + ".dead", id: "dl")
            #expect(copy.body == Array("payload-dl".utf8))
            let p = copy.properties
            #expect(p.contentType == "application/x-test" && p.contentEncoding == "identity" && p.deliveryMode == 2)
            #expect(p.priority == 3 && p.correlationId == "corr-1" && p.replyTo == "replies" && p.timestamp == 1_700_000_001)
            #expect(p.type == "t1" && p.appId == "tests")
            for (key, value) in headers.entries { #expect(p.headers?[key] == value, "header \(key)") }
            #expect(p.headers?["x-warren-exit-code"] == .int32(65))
            #expect(p.headers?["x-warren-last-stderr"]?.stringValue == "cannot parse")
            #expect(p.headers?["x-warren-reason"]?.stringValue == "rejected by the handler (exit code 65)")
            #expect(p.headers?["x-warren-exchange"]?.stringValue == "")
            #expect(p.headers?["x-warren-routing-key"]?.stringValue == queue)
        }
    }

    @Test func delaysBetweenAttemptsGrowAsConfigured() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["bk"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'date +%s.%N >> {dir}/times; exit 75'"#,
                extra: "max_attempts = 4\nretry_delay = 400ms\nretry_delay_max = 1s"))
            try await eventually("dead-lettered", timeout: .seconds(30)) { try await client.count(queue + ".dead") == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let times = warren.lines("times").compactMap(Double.init)
            try #require(times.count == 4)
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            // Configured: 400 ms, 800 ms, 1 s (capped), each shortened by up to 10 %.
            #expect(gaps[0] >= 0.3 && gaps[0] < 2.0, "gap 1: \(gaps[0])")
            #expect(gaps[1] >= 0.65 && gaps[1] < 2.5, "gap 2: \(gaps[1])")
            #expect(gaps[2] >= 0.85 && gaps[2] < 3.0, "gap 3: \(gaps[2])")
            #expect(gaps[1] > gaps[0] * 1.3, "the delay grows: \(gaps)")
        }
    }

    @Test func aRetryCopyTheBrokerCannotRouteLeavesTheOriginalUnacked() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_ATTEMPT $WARREN_REDELIVERED" >> {dir}/runs; exit 75'"#,
                extra: "max_attempts = 3\nretry_delay = 200ms"))
            try await eventually("consuming") { warren.log.contains("running") }
            // The delay queue disappears: the retry copy has nowhere to go.
            try await client.connection.deleteQueue(queue + ".retry.1", on: 1)
            try await client.publish(ids: ["orphan"], to: queue)
            try await eventually("the message came back and ran again") { warren.lines("runs").count >= 2 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let runs = warren.lines("runs")
            #expect(runs.allSatisfy { $0.hasPrefix("1 ") }, "still the first attempt: the copy never existed \(runs)")
            #expect(runs.dropFirst().allSatisfy { $0 == "1 1" }, "redelivered by the broker")
            #expect(warren.log.contains("the broker refused the copy"))
            #expect(try await client.drain(queue).map(\.id) == ["orphan"], "not lost, not acked")
            #expect(try await client.count(queue + ".dead") == 0)
        }
    }

    @Test func retriesWorkOnQuorumQueues() async throws {
        let queue = "test.quorum.\(UInt32.random(in: 0...UInt32.max))"
        let client = try await TestClient()
        let warren = try WarrenBinary(config: try warrenConfig(
            queue: queue, command: #"sh -c 'echo "$WARREN_ATTEMPT" >> {dir}/attempts; [ "$WARREN_ATTEMPT" -ge 3 ]'"#,
            extra: "max_attempts = 5\nretry_delay = 100ms\nqueue_type = quorum"))
        try await eventually("consuming") { warren.log.contains("running") }
        try await client.publish(ids: ["qq"], to: queue)
        try await eventually("third attempt succeeded", timeout: .seconds(30)) { warren.lines("attempts").count == 3 }
        try await Task.sleep(for: .milliseconds(300))
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0, "\(warren.log)")
        #expect(warren.lines("attempts") == ["1", "2", "3"])
        #expect(try await client.count(queue) == 0)
        #expect(try await client.count(queue + ".dead") == 0)
        await cleanUp(client, queue)
    }

    @Test func withDeclareOffAMissingDeadLetterQueueIsNamedAtStartup() async throws {
        try await withTestQueue { _, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true", extra: "declare = false"))
            #expect(await warren.waitForExit() == 1)
            #expect(warren.log.contains("dead-letter queue '\(queue).dead' of [consumer.test] does not exist and declare = false"))
        }
    }

    func consumeOne(from queue: String, id: String) async throws -> Delivery {
        let connection = try await TestBroker.connect()
        try await connection.openChannel(1, prefetch: 10)
        _ = try await connection.consume(queue: queue, on: 1)
        var found: Delivery? = nil
        for await event in connection.events {
            if case .delivery(let delivery) = event, delivery.properties.messageId == id {
                found = delivery
                break
            }
        }
        await connection.close()
        return try #require(found)
    }

    func cleanUp(_ client: TestClient, _ queue: String) async {
        for name in [queue, queue + ".dead"] + (1...5).map({ "\(queue).retry.\($0)" }) {
            _ = try? await client.connection.deleteQueue(name, on: 1)
        }
        await client.close()
    }
}

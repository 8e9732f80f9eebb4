import AMQP
import Foundation
import Glibc
import Testing

/// No original is acked unless the broker confirmed its copy.
@Suite(.serialized) struct ConfirmTests {
    @Test func aUserWhoMayNotPublishNeverGetsAnOriginalAckedAndNothingIsLost() async throws {
        try await withTestQueue { client, queue in
            // The delay queues name the default exchange as their dead-letter
            // exchange, which this user may not declare: a first warren does.
            let declaring = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true", extra: "max_attempts = 1000\nretry_delay = 10ms"))
            try await eventually("the topology is declared") { declaring.log.contains("NOTICE running") }
            declaring.signal(SIGTERM)
            #expect(await declaring.waitForExit() == 0)
            let ids = (1...30).map { "nw-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let user = "warren-nowrite-\(UInt32.random(in: 0...UInt32.max))"
            try FaultTests.rabbitmqctl("add_user", user, "nowrite-pw")
            defer { try? FaultTests.rabbitmqctl("delete_user", user) }
            // May declare and read everything, write only to queues named test.*:
            // never to the default exchange (`amq.default`) the copies go through.
            try FaultTests.rabbitmqctl("set_permissions", "-p", "/", user, ".*", "^test\\.", ".*")
            let url = TestBroker.url.replacingOccurrences(of: "guest:guest@", with: "\(user):nowrite-pw@")
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/attempts; exit 75'"#,
                prefetch: 8, concurrency: 4, extra: "declare = false\nmax_attempts = 1000\nretry_delay = 10ms")
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(url)"))
            // Each copy is refused; each refusal reopens the channel for the next.
            let clock = ContinuousClock()
            let until = clock.now + .seconds(20)
            while clock.now < until && warren.log.components(separatedBy: "the broker refused the copy").count <= 60 {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(warren.log.components(separatedBy: "the broker refused the copy").count > 60, "\(warren.log)")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(!warren.log.contains("retrying later"), "a copy was reported published")
            for level in 1...8 { #expect(try await client.count("\(queue).retry.\(level)") == 0) }
            let left = try await client.drain(queue).map(\.id)
            #expect(Set(left) == Set(ids), "lost: \(Set(ids).subtracting(left).sorted().prefix(5))")
        }
    }

    @Test func aDeadLetterDoesNotExpireWithTheProducersExpiration() async throws {
        try await withTestQueue { client, queue in
            try await client.connection.publish(Array("short-lived".utf8), routingKey: queue, on: 1, properties: MessageProperties(
                deliveryMode: 2, expiration: "2000", messageId: "exp"))
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "sh -c 'exit 65'"))
            try await eventually("dead-lettered") { try await client.count(queue + ".dead") == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            try await Task.sleep(for: .seconds(3))
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["exp"], "the dead letter expired in the dead-letter queue")
            #expect(dead.first?.headers?["x-warren-original-expiration"]?.stringValue == "2000")
        }
    }

    /// The delay queue's copy carries the delay as its expiration; RabbitMQ
    /// removes it when it dead-letters the copy back, so it cannot expire
    /// (and vanish) in the work queue.
    @Test func aCopyComesBackFromItsDelayQueueWithoutTheDelayAsExpiration() async throws {
        try await withTestQueue { client, queue in
            let delay = queue + ".retry.1"
            try await client.connection.declareQueue(delay, on: 1, arguments: FieldTable([
                ("x-dead-letter-exchange", .string("")), ("x-dead-letter-routing-key", .string(queue))]))
            try await client.connection.publish(Array("d".utf8), routingKey: delay, on: 1,
                                                properties: MessageProperties(deliveryMode: 2, expiration: "100", messageId: "back"))
            try await eventually("back in the work queue") { try await client.count(queue) == 1 }
            let back = try await RetryTests().consumeOne(from: queue, id: "back")
            #expect(back.properties.expiration == nil)
        }
    }
}

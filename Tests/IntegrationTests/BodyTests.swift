import AMQP
import Foundation
import Glibc
import Testing

/// Bodies are kept in the buffer rabbitmq-c read them into, not copied:
/// whatever path a body takes from there (a handler's stdin, a retry copy,
/// a dead-letter copy, a publish of the delivery's own payload), it must
/// arrive byte for byte.
@Suite(.serialized) struct BodyTests {
    /// Every byte value, in an order that no shifted or truncated copy reproduces.
    static func pattern(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
    }

    @Test func oneMebibyteBodiesReachTheHandlersStdinIntactAndAreAcked() async throws {
        try await withTestQueue { client, queue in
            let bodies = (1...3).map { Self.pattern(count: 1 << 20, seed: UInt64($0)) }
            for (index, body) in bodies.enumerated() {
                try await client.connection.publish(body, routingKey: queue, on: 1,
                                                    properties: MessageProperties(deliveryMode: 2, messageId: "big-\(index)"))
            }
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'cat > {dir}/body-$WARREN_MESSAGE_ID && echo $WARREN_MESSAGE_ID >> {dir}/done'"#,
                prefetch: 4, concurrency: 2))
            try await eventually("every body handled", timeout: .seconds(30)) { warren.lines("done").count == bodies.count }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            for (index, body) in bodies.enumerated() {
                let received = try #require(FileManager.default.contents(atPath: warren.file("body-big-\(index)")))
                #expect(received.count == body.count, "body \(index): \(received.count) bytes")
                #expect(Array(received) == body, "body \(index) differs")
            }
            #expect(try await client.count(queue) == 0, "all acked: none came back to the queue")
        }
    }

    /// The retry copy (attempt 2's stdin) and the dead-letter copy are both
    /// published from the delivery's own buffer.
    @Test func retryAndDeadLetterCopiesOfABinaryBodyAreByteIdentical() async throws {
        try await withTestQueue { client, queue in
            let body = Self.pattern(count: 300_000, seed: 42)
            try await client.connection.publish(body, routingKey: queue, on: 1,
                                                properties: MessageProperties(deliveryMode: 2, messageId: "bin"))
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'cat > {dir}/attempt-$WARREN_ATTEMPT; if [ "$WARREN_ATTEMPT" = 1 ]; then exit 75; fi; exit 65'"#,
                extra: "max_attempts = 3\nretry_delay = 100ms"))
            try await eventually("dead-lettered", timeout: .seconds(30)) { try await client.count(queue + ".dead") == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            for attempt in 1...2 {
                let stdin = try #require(FileManager.default.contents(atPath: warren.file("attempt-\(attempt)")))
                #expect(Array(stdin) == body, "attempt \(attempt) got \(stdin.count) bytes, not the body")
            }
            let copy = try await RetryTests().consumeOne(from: queue + ".dead", id: "bin")
            #expect(copy.payload.count == body.count)
            #expect(copy.body == body, "the dead-letter copy differs from the original")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// The library level: a body over many frames is read in place, and
    /// publishing the delivery's payload sends it unchanged.
    @Test func aDeliveredPayloadSpanningManyFramesIsWholeAndRepublishesUnchanged() async throws {
        try await withTestQueue { client, queue in
            let body = Self.pattern(count: 700_000, seed: 7)
            try await client.connection.publish(body, routingKey: queue, on: 1, properties: MessageProperties(messageId: "first"))
            let first = try await RetryTests().consumeOne(from: queue, id: "first")
            #expect(first.payload.count == body.count)
            #expect(first.payload.withUnsafeBytes { Array($0) } == body)
            try await client.connection.publish(first.payload, routingKey: queue, on: 1,
                                                properties: MessageProperties(messageId: "again"))
            let again = try await RetryTests().consumeOne(from: queue, id: "again")
            #expect(again.body == body)
        }
    }
}

import AMQP
import Glibc
import Testing

/// Short-string properties that are not UTF-8 (binary correlation and
/// message ids are common) go out exactly as they came in: a reply's
/// `correlation_id` is its request's, byte for byte, and a copy of a
/// message with a long binary `message_id` still fits in its frame.
@Suite(.serialized) struct BinaryPropertyTests {
    static let allFF = [UInt8](repeating: 0xFF, count: 100)

    @Test func aBinaryCorrelationIdComesBackInTheReplyByteForByte() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try ReplyTests.execHandler(),
                                                                   extra: ReplyTests.extra(.exec)))
            let requester = try await RPCClient(route: .replyQueue)
            let ids: [[UInt8]] = [Self.allFF, [0xFF, 0x41], [0xFE, 0x41]]
            for (index, id) in ids.enumerated() {
                try await requester.connection.publish(Array("r\(index)".utf8), routingKey: queue, on: 1, properties: MessageProperties(
                    correlationId: ShortStringBytes.decode(id), replyTo: requester.replyTo, messageId: "r\(index)"))
            }
            try await eventually("three replies", timeout: .seconds(30)) { requester.replies.count >= ids.count }
            try await Task.sleep(for: .milliseconds(300))
            let byBody = Dictionary(requester.replies.map { ($0.body, $0.correlationId.map(ShortStringBytes.encode)) },
                                    uniquingKeysWith: { a, _ in a })
            #expect(requester.replies.count == 3)
            for (index, id) in ids.enumerated() {
                #expect(byBody["reply:r\(index)"] == .some(id), "request r\(index)'s correlation_id, byte for byte")
            }
            #expect(!warren.log.contains("connection lost"), "\(warren.log.suffix(2000))")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    @Test func aFailingHandlersMessageWithALongBinaryMessageIdIsRetriedThenDeadLettered() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh -c 'cat >/dev/null; echo run >> {dir}/runs; exit 1'",
                extra: "max_attempts = 2\nretry_delay = 100ms\n"))
            try await client.connection.publish(Array("x".utf8), routingKey: queue, on: 1, properties: MessageProperties(
                deliveryMode: 2, messageId: ShortStringBytes.decode(Self.allFF), type: ShortStringBytes.decode(Self.allFF)))
            try await eventually("dead-lettered", timeout: .seconds(30)) { try await client.count(queue + ".dead") == 1 }
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map { ShortStringBytes.encode($0.id) } == [Self.allFF], "the message id kept byte for byte")
            #expect(warren.lines("runs").count == 2, "two attempts, then the dead letter: no loop")
            #expect(!warren.log.contains("connection lost"), "\(warren.log.suffix(2000))")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
        }
    }
}

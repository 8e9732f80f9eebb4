import AMQP
import Foundation
import Glibc
import Testing
@testable import Warren

/// Direct reply-to addresses that RabbitMQ 3.10 cannot route make it close
/// the connection they were published on (541 INTERNAL_ERROR,
/// rabbitmq-server#6396). A malformed one is never published: its request
/// is dead-lettered at once; a well-formed but stale one costs only the
/// direct replies' own connection. Either way the copies, replies and
/// output on the shared publishing connection go on untouched.
@Suite(.serialized) struct DirectReplyToTests {
    /// The `reply_to` the broker gives a direct reply-to requester's
    /// publish, as a consumer of the request sees it.
    static func realAddress(client: TestClient, queue: String) async throws -> String {
        let scratch = queue + ".scratch"
        try await client.connection.declareQueue(scratch, on: 1, durable: false)
        let requester = try await RPCClient(route: .directReplyTo)
        try await requester.request(["probe"], to: scratch)
        let connection = try await TestBroker.connect()
        try await connection.openChannel(9, prefetch: 1)
        _ = try await connection.consume(queue: scratch, on: 9)
        var address = ""
        for await event in connection.events {
            guard case .delivery(let delivery) = event else { continue }
            address = delivery.properties.replyTo ?? ""
            connection.ack(delivery)
            break
        }
        await connection.close()
        await requester.close()
        _ = try? await client.connection.deleteQueue(scratch, on: 1)
        return address
    }

    @Test func theAddressesRabbitMQGivesRequestersAreWellFormed() async throws {
        try await withTestQueue { client, queue in
            let address = try await Self.realAddress(client: client, queue: queue)
            #expect(address.hasPrefix(DirectReplyTo.prefix), "\(address)")
            #expect(DirectReplyTo.problem(address) == nil, "\(address): \(DirectReplyTo.problem(address) ?? "")")
            let pid = address.dropFirst(DirectReplyTo.prefix.count).split(separator: ".").first.map(String.init) ?? ""
            let node = DirectReplyTo.base64Decoded(Array(pid.utf8)).flatMap(DirectReplyTo.pidNode)
            #expect(node?.hasPrefix("reply@") == true, "the broker's node as a requester's address names it: \(node ?? "-")")
        }
    }

    /// A well-formed address naming a node the broker does not know: it
    /// passes the check, and the broker closes the connection on it.
    static func staleAddress(like real: String) -> String {
        let key = real.split(separator: ".").last.map(String.init) ?? "AAAA"
        let node = Array("reply@999999999".utf8)
        let pid: [UInt8] = [0x83, 0x58, 0x77, UInt8(node.count)] + node + [UInt8](repeating: 0, count: 12)
        return DirectReplyTo.prefix + Data(pid).base64EncodedString() + "." + key
    }

    @Test func aBadOrStaleDirectReplyToAddressIsDeadLetteredAndCostsNoOtherRequestItsReply() async throws {
        try await withTestQueue { client, queue in
            let stale = Self.staleAddress(like: try await Self.realAddress(client: client, queue: queue))
            #expect(DirectReplyTo.problem(stale) == nil, "the crafted stale address passes the check")
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: try ReplyTests.execHandler(), extra: ReplyTests.extra(.exec, "max_attempts = 5\n")))
            let requester = try await RPCClient(route: .replyQueue)
            let ids = (1...50).map { "ok-\($0)" }
            try await requester.request(Array(ids[..<25]), to: queue)
            try await requester.request(["malformed"], to: queue, replyTo: "amq.rabbitmq.reply-to.AAAA.BBBB")
            // (The bare pseudo-queue name never comes: the broker rewrites it, or refuses the publish.)
            try await requester.request(["beside"], to: queue, replyTo: "amq.rabbitmq.reply-toX")
            try await requester.request(["stale"], to: queue, replyTo: stale)
            try await requester.request(Array(ids[25...]), to: queue)
            try await eventually("50 replies and 3 dead letters", timeout: .seconds(60)) {
                let dead = try await client.count(queue + ".dead")
                return requester.replies.count >= ids.count && dead >= 3
            }
            try await Task.sleep(for: .milliseconds(500))
            let answered = requester.replies.compactMap(\.correlationId)
            #expect(answered.sorted() == ids.sorted(), "each of the 50 answered exactly once")
            let dead = try await client.drain(queue + ".dead")
            #expect(Set(dead.map(\.id)) == ["malformed", "beside", "stale"])
            for letter in dead {
                let reason = letter.headers?["x-warren-reason"]?.stringValue ?? ""
                #expect(reason.contains("direct reply-to"), "\(letter.id): \(reason)")
                #expect(letter.headers?["x-warren-attempts"] == .int64(1), "dead-lettered at its first attempt: \(letter.id)")
            }
            #expect(try await client.count(queue) == 0)
            #expect(!warren.log.contains("publishing connection lost"), "the shared publishing connection stood")
            #expect(warren.log.contains("direct replies connection lost"), "the stale address did bring down its own connection")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(warren.lines("handled").filter { $0 == "stale" || $0 == "malformed" || $0 == "beside" }.count == 3,
                    "each bad request ran once")
            await requester.close()
        }
    }
}

import AMQP
import Foundation
import Glibc
import Testing

/// `replies = true`: requests with `reply_to` answered with the handler's
/// output, through the built binary and a real broker, in exec and
/// persistent mode, through a named reply queue and direct reply-to. Every
/// request is accounted for: answered with its own correlation id and
/// output, or (after a crash) still in its queue; never acked unanswered.
@Suite(.serialized) struct ReplyTests {
    enum Mode: String, Sendable, CustomStringConvertible {
        case exec, persistent
        var description: String { rawValue }
    }

    /// An exec handler: notes the body in `handled`, waits `delay`, writes
    /// `reply:<body>` on stdout; exits 65 for the body `bad`.
    static func execHandler(delay: String = "0") throws -> String {
        let directory = try WarrenBinary.makeDirectory()
        let script = """
            body=$(cat)
            echo "$body" >> "$1/handled"
            sleep \(delay)
            if [ "$body" = bad ]; then echo "cannot do bad" >&2; exit 65; fi
            printf 'reply:%s' "$body"
            """
        try script.write(toFile: directory + "/handler.sh", atomically: true, encoding: .utf8)
        return "sh \(directory)/handler.sh {dir}"
    }

    /// The same as a persistent worker: the reply in the answer's `reply`;
    /// `bad` is answered dead_letter with a reply that must never be sent.
    static func persistentWorker(delay: Double = 0) throws -> String {
        let directory = try WarrenBinary.makeDirectory()
        let script = """
            import json, os, sys, time
            d = sys.argv[1]
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                env = json.loads(line)
                body = env["body"]
                with open(os.path.join(d, "handled"), "a") as f:
                    f.write(body + "\\n")
                time.sleep(\(delay))
                if body == "bad":
                    answer = {"id": env["id"], "outcome": "dead_letter", "reason": "cannot do bad", "reply": "never"}
                else:
                    answer = {"id": env["id"], "outcome": "ack", "reply": "reply:" + body}
                print(json.dumps(answer), flush=True)
            """
        try script.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
        return "python3 \(directory)/worker.py {dir}"
    }

    static func command(_ mode: Mode, delay: Double = 0) throws -> String {
        switch mode {
        case .exec: try execHandler(delay: "\(delay)")
        case .persistent: try persistentWorker(delay: delay)
        }
    }

    static func extra(_ mode: Mode, _ more: String = "") -> String {
        "replies = true\nreply_content_type = application/x-test\nretry_delay = 100ms\n"
            + (mode == .persistent ? "mode = persistent\n" : "") + more
    }

    // MARK: RPC

    @Test(arguments: [Mode.exec, .persistent], [RPCClient.Route.replyQueue, .directReplyTo])
    func everyRequestGetsOneReplyWithItsCorrelationIdAndTheHandlersOutput(mode: Mode, route: RPCClient.Route) async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.command(mode),
                                                                   extra: Self.extra(mode)))
            let requester = try await RPCClient(route: route)
            let ids = (1...200).map { "rpc-\($0)" }
            let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            try await requester.request(ids, to: queue, headers: FieldTable([("traceparent", .string(trace))]))
            try await eventually("200 replies", timeout: .seconds(90)) { requester.replies.count >= ids.count }
            // Anything more (a duplicate) would come within this time.
            try await Task.sleep(for: .milliseconds(500))
            let replies = requester.replies
            #expect(replies.count == ids.count, "one reply per request, no more")
            #expect(Set(replies.compactMap(\.correlationId)) == Set(ids))
            for reply in replies {
                #expect(reply.body == "reply:\(reply.correlationId ?? "?")", "a reply carries its own request's output")
                #expect(reply.contentType == "application/x-test")
                #expect(reply.headers?["traceparent"]?.stringValue == trace)
            }
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
            // stdout that is a reply is not logged.
            #expect(!warren.log.contains("reply:rpc-"), "the reply was logged")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(Set(warren.lines("handled")) == Set(ids))
            await requester.close()
        }
    }

    @Test(arguments: [Mode.exec, .persistent])
    func aFailedHandlerSendsNoReplyAndARequestWithoutReplyToIsHandledAsBefore(mode: Mode) async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.command(mode),
                                                                   extra: Self.extra(mode)))
            let requester = try await RPCClient(route: .replyQueue)
            try await requester.request(["bad", "good"], to: queue)
            try await client.publish(ids: ["plain"], to: queue)
            try await eventually("all three handled") {
                try await client.count(queue + ".dead") == 1 && Set(warren.lines("handled")) == ["bad", "good", "plain"]
            }
            try await Task.sleep(for: .milliseconds(500))
            #expect(requester.replies.map(\.correlationId) == ["good"], "only the request that succeeded is answered")
            #expect(try await client.drain(queue + ".dead").map(\.id) == ["bad"])
            #expect(try await client.count(queue) == 0)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            if mode == .exec {
                // Without reply_to, stdout is logged as ever.
                #expect(warren.log.contains("reply:plain"), "\(warren.log)")
            }
            await requester.close()
        }
    }

    @Test func withRepliesAndAnOutputExchangeEveryRequestIsAnsweredAndPassedOn() async throws {
        try await withTestQueue { client, queue in
            let next = queue + ".next"
            try await client.connection.declareQueue(next, on: 1, durable: true)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: try Self.execHandler(),
                extra: Self.extra(.exec, "output_exchange = amq.default\noutput_routing_key = \(next)\n")))
            let requester = try await RPCClient(route: .directReplyTo)
            let ids = (1...50).map { "both-\($0)" }
            try await requester.request(ids, to: queue)
            try await eventually("50 replies and 50 passed on") {
                let passedOn = try await client.count(next)
                return requester.replies.count >= ids.count && passedOn >= ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let passed = try await PipelineTests.drainOutputs(next, client: client)
            _ = try? await client.connection.deleteQueue(next, on: 1)
            #expect(requester.replies.compactMap(\.correlationId).sorted() == ids.sorted())
            #expect(passed.compactMap(\.correlationId).sorted() == ids.sorted())
            #expect(passed.allSatisfy { $0.body == "reply:\($0.correlationId ?? "?")" && $0.deliveryMode == 2 })
            #expect(requester.replies.allSatisfy { $0.deliveryMode == nil }, "a reply is not persistent")
            #expect(try await client.count(queue) == 0)
            await requester.close()
        }
    }

    /// A persistent worker's answer line may be longer than 1 MiB when it
    /// carries a reply: here 3 MiB of escaped quotes for a 1.5 MiB reply.
    /// An `ack` answer without `reply` is answered with an empty body.
    @Test func aPersistentWorkersLongReplyArrivesWholeAndAnAnswerWithoutReplyGetsAnEmptyOne() async throws {
        let directory = try WarrenBinary.makeDirectory()
        try """
            import json, sys
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                env = json.loads(line)
                answer = {"id": env["id"], "outcome": "ack"}
                if env["body"] == "long":
                    answer["reply"] = '"' * (3 << 19)
                print(json.dumps(answer), flush=True)
            """.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/worker.py", extra: Self.extra(.persistent)))
            let requester = try await RPCClient(route: .replyQueue)
            try await requester.request(["long", "silent"], to: queue)
            try await eventually("two replies") { requester.replies.count == 2 }
            let byID = Dictionary(requester.replies.map { ($0.correlationId ?? "?", $0.body) }, uniquingKeysWith: { a, _ in a })
            #expect(byID["long"] == String(repeating: "\"", count: 3 << 19))
            #expect(byID["silent"] == "")
            #expect(!warren.log.contains("protocol error"))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    /// `json.dumps` escapes every character outside ASCII: an emoji takes
    /// 12 bytes on the answer line for 4 in the reply. A reply just under
    /// max_body written that way is published, and an invalid line of a
    /// worker whose answers carry replies is logged without its content.
    @Test func aPersistentWorkersReplyOfEmojiJustUnderMaxBodyIsPublishedAndInvalidLinesAreNotQuoted() async throws {
        let directory = try WarrenBinary.makeDirectory()
        try """
            import json, sys
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                env = json.loads(line)
                if env["body"] == "garbled":
                    print("secret-" + "x" * 300, flush=True)
                    continue
                print(json.dumps({"id": env["id"], "outcome": "ack", "reply": "\\U0001F600" * ((1 << 20) // 4 - 1)}), flush=True)
            """.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/worker.py",
                extra: Self.extra(.persistent, "max_body = 1MB\nmax_attempts = 1\n")))
            let requester = try await RPCClient(route: .replyQueue)
            try await requester.request(["emoji", "garbled"], to: queue)
            try await eventually("a reply and a dead letter", timeout: .seconds(30)) {
                let dead = try await client.count(queue + ".dead")
                return requester.replies.count >= 1 && dead >= 1
            }
            #expect(requester.replies.map(\.correlationId) == ["emoji"])
            #expect(requester.replies.first?.body == String(repeating: "\u{1F600}", count: (1 << 20) / 4 - 1))
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["garbled"])
            let reason = dead.first?.headers?["x-warren-reason"]?.stringValue ?? ""
            #expect(!reason.contains("secret"), "\(reason)")
            #expect(!warren.log.contains("secret"), "a line of a worker that replies is not quoted")
            #expect(!warren.log.contains("longer than"))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    /// A command that enlarges its stdout pipe (F_SETPIPE_SZ, 1 MiB) and
    /// exits with 900 KB in it: its reply is every byte of it.
    @Test func anExecReplyLeftInAnEnlargedPipeArrivesWhole() async throws {
        let directory = try WarrenBinary.makeDirectory()
        try """
            import fcntl, sys
            sys.stdin.read()
            fcntl.fcntl(1, 1031, 1 << 20)
            sys.stdout.write("x" * 900000)
            """.write(toFile: directory + "/big.py", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "python3 \(directory)/big.py", extra: Self.extra(.exec, "max_body = 1MB\n")))
            let requester = try await RPCClient(route: .replyQueue)
            try await requester.request((1...5).map { "big-\($0)" }, to: queue)
            try await eventually("five replies", timeout: .seconds(30)) { requester.replies.count >= 5 }
            #expect(requester.replies.map(\.body.utf8.count) == [900_000, 900_000, 900_000, 900_000, 900_000])
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    // MARK: Replies that cannot be delivered

    @Test(arguments: [Mode.exec, .persistent])
    func aReplyToAQueueThatDoesNotExistIsAFailedAttemptDeadLetteredWithTheReason(mode: Mode) async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.command(mode),
                                                                   extra: Self.extra(mode, "max_attempts = 3\n")))
            let requester = try await RPCClient(route: .replyQueue)
            let nowhere = "test.no-such-queue.\(UInt32.random(in: 0...UInt32.max))"
            try await requester.request(["lost"], to: queue, replyTo: nowhere)
            try await requester.request(["answered"], to: queue)
            try await eventually("dead-lettered after its attempts", timeout: .seconds(30)) {
                try await client.count(queue + ".dead") == 1
            }
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["lost"])
            let reason = dead.first?.headers?["x-warren-reason"]?.stringValue ?? ""
            #expect(reason.contains("failed 3 of 3 attempts"), "\(reason)")
            #expect(reason.contains("the reply to '\(nowhere)' could not be delivered"), "\(reason)")
            #expect(reason.contains("NO_ROUTE"), "\(reason)")
            // Each attempt ran the handler; none was acked without its reply.
            #expect(warren.lines("handled").filter { $0 == "lost" }.count == 3)
            #expect(requester.replies.map(\.correlationId) == ["answered"])
            #expect(try await client.count(queue) == 0)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    /// Direct reply-to is published without `mandatory` (RabbitMQ returns
    /// those as unroutable even when it delivers them): a requester that
    /// has gone loses its replies, its requests are acked, and replies to
    /// the next requester still arrive.
    @Test func aDirectReplyToWhoseRequesterHasGoneIsAckedAndLaterRepliesStillArrive() async throws {
        try await withTestQueue { client, queue in
            let gone = try await RPCClient(route: .directReplyTo)
            try await gone.request(["orphan-1", "orphan-2"], to: queue)
            await gone.close()
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.command(.exec),
                                                                   extra: Self.extra(.exec)))
            try await eventually("the orphans handled") { warren.lines("handled").count == 2 }
            let requester = try await RPCClient(route: .directReplyTo)
            try await requester.request(["later"], to: queue)
            try await eventually("the later reply") { requester.replies.count == 1 }
            #expect(requester.replies.first?.body == "reply:later")
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let handled = warren.lines("handled")
            #expect(handled.sorted() == ["later", "orphan-1", "orphan-2"], "each handled once: acked, not retried")
            await requester.close()
        }
    }

    enum Undeliverable: String, Sendable, CustomStringConvertible {
        case reply, output
        var description: String { rawValue }
    }

    /// The ordering itself: with its reply (or output message) undeliverable
    /// and its dead-letter queue deleted under warren, so no copy can be
    /// confirmed either, a request goes round and round and stays in its
    /// queue. An ack sent before the reply's confirm would lose it.
    @Test(arguments: [Undeliverable.reply, .output])
    func aRequestWhoseOutputAndDeadLetterCannotBeDeliveredIsNeverAcked(what: Undeliverable) async throws {
        try await withTestQueue { client, queue in
            let extra = what == .reply ? "replies = true\n" : "output_exchange = test.no-such-exchange\n"
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: try Self.execHandler(), extra: extra + "max_attempts = 1\nretry_delay = 100ms\n"))
            try await eventually("consuming") { warren.log.contains("running") }
            _ = try await client.connection.deleteQueue(queue + ".dead", on: 1)
            let requester = try await RPCClient(route: .replyQueue)
            try await requester.request(["stuck"], to: queue, replyTo: "test.no-such-queue.\(UInt32.random(in: 0...UInt32.max))")
            try await eventually("handled again and again") { warren.lines("handled").count >= 3 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(try await client.drain(queue).map(\.id) == ["stuck"], "the request was acked without its \(what)")
            #expect(requester.replies.isEmpty)
            await requester.close()
        }
    }

    @Test func stdoutOverMaxBodyIsAFailedAttemptNeverAReplyCutShort() async throws {
        let directory = try WarrenBinary.makeDirectory()
        try "cat > /dev/null; head -c 3000 /dev/zero | tr '\\0' x".write(toFile: directory + "/big.sh", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh \(directory)/big.sh",
                extra: "replies = true\nmax_body = 2KB\nmax_attempts = 1\n"))
            let requester = try await RPCClient(route: .directReplyTo)
            try await requester.request(["big"], to: queue)
            try await eventually("dead-lettered") { try await client.count(queue + ".dead") == 1 }
            let reason = try await client.drain(queue + ".dead").first?.headers?["x-warren-reason"]?.stringValue ?? ""
            #expect(reason.contains("more than max_body (2048 bytes) on stdout"), "\(reason)")
            #expect(requester.replies.isEmpty)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            await requester.close()
        }
    }

    // MARK: Crash safety

    /// kill -9 mid-way: a request is answered (maybe twice: its reply was
    /// confirmed, its ack not yet sent) or still in its queue; none is
    /// gone without its reply.
    @Test(arguments: [Mode.exec, .persistent])
    func killingWarrenMidRPCLeavesEveryRequestAnsweredOrQueued(mode: Mode) async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: try Self.command(mode, delay: 0.05),
                                                                   extra: Self.extra(mode)))
            let requester = try await RPCClient(route: .replyQueue)
            let ids = (1...200).map { "k-\($0)" }
            try await requester.request(ids, to: queue)
            try await eventually("replies flowing", timeout: .seconds(60)) { requester.replies.count >= 50 }
            warren.signal(SIGKILL)
            _ = await warren.waitForExit()
            // The broker takes the unacked requests back once the connection is gone.
            try await eventually("nothing unacknowledged left") {
                let answered = Set(self.answered(requester))
                return try await client.count(queue) + answered.count >= ids.count
            }
            try await Task.sleep(for: .milliseconds(500))
            let answered = Set(answered(requester))
            let queued = Set(try await client.drain(queue).map(\.id))
            #expect(answered.count < ids.count, "the kill came before the last request")
            #expect(answered.union(queued) == Set(ids), "acked without a reply: \(Set(ids).subtracting(answered.union(queued)).sorted())")
            for reply in requester.replies { #expect(reply.body == "reply:\(reply.correlationId ?? "?")") }
            #expect(try await client.count(queue + ".dead") == 0)
            await requester.close()
        }
    }

    func answered(_ requester: RPCClient) -> [String] { requester.replies.compactMap(\.correlationId) }
}

import AMQP
import Foundation
import Logging
import Synchronization
import Testing
import Tracing
import Warren

/// A span per delivery, against the real broker: its parent is the
/// message's `traceparent`, a handler sees the span's own context, and
/// every copy warren publishes for the message (retry, dead letter, reply)
/// carries it on.
@Suite(.serialized) struct TracingTests {
    static let publisherTrace = "0af7651916cd43dd8448eb211c80319c"
    static let publisherSpan = "b7ad6b7169203331"
    static var publisherTraceparent: String { "00-\(publisherTrace)-\(publisherSpan)-01" }

    func settings(_ consumer: ConsumerSettings) throws -> WarrenSettings {
        WarrenSettings(broker: BrokerSettings(endpoints: [try TestBroker.options]),
                       shutdown: ShutdownSettings(gracePeriod: .seconds(10), killAfter: .seconds(1)),
                       consumers: [consumer])
    }

    func publish(_ id: String, to queue: String, client: TestClient, headers: FieldTable? = nil,
                 replyTo: String? = nil) async throws {
        try await client.connection.publish(Array(id.utf8), routingKey: queue, on: 1,
                                            properties: MessageProperties(headers: headers, deliveryMode: 2,
                                                                          replyTo: replyTo, messageId: id))
    }

    /// A directory holding `worker.py`, a persistent worker that answers
    /// each envelope with `answer` (a Python expression) and, when
    /// `keeping`, appends each envelope to the file named by its argument.
    static func worker(keeping: Bool, answering answer: String) throws -> String {
        let directory = try WarrenBinary.makeDirectory()
        let keep = keeping ? "\n    with open(sys.argv[1], \"a\") as seen:\n        seen.write(line)" : ""
        try """
            import json, sys
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                envelope = json.loads(line)\(keep)
                print(json.dumps(\(answer)), flush=True)
            """.write(toFile: directory + "/worker.py", atomically: true, encoding: .utf8)
        return directory
    }

    func span(_ tracer: RecordingTracer, _ id: String, attempt: Int = 1) -> RecordedSpan? {
        tracer.ended.first { $0.attribute("messaging.message.id") == id && $0.attribute("warren.attempt") == "\(attempt)" }
    }

    @Test func aCommandHandlerSeesItsDeliverysSpanAsTRACEPARENTAndTheSpanIsAChildOfThePublisher() async throws {
        try await withTestQueue { client, queue in
            let directory = try WarrenBinary.makeDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try await publish("traced", to: queue, client: client, headers: FieldTable([
                ("traceparent", .string(Self.publisherTraceparent)), ("tracestate", .string("vendor=1")),
            ]))
            try await publish("untraced", to: queue, client: client)
            // A publisher picks these: a megabyte-sized parent, one that is
            // no string, and a malformed one with a tracestate of its own.
            try await publish("huge", to: queue, client: client,
                              headers: FieldTable([("traceparent", .string(String(repeating: "0", count: 1 << 20)))]))
            try await publish("number", to: queue, client: client, headers: FieldTable([("traceparent", .int64(7))]))
            // Header names are matched in any case, as for TRACEPARENT.
            try await publish("cased", to: queue, client: client,
                              headers: FieldTable([("TraceParent", .string(Self.publisherTraceparent))]))
            try await publish("malformed", to: queue, client: client, headers: FieldTable([
                ("traceparent", .string("00-zz-\u{1}-01")), ("tracestate", .string("stale=1")),
            ]))
            let tracer = RecordingTracer()
            let command = #"printf '%s %s %s\n' "$WARREN_MESSAGE_ID" "$TRACEPARENT" "${WARREN_HEADER_TRACESTATE-none}" >> "# + directory + "/seen"
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, concurrency: 2, command: ["sh", "-c", command])),
                logger: Logger(label: "test"), tracer: tracer)
            async let exit = runtime.runUntilStopped()
            try await eventually("six spans ended") { tracer.ended.count == 6 }
            runtime.stop()
            #expect(await exit == 0)

            let seen = try String(contentsOfFile: directory + "/seen", encoding: .utf8)
                .split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(seen.count == 6, "\(seen)")
            func handlerSaw(_ id: String) -> [String] { seen.first { $0.first == id } ?? [] }

            let traced = try #require(span(tracer, "traced"))
            #expect(traced.traceID == Self.publisherTrace)
            #expect(traced.parentSpanID == Self.publisherSpan)
            #expect(traced.spanID != Self.publisherSpan)
            #expect(traced.kind == .consumer)
            #expect(traced.operationName == "process \(queue)")
            #expect(traced.attribute("messaging.system") == "rabbitmq")
            #expect(traced.attribute("messaging.destination.name") == queue)
            #expect(traced.attribute("warren.consumer") == "t")
            #expect(traced.attribute("warren.outcome") == "ack")
            #expect(traced.status?.code == .ok)
            #expect(traced.events == ["handler started", "handler finished"])
            #expect(traced.endCount == 1)
            #expect(handlerSaw("traced") == ["traced", traced.traceparent, "vendor=1"])
            let cased = try #require(span(tracer, "cased"))
            #expect(cased.parentSpanID == Self.publisherSpan)
            #expect(handlerSaw("cased") == ["cased", cased.traceparent, "none"])

            for id in ["untraced", "huge", "number", "malformed"] {
                let root = try #require(span(tracer, id), "\(id)")
                #expect(root.parentSpanID == nil, "\(id)")
                #expect(root.traceID != Self.publisherTrace, "\(id)")
                #expect(root.endCount == 1, "\(id)")
                // The handler's parent is this span, never what the publisher wrote;
                // the stale tracestate went with the parent it belonged to.
                #expect(handlerSaw(id) == [id, root.traceparent, "none"], "\(id)")
            }
            // A megabyte header never reached the tracer's parser.
            #expect(tracer.longestExtracted <= 8192)
            #expect(Set(tracer.all.map(\.spanID)).count == 6)
        }
    }

    @Test func retryAndDeadLetterCopiesCarryTheSpanOfTheAttemptThatMadeThem() async throws {
        try await withTestQueue { client, queue in
            try await publish("failing", to: queue, client: client,
                              headers: FieldTable([("traceparent", .string(Self.publisherTraceparent))]))
            let tracer = RecordingTracer()
            // What an in-process handler finds: its span's context as the current one, and on the message.
            let current = Mutex<[W3CContext?]>([])
            let onMessage = Mutex<[W3CContext?]>([])
            let handler = ClosureHandler { message in
                current.withLock { $0.append(ServiceContext.current?.w3c) }
                onMessage.withLock { $0.append(message.traceContext?.w3c) }
                return .retry(Failure(reason: "downstream down"))
            }
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, maxAttempts: 2,
                                                        retryDelay: .milliseconds(50), retryDelayMax: .milliseconds(50))),
                handlers: ["t": handler], logger: Logger(label: "test"), tracer: tracer)
            async let exit = runtime.runUntilStopped()
            try await eventually("dead-lettered after two attempts") {
                try await client.count(queue + ".dead") == 1 && tracer.ended.count == 2
            }
            runtime.stop()
            #expect(await exit == 0)

            let first = try #require(span(tracer, "failing", attempt: 1))
            let second = try #require(span(tracer, "failing", attempt: 2))
            #expect(first.parentSpanID == Self.publisherSpan && first.traceID == Self.publisherTrace)
            // The retry copy carried the first attempt's span: the second is its child, in the same trace.
            #expect(second.parentSpanID == first.spanID && second.traceID == Self.publisherTrace)
            #expect(first.attribute("warren.outcome") == "retry" && first.status?.code == .error)
            #expect(first.attribute("warren.reason") == "downstream down")
            #expect(second.attribute("warren.outcome") == "dead_letter" && second.status?.code == .error)
            #expect(current.withLock { $0 } == [first.context.w3c, second.context.w3c])
            #expect(onMessage.withLock { $0 } == [first.context.w3c, second.context.w3c])
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["failing"])
            #expect(dead.first?.headers?["traceparent"]?.stringValue == second.traceparent)
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aReplyCarriesTheSpanOfItsRequest() async throws {
        try await withTestQueue { client, queue in
            let replies = queue + ".replies"
            try await client.connection.declareQueue(replies, on: 1)
            try await publish("request", to: queue, client: client,
                              headers: FieldTable([("traceparent", .string(Self.publisherTraceparent))]), replyTo: replies)
            let tracer = RecordingTracer()
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, replies: true)),
                handlers: ["t": ClosureHandler { _ in .ack }], logger: Logger(label: "test"), tracer: tracer)
            async let exit = runtime.runUntilStopped()
            try await eventually("the reply is in its queue") { try await client.count(replies) == 1 }
            runtime.stop()
            #expect(await exit == 0)
            let request = try #require(span(tracer, "request"))
            #expect(request.parentSpanID == Self.publisherSpan)
            let reply = try await client.drain(replies)
            #expect(reply.first?.headers?["traceparent"]?.stringValue == request.traceparent)
            _ = try? await client.connection.deleteQueue(replies, on: 1)
        }
    }

    @Test func aPersistentWorkersEnvelopeCarriesItsDeliverysSpan() async throws {
        try await withTestQueue { client, queue in
            let directory = try Self.worker(keeping: true, answering: #"{"id": envelope["id"], "outcome": "ack"}"#)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            try await publish("enveloped", to: queue, client: client,
                              headers: FieldTable([("traceparent", .string(Self.publisherTraceparent))]))
            let tracer = RecordingTracer()
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, concurrency: 1,
                                                        command: ["python3", directory + "/worker.py", directory + "/seen"],
                                                        mode: .persistent)),
                logger: Logger(label: "test"), tracer: tracer)
            async let exit = runtime.runUntilStopped()
            try await eventually("the span ended") { tracer.ended.count == 1 }
            runtime.stop()
            #expect(await exit == 0)
            let delivered = try #require(span(tracer, "enveloped"))
            #expect(delivered.parentSpanID == Self.publisherSpan)
            #expect(delivered.events == ["handler started", "handler finished"])
            let envelope = try String(contentsOfFile: directory + "/seen", encoding: .utf8)
            #expect(envelope.contains(delivered.traceparent), "\(envelope)")
            #expect(!envelope.contains(Self.publisherSpan), "\(envelope)")
        }
    }

    /// Whatever way a message goes, a span started is a span ended: here a
    /// persistent consumer whose circuit breaker turns messages away
    /// (unstarted, no span) while others fail, and a stop mid-work.
    @Test func everySpanStartedEndsWhenTheBreakerTurnsMessagesAway() async throws {
        try await withTestQueue { client, queue in
            let directory = try Self.worker(keeping: false, answering: #"{"id": envelope["id"], "outcome": "retry", "reason": "down"}"#)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let tracer = RecordingTracer()
            let logs = CapturedLogs()
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, prefetch: 40, concurrency: 4,
                                                        command: ["python3", directory + "/worker.py"],
                                                        retryDelay: .seconds(30), retryDelayMax: .seconds(30),
                                                        mode: .persistent, pauseAfterFailures: 4)),
                logger: logs.logger, tracer: tracer)
            async let exit = runtime.runUntilStopped()
            // Every worker ready first, so that four fail at once and the slots take more after the breaker opened.
            try await eventually("consuming") { logs.lines.contains { $0.contains("consuming") } }
            try await Task.sleep(for: .seconds(2))
            // At once, not one confirm after another: the buffer fills while the workers fail.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in (1...40).map({ "m\($0)" }) {
                    group.addTask { try await client.publish(ids: [id], to: queue) }
                }
                try await group.waitForAll()
            }
            try await eventually("the breaker opened") { logs.lines.contains { $0.contains("the circuit breaker opened") } }
            try await Task.sleep(for: .milliseconds(500))
            runtime.stop()
            #expect(await exit == 0)
            #expect(!tracer.all.isEmpty)
            #expect(tracer.all.count == tracer.ended.count, "spans never ended: \(tracer.all.count - tracer.ended.count)")
            #expect(tracer.all.allSatisfy { $0.endCount == 1 })
            // The failures the breaker spared went back through the delay queue, each an error.
            #expect(tracer.ended.allSatisfy { $0.attribute("warren.outcome") == "retry" && $0.status?.code == .error })
            let total = try await client.count(queue) + client.count(queue + ".retry.1")
            #expect(total == 40, "every message is in the queue or its delay queue")
        }
    }

    @Test func withoutATracerNoHeaderIsRewritten() async throws {
        try await withTestQueue { client, queue in
            try await publish("plain", to: queue, client: client,
                              headers: FieldTable([("traceparent", .string(Self.publisherTraceparent))]))
            let runtime = WarrenRuntime(
                settings: try settings(ConsumerSettings(name: "t", queue: queue, maxAttempts: 1)),
                handlers: ["t": ClosureHandler { message in
                    message.traceContext == nil ? .deadLetter(Failure(reason: "untraced")) : .ack
                }], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("dead-lettered") { try await client.count(queue + ".dead") == 1 }
            runtime.stop()
            #expect(await exit == 0)
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.first?.headers?["traceparent"]?.stringValue == Self.publisherTraceparent)
        }
    }
}

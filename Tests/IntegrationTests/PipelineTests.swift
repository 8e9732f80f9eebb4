import AMQP
import Foundation
import Glibc
import Testing

/// `output_exchange`: queue A -> warren -> the exchange -> queue B, with the
/// built binary and a real broker. Message by message: each is in A or in
/// B, never lost, never in both after a clean stop.
@Suite(.serialized) struct PipelineTests {
    /// A message as found in queue B.
    struct Output: Sendable {
        var correlationId: String?
        var deliveryMode: UInt8?
        var contentType: String?
        var traceparent: String?
        var body: String
    }

    /// Takes every message out of `queue`, with what a next stage would read.
    static func drainOutputs(_ queue: String, client: TestClient) async throws -> [Output] {
        let expected = try await client.count(queue)
        guard expected > 0 else { return [] }
        let connection = try await TestBroker.connect()
        try await connection.openChannel(9, prefetch: 500)
        let tag = try await connection.consume(queue: queue, on: 9)
        var found: [Output] = []
        for await event in connection.events {
            guard case .delivery(let delivery) = event else { continue }
            let p = delivery.properties
            found.append(Output(correlationId: p.correlationId, deliveryMode: p.deliveryMode, contentType: p.contentType,
                                traceparent: p.headers?["traceparent"]?.stringValue,
                                body: String(decoding: delivery.body, as: UTF8.self)))
            connection.ack(delivery)
            if found.count == expected { break }
        }
        try await connection.cancel(consumerTag: tag, on: 9)
        await connection.close()
        return found
    }

    /// A handler that turns `x` into `out:x` after a little work.
    static func stage() throws -> String {
        let directory = try WarrenBinary.makeDirectory()
        try "body=$(cat); sleep 0.02; echo \"$body\" >> \"$1/handled\"; printf 'out:%s' \"$body\""
            .write(toFile: directory + "/stage.sh", atomically: true, encoding: .utf8)
        return "sh \(directory)/stage.sh {dir}"
    }

    @Test func aStopMidPipelineLeavesEveryMessageInExactlyOneOfTheTwoQueues() async throws {
        try await withTestQueue { client, queueA in
            let queueB = queueA + ".next"
            try await client.connection.declareQueue(queueB, on: 1, durable: true)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queueA, command: try Self.stage(), prefetch: 8, concurrency: 4,
                extra: "output_exchange = amq.default\noutput_routing_key = \(queueB)\nreply_content_type = application/x-stage\n"))
            let ids = (1...300).map { "p-\($0)" }
            let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            for id in ids {
                try await client.connection.publish(Array(id.utf8), routingKey: queueA, on: 1, properties: MessageProperties(
                    headers: FieldTable([("traceparent", .string(trace))]), deliveryMode: 2, correlationId: id, messageId: id))
            }
            try await eventually("the pipeline flowing", timeout: .seconds(60)) { try await client.count(queueB) >= 50 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let inA = try await client.drain(queueA).map(\.id)
            let inB = try await Self.drainOutputs(queueB, client: client)
            _ = try? await client.connection.deleteQueue(queueB, on: 1)
            let passed = inB.compactMap(\.correlationId)
            #expect(inA.count < ids.count && !passed.isEmpty, "the stop came mid-way")
            #expect(passed.count == Set(passed).count, "a message went to B twice")
            #expect(Set(passed).isDisjoint(with: inA), "in B and still in A: \(Set(passed).intersection(inA).sorted())")
            #expect(Set(passed).union(inA) == Set(ids), "lost: \(Set(ids).subtracting(Set(passed).union(inA)).sorted())")
            #expect(Set(warren.lines("handled")).isSuperset(of: passed))
            for output in inB {
                #expect(output.body == "out:\(output.correlationId ?? "?")")
                #expect(output.deliveryMode == 2, "the next stage's work is persistent")
                #expect(output.contentType == "application/x-stage")
                #expect(output.traceparent == trace, "the trace goes on")
            }
        }
    }

    @Test func anOutputExchangeThatDoesNotExistIsAFailedAttemptNeverAnAck() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: try Self.stage(),
                extra: "output_exchange = test.no-such-exchange\nmax_attempts = 2\nretry_delay = 100ms\n"))
            try await client.publish(ids: ["x"], to: queue)
            try await eventually("dead-lettered after its attempts") { try await client.count(queue + ".dead") == 1 }
            let reason = try await client.drain(queue + ".dead").first?.headers?["x-warren-reason"]?.stringValue ?? ""
            #expect(reason.contains("failed 2 of 2 attempts"), "\(reason)")
            #expect(reason.contains("the output to exchange 'test.no-such-exchange'"), "\(reason)")
            #expect(warren.lines("handled") == ["x", "x"])
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
        }
    }
}

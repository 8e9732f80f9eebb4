import AMQP
import Testing
@testable import Warren

/// What a requester and a pipeline's next stage get: the properties of a
/// reply and of an output message, which replies are published mandatory,
/// and how long a persistent worker's answer line may be.
@Suite struct HandlerOutputTests {
    static let request = MessageProperties(
        contentType: "application/json", headers: FieldTable([("traceparent", .string("00-a-b-01")), ("tenant", .string("acme")),
                                                              ("tracestate", .string("k=v"))]),
        deliveryMode: 2, priority: 5, correlationId: "c-7", replyTo: "callers", expiration: "60000", messageId: "m-7",
        userId: "shop", appId: "shop")

    @Test func aReplyCarriesTheCorrelationIdTheContentTypeAndTheTraceAndNothingElse() {
        let reply = HandlerOutput.replyProperties(for: Self.request, contentType: "text/plain")
        #expect(reply == MessageProperties(contentType: "text/plain",
                                           headers: FieldTable([("traceparent", .string("00-a-b-01")), ("tracestate", .string("k=v"))]),
                                           correlationId: "c-7"))
        #expect(HandlerOutput.replyProperties(for: MessageProperties(), contentType: "text/plain")
            == MessageProperties(contentType: "text/plain"))
    }

    @Test func anOutputMessageIsPersistentWithTheSameCarriedProperties() {
        let output = HandlerOutput.outputProperties(for: Self.request, contentType: "application/x-next")
        #expect(output.deliveryMode == 2)
        #expect(output.correlationId == "c-7")
        #expect(output.contentType == "application/x-next")
        #expect(output.headers?["traceparent"]?.stringValue == "00-a-b-01")
        #expect(output.headers?["tenant"] == nil, "only the trace is carried")
        #expect(output.replyTo == nil && output.expiration == nil && output.userId == nil)
    }

    @Test func onlyDirectReplyToIsPublishedWithoutMandatory() {
        #expect(HandlerOutput.isRoutable(replyTo: "callers"))
        #expect(HandlerOutput.isRoutable(replyTo: "amq.gen-JzTY20BRgKO-HjmUJj0wLg"))
        #expect(!HandlerOutput.isRoutable(replyTo: "amq.rabbitmq.reply-to.g1h2AA9yZXBseUAxMDE2.j0WtcVrMJ7GivIjF8HAt6A=="))
    }

    @Test func aWorkerPublishingOutputMayAnswerWithLinesSixTimesMaxBodyCappedAt128MiB() {
        let plain = ConsumerSettings(name: "a", queue: "a")
        #expect(ProcessSupervisor.workerLineLimit(for: plain) == 1 << 20)
        #expect(ProcessSupervisor.workerLineLimit(for: ConsumerSettings(name: "a", queue: "a", replies: true))
            == 6 * (16 << 20) + 64 * 1024, "json.dumps writes an emoji in 12 bytes, a control character in 6")
        #expect(ProcessSupervisor.workerLineLimit(for: ConsumerSettings(name: "a", queue: "a", maxBody: 512 << 20, replies: true))
            == 6 * (128 << 20) + 64 * 1024)
        #expect(ProcessSupervisor.workerLineLimit(for: ConsumerSettings(name: "a", queue: "a", maxBody: 1000, outputExchange: "x"))
            == 1 << 20, "never less than without output")
    }
}

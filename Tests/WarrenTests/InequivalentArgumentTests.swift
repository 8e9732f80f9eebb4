import AMQP
import Testing
@testable import Warren

/// RabbitMQ's 406 texts taken apart, and the queue arguments warren asks for.
@Suite struct InequivalentArgumentTests {
    @Test func theBrokersRefusalsAreReadWithBothValues() {
        let cases: [(String, InequivalentArgument?)] = [
            ("declaring queue 'q': PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q' in vhost '/': received the value '10' of type 'long' but current is the value '5' of type 'signedint'",
             InequivalentArgument(argument: "x-max-priority", kind: "queue", name: "q", declared: "10", existing: "5")),
            ("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'a b' in vhost 'v': received the value '' of type 'longstr' but current is none",
             InequivalentArgument(argument: "x-dead-letter-exchange", kind: "queue", name: "a b", declared: "''", existing: "none")),
            ("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '9' of type 'long'",
             InequivalentArgument(argument: "x-max-length", kind: "queue", name: "q", declared: "none", existing: "9")),
            ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'shop' in vhost '/': received 'topic' but current is 'direct'",
             InequivalentArgument(argument: "type", kind: "exchange", name: "shop", declared: "topic", existing: "direct")),
            ("PRECONDITION_FAILED - unknown delivery tag 3", nil),
        ]
        for (text, expected) in cases {
            #expect(InequivalentArgument(replyText: text) == expected, "\(text)")
        }
    }

    @Test func aQuorumQueueAlwaysGetsADeadLetterRouteAndOtherArgumentsOnlyWhenAsked() {
        let plain = Topology(ConsumerSettings(name: "c", queue: "q"))
        #expect(plain.queueArguments.isEmpty && plain.consumeArguments.isEmpty)
        let quorum = Topology(ConsumerSettings(name: "c", queue: "q", queueType: .quorum))
        #expect(quorum.queueArguments == FieldTable([("x-queue-type", .string("quorum")), ("x-dead-letter-exchange", .string("")),
                                                     ("x-dead-letter-routing-key", .string("q.dead"))]))
        let every = Topology(ConsumerSettings(name: "c", queue: "q", deadLetterQueue: "dlq", consumerPriority: 7,
                                              singleActiveConsumer: true, maxPriority: 9, maxLength: 100, overflow: .rejectPublishDLX))
        #expect(every.queueArguments == FieldTable([("x-dead-letter-exchange", .string("")), ("x-dead-letter-routing-key", .string("dlq")),
                                                    ("x-single-active-consumer", .bool(true)), ("x-max-priority", .int64(9)),
                                                    ("x-max-length", .int64(100)), ("x-overflow", .string("reject-publish-dlx"))]))
        #expect(every.consumeArguments == FieldTable([("x-priority", .int32(7))]))
    }
}

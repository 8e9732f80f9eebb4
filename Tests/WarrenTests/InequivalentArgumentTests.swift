import AMQP
import Testing
@testable import Warren

/// RabbitMQ's 406 texts taken apart, and the queue arguments warren asks for.
@Suite struct InequivalentArgumentTests {
    @Test func theBrokersRefusalsAreReadWithBothValues() {
        let cases: [(String, InequivalentArgument?)] = [
            ("declaring queue 'q': PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q' in vhost '/': received the value '10' of type 'long' but current is the value '5' of type 'signedint'",
             InequivalentArgument(argument: "x-max-priority", kind: "queue", name: "q", declared: "10", existing: "5", existingType: "signedint")),
            ("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'a b' in vhost 'v': received the value '' of type 'longstr' but current is none",
             InequivalentArgument(argument: "x-dead-letter-exchange", kind: "queue", name: "a b", declared: "''", existing: "none")),
            ("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '9' of type 'long'",
             InequivalentArgument(argument: "x-max-length", kind: "queue", name: "q", declared: "none", existing: "9", existingType: "long")),
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

    /// The broker refuses a declare whose arguments are written differently
    /// even when they mean the same; those are declared as the broker has
    /// them, every other difference stands.
    @Test func onlyADefaultWrittenOutOrAQueuesOwnDeadLetterRouteIsDeclaredAsTheBrokerHasIt() {
        func refused(_ argument: String, _ declared: String, _ existing: String, _ type: String?) -> InequivalentArgument {
            InequivalentArgument(argument: argument, kind: "queue", name: "q", declared: declared, existing: existing, existingType: type)
        }
        let cases: [(InequivalentArgument, Bool, EquivalentArgument?)] = [
            (refused("x-single-active-consumer", "none", "false", "bool"), true, .adopt(.bool(false))),
            (refused("x-single-active-consumer", "none", "false", "bool"), false, .adopt(.bool(false))),
            (refused("x-single-active-consumer", "none", "true", "bool"), true, nil),
            (refused("x-overflow", "none", "drop-head", "longstr"), true, .adopt(.string("drop-head"))),
            (refused("x-overflow", "none", "reject-publish", "longstr"), true, nil),
            (refused("x-overflow", "reject-publish", "drop-head", "longstr"), true, nil),
            (refused("x-queue-type", "none", "classic", "longstr"), true, .adopt(.string("classic"))),
            (refused("x-single-active-consumer", "none", "false", nil), true, .adopt(.bool(false))),
            (refused("x-queue-type", "quorum", "classic", "longstr"), true, nil),
            (refused("x-max-priority", "none", "5", "signedint"), true, nil),
            // The consumed queue's own dead-letter route stands in for warren's.
            (refused("x-dead-letter-exchange", "''", "their-dlx", "longstr"), true, .adopt(.string("their-dlx"))),
            (refused("x-dead-letter-exchange", "''", "''", "longstr"), true, .adopt(.string(""))),
            // The default exchange with each message's own key is no route.
            (refused("x-dead-letter-routing-key", "q.dead", "none", nil), true, nil),
            (refused("x-dead-letter-routing-key", "q.dead", "their.key", "longstr"), true, .adopt(.string("their.key"))),
            // No route at all is not a route of its own.
            (refused("x-dead-letter-exchange", "''", "none", nil), true, nil),
            // A delay queue's route back to the queue is how a retry returns.
            (refused("x-dead-letter-exchange", "''", "their-dlx", "longstr"), false, nil),
            (refused("x-dead-letter-routing-key", "q", "none", nil), false, nil),
            // A type warren cannot send back as the broker has it keeps the refusal.
            (refused("x-single-active-consumer", "none", "false", "longstr"), true, nil),
        ]
        for (refusal, consumed, expected) in cases {
            #expect(EquivalentArgument.settling(refusal, consumedQueue: consumed)?.0 == expected, "\(refusal) consumed: \(consumed)")
        }
        // As RabbitMQ 3.10 words it for a quorum queue (no types) with a route of its own.
        let own = InequivalentArgument(replyText: "declaring queue 'q.b': PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q.b' in vhost '/': received '' but current is 'shop.dlx'")
        #expect(own.flatMap { EquivalentArgument.settling($0, consumedQueue: true)?.0 } == .adopt(.string("shop.dlx")), "\(String(describing: own))")
        let exchange = InequivalentArgument(argument: "x-queue-type", kind: "exchange", name: "e", declared: "none",
                                            existing: "classic", existingType: "longstr")
        #expect(EquivalentArgument.settling(exchange, consumedQueue: true) == nil)
    }

    /// A reload removes only the bindings warren made for the old config
    /// that no consumer of the new one asks for.
    @Test func aReloadRetiresTheBindingsOnlyTheOldConfigMade() {
        let old = [
            ConsumerSettings(name: "a", queue: "qa", exchange: "shop", routingKeys: ["k1", "k2", "k3"]),
            ConsumerSettings(name: "b", queue: "qb", exchange: "other", routingKeys: ["x"]),
            ConsumerSettings(name: "c", queue: "qc", declare: false, exchange: "shop", routingKeys: ["c"]),
            ConsumerSettings(name: "d", queue: "qd", exchange: "gone"),
        ]
        let new = [
            ConsumerSettings(name: "a", queue: "qa", exchange: "shop", routingKeys: ["k1"]),
            // Still wanted by another consumer, even one that does not declare.
            ConsumerSettings(name: "a2", queue: "qa", declare: false, exchange: "shop", routingKeys: ["k2"]),
            ConsumerSettings(name: "b", queue: "qb", exchange: "moved", routingKeys: ["x"]),
        ]
        let retired = Topology.retired(from: old, keeping: new).map(\.description)
        #expect(retired == [
            "queue 'qa' to exchange 'shop' with key 'k3'",
            "queue 'qb' to exchange 'other' with key 'x'",
            "queue 'qd' to exchange 'gone' with key 'qd'",
        ])
        #expect(Topology.retired(from: new, keeping: new).isEmpty)
    }
}

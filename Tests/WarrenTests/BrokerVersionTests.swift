import AMQP
import Testing
@testable import Warren

/// Which RabbitMQ versions get an unlimited delivery limit on a quorum
/// dead-letter queue, and which count every read toward it: the decision
/// alone (the machine has RabbitMQ 3.10 only; 4.x is not run here).
@Suite struct BrokerVersionTests {
    @Test func theVersionIsReadFromTheServerProperty() {
        #expect(BrokerVersion("3.10.8") == BrokerVersion(major: 3, minor: 10))
        #expect(BrokerVersion("4.1.2") == BrokerVersion(major: 4, minor: 1))
        #expect(BrokerVersion("4.0.0-rc.1") == BrokerVersion(major: 4, minor: 0))
        #expect(BrokerVersion("4.3") == BrokerVersion(major: 4, minor: 3))
        for bad in [nil, "", "4", "x.1", "4.", "4.x", "LavinMQ"] as [String?] {
            #expect(BrokerVersion(bad) == nil, "\(String(describing: bad))")
        }
        #expect(BrokerVersion(major: 3, minor: 13) < BrokerVersion(major: 4, minor: 0))
    }

    @Test func onlyRabbitMQ4GetsNoDeliveryLimitAndOnlyOnAQuorumQueue() {
        func arguments(_ quorum: Bool, _ version: String?) -> [String] {
            BrokerVersion.deadLetterQueueArguments(quorum: quorum, broker: BrokerVersion(version)).map { "\($0.key)=\($0.value.map { "\($0)" } ?? "nil")" }
        }
        #expect(arguments(true, "3.10.8") == [], "RabbitMQ 3 is never sent a negative limit")
        #expect(arguments(true, "3.13.7") == [])
        #expect(arguments(true, nil) == [], "an unknown broker is sent nothing new")
        #expect(arguments(true, "4.0.1") == ["x-delivery-limit=-1"])
        #expect(arguments(true, "4.2.0") == ["x-delivery-limit=-1"])
        #expect(arguments(true, "4.3.0") == ["x-delivery-limit=-1"])
        #expect(arguments(false, "4.1.0") == [], "a classic queue has no delivery limit")
    }

    @Test func readsCountTowardTheLimitOnRabbitMQ4_0To4_2Only() {
        #expect(!BrokerVersion(major: 3, minor: 10).countsEveryReturn)
        #expect(BrokerVersion(major: 4, minor: 0).countsEveryReturn)
        #expect(BrokerVersion(major: 4, minor: 2).countsEveryReturn)
        #expect(!BrokerVersion(major: 4, minor: 3).countsEveryReturn)
    }

    @Test func theTopologyDeclaresTheDeadLetterQueueByVersion() {
        let quorum = ConsumerSettings(name: "orders", queue: "orders", queueType: .quorum)
        #expect(Topology(quorum).deadLetterArguments(broker: BrokerVersion("3.10.8")).entries.map(\.key) == ["x-queue-type"])
        let on4 = Topology(quorum).deadLetterArguments(broker: BrokerVersion("4.1.0"))
        #expect(on4.entries.map(\.key) == ["x-queue-type", "x-delivery-limit"])
        #expect(on4["x-delivery-limit"] == .int64(-1))
        let classic = ConsumerSettings(name: "orders", queue: "orders")
        #expect(Topology(classic).deadLetterArguments(broker: BrokerVersion("4.1.0")).isEmpty)
    }

    /// RabbitMQ 4 refuses -1 on a quorum dead-letter queue declared without
    /// it: warren uses it as it is, and the warning gives the policy.
    @Test func anExistingDeadLetterQueueWithTheDefaultLimitIsUsedAsItIs() throws {
        let refusal = try #require(InequivalentArgument(replyText:
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'orders.dead' in vhost '/': received the value '-1' of type 'long' but current is none"))
        let settled = try #require(EquivalentArgument.settling(refusal, consumedQueue: false, deadLetterQueue: true))
        #expect(settled.0 == .omit)
        #expect(settled.why.contains(#"rabbitmqctl set_policy warren-dlq-no-delivery-limit '^orders\.dead$' '{"delivery-limit":-1}' --apply-to quorum_queues"#), "\(settled.why)")
        #expect(EquivalentArgument.settling(refusal, consumedQueue: false) == nil, "only the dead-letter queue")
        #expect(EquivalentArgument.settling(refusal, consumedQueue: true) == nil)
    }
}

import Testing
import Warren
@testable import WarrenConfig

/// The topology keys: read with their types, and the combinations the
/// broker would refuse, or that would be silently ignored, refused with
/// their line.
@Suite struct TopologyConfigTests {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /usr/bin/worker\n"

    func problems(_ text: String) -> [String] {
        do {
            _ = try ConfigLoader.parse(text, file: "w.ini")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    func consumer(_ extra: String) throws -> ConsumerSettings {
        try #require(try ConfigLoader.parse(Self.minimal + extra, file: "w.ini").warren.consumers.first)
    }

    @Test func withoutTheKeysNothingIsBoundAndNoArgumentIsAsked() throws {
        let c = try consumer("")
        #expect(c.exchange == nil && c.exchangeType == .direct && c.routingKeys == ["orders"])
        #expect(c.consumerPriority == nil && !c.exclusive && !c.singleActiveConsumer)
        #expect(c.maxPriority == nil && c.maxLength == nil && c.overflow == nil && c.deliveryLimit == nil)
    }

    @Test func everyKeyIsReadWithItsType() throws {
        let c = try consumer("""
            exchange = shop
            exchange_type = topic
            routing_keys = order.created   order.*.eu
            consumer_priority = -5
            exclusive = yes
            single_active_consumer = true
            max_priority = 10
            max_length = 1000
            overflow = reject-publish-dlx

            """)
        #expect(c.exchange == "shop" && c.exchangeType == .topic && c.routingKeys == ["order.created", "order.*.eu"])
        #expect(c.consumerPriority == -5 && c.exclusive && c.singleActiveConsumer)
        #expect(c.maxPriority == 10 && c.maxLength == 1000 && c.overflow == .rejectPublishDLX)
        let quorum = try consumer("queue_type = quorum\ndelivery_limit = 3\nmax_length = 5\noverflow = drop-head\n")
        #expect(quorum.deliveryLimit == 3 && quorum.overflow == .dropHead)
    }

    @Test func nonsenseIsRefusedWithItsLine() {
        let cases: [(String, String)] = [
            ("exchange_type = topic\n", "w.ini:4: exchange_type needs exchange"),
            ("routing_keys = a b\n", "w.ini:4: routing_keys needs exchange"),
            ("exchange = shop\nexchange_type = fan\n", "w.ini:5: 'fan' is not allowed here (allowed: direct, fanout, topic, headers)"),
            ("exchange = shop\nrouting_keys = a\ndeclare = false\n", "w.ini:5: routing_keys is used when warren declares"),
            ("max_priority = 0\n", "w.ini:4: 0 is out of range (allowed: 1 to 255)"),
            ("max_priority = 5\nqueue_type = quorum\n", "w.ini:4: max_priority needs queue_type = classic"),
            ("delivery_limit = 3\n", "w.ini:4: delivery_limit needs queue_type = quorum"),
            ("overflow = drop-head\n", "w.ini:4: overflow needs max_length"),
            ("max_length = 9\noverflow = drop-tail\n", "w.ini:5: 'drop-tail' is not allowed here"),
            ("queue_type = quorum\nmax_length = 9\noverflow = reject-publish-dlx\n", "w.ini:6: quorum queues take overflow = drop-head or reject-publish"),
            ("single_active_consumer = true\ndeclare = false\n", "w.ini:4: single_active_consumer is a queue argument"),
            ("consumer_priority = high\n", "w.ini:4: 'high' is not a whole number"),
            ("exclusive = maybe\n", "w.ini:4: 'maybe' is not a boolean"),
        ]
        for (extra, expected) in cases {
            let found = problems(Self.minimal + extra)
            #expect(found.count == 1 && found[0].hasPrefix(expected), "\(extra): \(found)")
        }
    }
}

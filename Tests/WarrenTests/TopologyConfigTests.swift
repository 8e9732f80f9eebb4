import Testing
import Warren
@testable import WarrenConfig

/// The topology keys: read with their types, and the combinations the
/// broker would refuse, or that would be silently ignored, refused with
/// their line.
@Suite struct TopologyConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /usr/bin/worker\n"


    func consumer(_ extra: String) throws -> ConsumerSettings {
        try #require(try ConfigLoader.parse(Self.minimal + extra, file: "w.ini").warren.consumers.first)
    }

    @Test func withoutTheKeysNothingIsBoundAndNoArgumentIsAsked() throws {
        let c = try consumer("")
        #expect(c.exchange == nil && c.exchangeType == .direct && c.routingKeys == ["orders"])
        #expect(c.consumerPriority == nil && !c.exclusive && !c.singleActiveConsumer)
        #expect(c.maxPriority == nil && c.maxLength == nil && c.overflow == nil && c.deliveryLimit == nil)
        #expect(try ConfigLoader.parse(Self.minimal, file: "w.ini").warren.broker.consumerTimeout == .seconds(1800))
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
        let off = try ConfigLoader.parse("[broker]\nconsumer_timeout = 0\n" + Self.minimal + "timeout = 0\n", file: "w.ini")
        #expect(off.warren.broker.consumerTimeout == nil)
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

    /// `ceil(prefetch / concurrency) × (timeout + kill_after + settling)`
    /// against `consumer_timeout`, refused at the line most likely to change.
    @Test func settingsThatCouldOutlastTheBrokersAckTimeoutAreRefused() {
        let tooLong = problems(Self.minimal + "prefetch = 100\nconcurrency = 1\n")
        #expect(tooLong.count == 1 && tooLong[0].hasPrefix("w.ini:4: [consumer.orders]: a message could stay unacked for 100 × "),
                "\(tooLong)")
        #expect(tooLong.first?.contains("lower prefetch to at most 5, or raise concurrency, or raise consumer_timeout") == true,
                "\(tooLong)")
        let forever = problems(Self.minimal + "timeout = 0\n")
        #expect(forever.count == 1 && forever[0].hasPrefix("w.ini:4: [consumer.orders]: timeout = 0 lets a handler run forever"),
                "\(forever)")
        let fromEnvironment = (try? ConfigLoader.parse(Self.minimal + "timeout = 0\n", file: "w.ini",
                                                       environment: ["WARREN_BROKER_CONSUMER_TIMEOUT": "0"])) != nil
        #expect(fromEnvironment, "consumer_timeout = 0 from the environment turns the check off")
        #expect(problems("[broker]\nconsumer_timeout = 1h\n" + Self.minimal + "prefetch = 40\nconcurrency = 4\ntimeout = 5m\n").isEmpty)
    }

    /// `--check-config` prints what warren will use; read back, it is the same config.
    @Test func theResolvedConfigPrintsEveryTopologyKeyAndReadsBackTheSame() throws {
        let text = "[broker]\nconsumer_timeout = 45m\n" + Self.minimal + """
            queue_type = quorum
            exchange = shop
            exchange_type = headers
            routing_keys = a b.c
            consumer_priority = 3
            exclusive = true
            single_active_consumer = true
            max_length = 10
            overflow = reject-publish
            delivery_limit = 4

            """
        let config = try ConfigLoader.parse(text, file: "w.ini")
        let printed = ConfigDescription.render(config)
        for line in ["consumer_timeout = 2700s", "exchange = shop", "exchange_type = headers", "routing_keys = a b.c",
                     "consumer_priority = 3", "exclusive = true", "single_active_consumer = true", "max_length = 10",
                     "overflow = reject-publish", "delivery_limit = 4"] {
            #expect(printed.contains(line + "\n"), "\(line) missing from:\n\(printed)")
        }
        // The URL's password is printed masked; the rest reads back as it was.
        let read = try ConfigLoader.parse(printed, file: "printed.ini").warren
        #expect(read.consumers == config.warren.consumers)
        #expect(read.broker.consumerTimeout == config.warren.broker.consumerTimeout)
    }
}

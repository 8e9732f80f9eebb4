import AMQP
import Testing
@testable import Warren

/// The `WARREN_*` variables of one message: every property, every header,
/// and a bounded size whatever the headers hold.
@Suite struct MessageEnvironmentTests {
    static func variables(_ properties: MessageProperties) -> (variables: [String], skippedHeaders: [String]) {
        HandlerEnvironment.forMessage(EnvelopeTests.message(properties: properties))
    }

    static func headers(_ entries: [(key: String, value: FieldValue)]) -> (variables: [String], skippedHeaders: [String]) {
        variables(MessageProperties(headers: FieldTable(entries)))
    }

    /// The per-message variables only (warren's own environment, inherited, is left out).
    static func own(_ variables: [String]) -> [String] {
        variables.filter { $0.hasPrefix("WARREN_") || $0.hasPrefix("TRACEPARENT=") }
    }

    @Test func everyPropertyHasItsVariable() {
        let env = Self.variables(MessageProperties(
            contentType: "application/json", contentEncoding: "gzip", deliveryMode: 2, priority: 9, correlationId: "c-7",
            replyTo: "amq.rabbitmq.reply-to.g2d", expiration: "60000", messageId: "m-7", timestamp: 1_700_000_000,
            type: "order.created", userId: "guest", appId: "shop")).variables
        #expect(Self.own(env) == [
            "WARREN_QUEUE=orders", "WARREN_CONSUMER=orders-consumer", "WARREN_EXCHANGE=shop", "WARREN_ROUTING_KEY=order.created",
            "WARREN_MESSAGE_ID=m-7", "WARREN_CORRELATION_ID=c-7", "WARREN_REPLY_TO=amq.rabbitmq.reply-to.g2d",
            "WARREN_CONTENT_TYPE=application/json", "WARREN_CONTENT_ENCODING=gzip", "WARREN_DELIVERY_MODE=2",
            "WARREN_PRIORITY=9", "WARREN_EXPIRATION=60000", "WARREN_TIMESTAMP=1700000000", "WARREN_TYPE=order.created",
            "WARREN_USER_ID=guest", "WARREN_APP_ID=shop", "WARREN_REDELIVERED=0", "WARREN_ATTEMPT=1",
        ])
    }

    @Test func anAbsentPropertyIsAnEmptyVariable() {
        let env = Self.variables(MessageProperties()).variables
        for name in ["MESSAGE_ID", "CORRELATION_ID", "REPLY_TO", "CONTENT_TYPE", "CONTENT_ENCODING", "DELIVERY_MODE",
                     "PRIORITY", "EXPIRATION", "TIMESTAMP", "TYPE", "USER_ID", "APP_ID"] {
            #expect(env.contains("WARREN_\(name)="), "\(name)")
        }
    }

    @Test func everyHeaderIsAVariableNonStringsAsCompactJSON() {
        let env = Self.headers([
            ("tenant", .string("acme")), ("flag", .bool(true)), ("n", .int64(-5)), ("ratio", .double(0.5)),
            ("price", .decimal(scale: 2, value: 1999)), ("raw", .bytes([1, 2, 3])), ("at", .timestamp(1_700_000_000)),
            ("nothing", .void), ("list", .array([.string("a"), .int8(1)])),
            ("x-death", .array([.table(FieldTable([("count", .int64(1)), ("queue", .string("orders"))]))])),
        ]).variables
        #expect(Array(Self.own(env).suffix(10)) == [
            "WARREN_HEADER_TENANT=acme", "WARREN_HEADER_FLAG=true", "WARREN_HEADER_N=-5", "WARREN_HEADER_RATIO=0.5",
            "WARREN_HEADER_PRICE=19.99", #"WARREN_HEADER_RAW="AQID""#, "WARREN_HEADER_AT=1700000000",
            "WARREN_HEADER_NOTHING=null", #"WARREN_HEADER_LIST=["a",1]"#,
            #"WARREN_HEADER_X_DEATH=[{"count":1,"queue":"orders"}]"#,
        ])
    }

    @Test func nulIsDroppedAndOtherControlCharactersStay() {
        let env = Self.headers([("note", .string("a\u{0}b\nc\u{1}d")), ("bad", .string([0x61, 0xFF, 0x62]))]).variables
        #expect(env.contains("WARREN_HEADER_NOTE=ab\nc\u{1}d"))
        #expect(env.contains("WARREN_HEADER_BAD=a\u{FFFD}b"))
        #expect(!env.contains { $0.utf8.contains(0) })
    }

    @Test func headersSharingAVariableNameKeepTheLast() {
        let env = Self.headers([("x-a", .string("first")), ("tenant", .string("acme")), ("X_A", .string("last"))]).variables
        #expect(Array(Self.own(env).suffix(2)) == ["WARREN_HEADER_TENANT=acme", "WARREN_HEADER_X_A=last"])
    }

    @Test func aMegabyteHeaderIsLeftOutAndNamed() {
        let big = String(repeating: "x", count: 1 << 20)
        let (env, skipped) = Self.headers([("big", .string(big)), ("small", .string("kept")), ("traceparent", .string(big))])
        #expect(skipped == ["big", "traceparent"])
        #expect(env.contains("WARREN_HEADER_SMALL=kept"))
        #expect(!env.contains { $0.hasPrefix("WARREN_HEADER_BIG=") || $0.hasPrefix("TRACEPARENT=") })
    }

    @Test func aHeaderJustUnderTheLimitFitsAndOneByteMoreDoesNot() {
        let room = HandlerEnvironment.headerVariableLimit - "WARREN_HEADER_H=".utf8.count
        #expect(Self.headers([("h", .string(String(repeating: "v", count: room)))]).skippedHeaders.isEmpty)
        #expect(Self.headers([("h", .string(String(repeating: "v", count: room + 1)))]).skippedHeaders == ["h"])
    }

    @Test func tenThousandHeadersFillTheBudgetAndTheRestAreNamed() {
        let entries = (0..<10_000).map { (key: "h\($0)", value: FieldValue.string("value-\($0)")) }
        let (env, skipped) = Self.headers(entries)
        let passed = env.filter { $0.hasPrefix("WARREN_HEADER_") }
        #expect(passed.count + skipped.count == 10_000)
        #expect(!skipped.isEmpty && !passed.isEmpty)
        // The first ones in the table go first; what is left out is the tail, in order.
        #expect(passed.first == "WARREN_HEADER_H0=value-0")
        #expect(skipped.first == "h\(passed.count)" && skipped.last == "h9999")
        let cost = passed.reduce(0) { $0 + $1.utf8.count + 1 + 8 }
        #expect(cost <= HandlerEnvironment.headerBudget)
        #expect(ExecHandler.names(skipped).hasSuffix("and \(skipped.count - 10) more"))
    }

    @Test func anOriginHeaderCannotInflateTheExchangeVariable() {
        let env = Self.headers([("x-warren-exchange", .string(String(repeating: "e", count: 1 << 20))),
                                ("x-warren-routing-key", .string("k"))]).variables
        #expect(env.contains("WARREN_EXCHANGE=shop"))
        #expect(env.contains("WARREN_ROUTING_KEY=order.created"))
    }
}

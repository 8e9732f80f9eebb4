import AMQP
import Testing
@testable import Warren

/// The envelope's JSON, byte for byte, and that it stays valid JSON on one
/// line whatever the message holds.
@Suite struct EnvelopeTests {
    static func message(body: [UInt8] = Array("{}".utf8), properties: MessageProperties = MessageProperties(),
                        exchange: String = "shop", routingKey: String = "order.created", redelivered: Bool = false,
                        attempt: Int = 1) -> Message {
        let delivery = Delivery(channel: 1, deliveryTag: 7, consumerTag: "t", exchange: exchange, routingKey: routingKey,
                                redelivered: redelivered, properties: properties, body: body)
        return Message(delivery: delivery, consumer: "orders-consumer", queue: "orders", attempt: attempt)
    }

    static func line(_ message: Message, id: String = "42") -> String {
        String(decoding: Envelope(message: message, id: id).jsonLine(), as: UTF8.self)
    }

    static func json(_ value: FieldValue) -> String { JSONWriter.text(of: value) }

    /// Parses with a strict reader of its own: proof that what warren writes is JSON.
    static func parse(_ bytes: [UInt8]) throws -> StrictJSON { try StrictJSON.parse(bytes) }

    @Test func aMessageWithoutPropertiesHasEveryKeyAndNullProperties() {
        #expect(Self.line(Self.message()) == """
            {"id":"42","queue":"orders","consumer":"orders-consumer","exchange":"shop","routing_key":"order.created",\
            "redelivered":false,"attempt":1,"body":"{}","properties":{"message_id":null,"correlation_id":null,\
            "reply_to":null,"content_type":null,"content_encoding":null,"delivery_mode":null,"priority":null,\
            "expiration":null,"timestamp":null,"type":null,"user_id":null,"app_id":null,"headers":null}}

            """)
    }

    @Test func everyPropertyIsWrittenUnderItsName() {
        let properties = MessageProperties(
            contentType: "application/json", contentEncoding: "gzip", headers: FieldTable([("tenant", .string("acme"))]),
            deliveryMode: 2, priority: 9, correlationId: "c-7", replyTo: "amq.rabbitmq.reply-to.g2d", expiration: "60000",
            messageId: "m-7", timestamp: 1_700_000_000, type: "order.created", userId: "guest", appId: "shop")
        #expect(Self.line(Self.message(body: Array("{\"order\":7}".utf8), properties: properties, redelivered: true, attempt: 3)) == """
            {"id":"42","queue":"orders","consumer":"orders-consumer","exchange":"shop","routing_key":"order.created",\
            "redelivered":true,"attempt":3,"body":"{\\"order\\":7}","properties":{"message_id":"m-7","correlation_id":"c-7",\
            "reply_to":"amq.rabbitmq.reply-to.g2d","content_type":"application/json","content_encoding":"gzip",\
            "delivery_mode":2,"priority":9,"expiration":"60000","timestamp":1700000000,"type":"order.created",\
            "user_id":"guest","app_id":"shop","headers":{"tenant":"acme"}}}

            """)
    }

    @Test func aRetriedMessageShowsWhereItWasFirstPublished() throws {
        let headers = FieldTable([("x-warren-exchange", .string("shop")), ("x-warren-routing-key", .string("order.created"))])
        let retried = Self.message(properties: MessageProperties(headers: headers), exchange: "", routingKey: "orders.retry.1")
        let object = try Self.parse(Envelope(message: retried, id: "1").jsonLine())
        #expect(object["exchange"] == .string("shop"))
        #expect(object["routing_key"] == .string("order.created"))
    }

    @Test func anOriginHeaderLongerThanAnyExchangeNameIsIgnored() throws {
        let headers = FieldTable([("x-warren-exchange", .string(String(repeating: "e", count: 256))),
                                  ("x-warren-routing-key", .string("k"))])
        let message = Self.message(properties: MessageProperties(headers: headers), exchange: "real", routingKey: "rk")
        let object = try Self.parse(Envelope(message: message, id: "1").jsonLine())
        #expect(object["exchange"] == .string("real"))
        #expect(object["routing_key"] == .string("rk"))
    }

    @Test func aBodyThatIsNotUTF8TravelsAsBase64() {
        let line = Self.line(Self.message(body: [0xFF, 0x00, 0x41, 0xC3]))
        #expect(line.contains(#","body_base64":"/wBBww==","properties":"#))
        #expect(!line.contains(#""body":"#))
    }

    @Test(arguments: [
        ([UInt8](), ""), ([0x61], "YQ=="), ([0x61, 0x62], "YWI="), ([0x61, 0x62, 0x63], "YWJj"),
        ([0xFB, 0xFF, 0xBF], "+/+/"), (Array("hello world".utf8), "aGVsbG8gd29ybGQ="),
    ])
    func base64IsStandardWithPadding(input: [UInt8], expected: String) {
        #expect(Self.json(.bytes(input)) == "\"\(expected)\"")
    }

    @Test func anEmptyBodyIsAnEmptyString() {
        #expect(Self.line(Self.message(body: [])).contains(#""attempt":1,"body":"","properties""#))
    }

    @Test func everyControlCharacterIsEscaped() throws {
        let short: [UInt8: String] = [0x08: #"\b"#, 0x09: #"\t"#, 0x0A: #"\n"#, 0x0C: #"\f"#, 0x0D: #"\r"#]
        for byte in UInt8(0)...0x1F {
            let expected = short[byte] ?? "\\u00" + String(byte, radix: 16).leftPadded(to: 2)
            #expect(Self.json(.string([0x61, byte, 0x62])) == "\"a\(expected)b\"", "byte \(byte)")
            let parsed = try Self.parse(Array(Self.json(.string([byte])).utf8))
            #expect(parsed == .string(String(UnicodeScalar(byte))), "byte \(byte) reads back")
        }
        #expect(Self.json(.string([0x7F])) == #""\u007f""#)
    }

    @Test func lineSeparatorsOutsideASCIIAreEscapedToo() {
        // NEL, other C1 controls, LINE SEPARATOR, PARAGRAPH SEPARATOR: Python's splitlines() splits on them.
        #expect(Self.json(.string("a\u{85}b\u{9F}c\u{2028}d\u{2029}e")) == #""a\u0085b\u009fc\u2028d\u2029e""#)
        // Their neighbours are written as they are.
        #expect(Self.json(.string("\u{A0}\u{2027}\u{202A}é€😀")) == "\"\u{A0}\u{2027}\u{202A}é€😀\"")
    }

    /// Plain text is scanned eight bytes at a time: a byte that needs
    /// escaping, or starts a multi-byte character, is found at every offset.
    @Test func aSpecialByteIsFoundAtEveryOffsetOfALongPlainRun() {
        let cases: [([UInt8], String)] = [
            ([0x00], #"\u0000"#), ([0x1F], #"\u001f"#), ([0x0A], #"\n"#), ([0x22], #"\""#), ([0x5C], #"\\"#),
            ([0x7F], #"\u007f"#), ([0xC2, 0x85], #"\u0085"#), ([0xC3, 0xA9], "é"), ([0x20], " "), ([0x7E], "~"),
            ([0x21], "!"), ([0x5B], "["), ([0x5D], "]"),
        ]
        for (special, written) in cases {
            for offset in 0..<24 {
                var input = [UInt8](repeating: UInt8(ascii: "a"), count: 24)
                input.replaceSubrange(offset..<offset + 1, with: special)
                let expected = String(repeating: "a", count: offset) + written + String(repeating: "a", count: 23 - offset)
                #expect(Self.json(.string(input)) == "\"\(expected)\"", "\(special) at \(offset)")
            }
        }
        // A bad byte anywhere in a long body sends the whole body to base64.
        for offset in 0..<24 {
            var body = [UInt8](repeating: UInt8(ascii: "a"), count: 24)
            body[offset] = 0xFF
            #expect(Self.line(Self.message(body: body)).contains("\"body_base64\":"), "0xFF at \(offset)")
        }
    }

    @Test func quotesAndBackslashesAreEscaped() {
        #expect(Self.json(.string(#"say "hi" \ bye"#)) == #""say \"hi\" \\ bye""#)
    }

    @Test func aHeaderStringThatIsNotUTF8HasItsBadBytesReplaced() {
        #expect(Self.json(.string([0x61, 0xFF, 0x62])) == "\"a\u{FFFD}b\"")
        // Overlong, surrogate, above U+10FFFF, truncated: each refused as UTF-8.
        #expect(Self.json(.string([0xC0, 0xAF])) == "\"\u{FFFD}\u{FFFD}\"")
        #expect(Self.json(.string([0xED, 0xA0, 0x80])) == "\"\u{FFFD}\u{FFFD}\u{FFFD}\"")
        #expect(Self.json(.string([0xF4, 0x90, 0x80, 0x80])).unicodeScalars.allSatisfy { $0 == "\u{FFFD}" || $0 == "\"" })
        #expect(Self.json(.string([0x61, 0xE2, 0x82])) == "\"a\u{FFFD}\"")
    }

    @Test func bodiesAreCheckedAsStrictUTF8() {
        for bad: [UInt8] in [[0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
                             [0xF5, 0x80, 0x80, 0x80], [0xE2, 0x82], [0x80], [0xF0, 0x9F, 0x98]] {
            #expect(Self.line(Self.message(body: bad)).contains("\"body_base64\":"), "\(bad)")
        }
        for good in ["é", "€", "😀", "\u{10FFFF}", "\u{D7FF}", "\u{E000}"] {
            #expect(Self.line(Self.message(body: Array(good.utf8))).contains("\"body\":\"\(good)\""), "\(good)")
        }
    }

    @Test func everyFieldKindKeepsItsType() {
        #expect(Self.json(.bool(true)) == "true")
        #expect(Self.json(.bool(false)) == "false")
        #expect(Self.json(.int8(-128)) == "-128")
        #expect(Self.json(.uint8(255)) == "255")
        #expect(Self.json(.int16(-32768)) == "-32768")
        #expect(Self.json(.uint16(65535)) == "65535")
        #expect(Self.json(.int32(Int32.min)) == "-2147483648")
        #expect(Self.json(.uint32(UInt32.max)) == "4294967295")
        #expect(Self.json(.int64(Int64.min)) == "-9223372036854775808")
        #expect(Self.json(.uint64(UInt64.max)) == "18446744073709551615")
        #expect(Self.json(.float(1.5)) == "1.5")
        #expect(Self.json(.float(0.1)) == "0.1")
        #expect(Self.json(.double(-2.25)) == "-2.25")
        #expect(Self.json(.double(1e300)) == "1e+300")
        #expect(Self.json(.double(.leastNonzeroMagnitude)) == "5e-324")
        #expect(Self.json(.decimal(scale: 2, value: 12345)) == "123.45")
        #expect(Self.json(.decimal(scale: 0, value: 7)) == "7")
        #expect(Self.json(.decimal(scale: 3, value: 5)) == "0.005")
        #expect(Self.json(.decimal(scale: 2, value: 0)) == "0.00")
        #expect(Self.json(.string("acme")) == #""acme""#)
        #expect(Self.json(.bytes([0, 1, 2])) == #""AAEC""#)
        #expect(Self.json(.timestamp(1_700_000_000)) == "1700000000")
        #expect(Self.json(.void) == "null")
        #expect(Self.json(.array([])) == "[]")
        #expect(Self.json(.table(FieldTable())) == "{}")
    }

    @Test func numbersJSONCannotHoldBecomeStrings() {
        #expect(Self.json(.double(.nan)) == #""NaN""#)
        #expect(Self.json(.double(.infinity)) == #""Infinity""#)
        #expect(Self.json(.double(-.infinity)) == #""-Infinity""#)
        #expect(Self.json(.float(.nan)) == #""NaN""#)
        #expect(Self.json(.float(-.infinity)) == #""-Infinity""#)
    }

    @Test func nestedTablesAndArraysKeepTheirShapeAndOrder() {
        let death = FieldValue.array([.table(FieldTable([
            ("count", .int64(2)), ("reason", .string("expired")), ("queue", .string("orders")),
            ("time", .timestamp(1_700_000_000)), ("routing-keys", .array([.string("a"), .string("b")])),
            ("nested", .table(FieldTable([("deep", .array([.array([.void, .bool(false)])]))]))),
        ]))])
        #expect(Self.json(death) == #"""
            [{"count":2,"reason":"expired","queue":"orders","time":1700000000,"routing-keys":["a","b"],"nested":{"deep":[[null,false]]}}]
            """#)
    }

    @Test func headerKeysAreEscapedLikeAnyString() {
        #expect(Self.json(.table(FieldTable([("a\"\n\u{0}", .int8(1))]))) == #"{"a\"\n\u0000":1}"#)
    }

    /// Random bytes in every place a string can be: the line is always one
    /// line of JSON that a strict reader accepts, and valid text reads back unchanged.
    @Test func randomBytesAlwaysMakeOneLineOfValidJSON() throws {
        var generator = SplitMix(seed: 13)
        for round in 0..<2000 {
            let length = Int(generator.next() % 40)
            // Bytes mostly from the tricky ranges: controls, quotes, backslashes, UTF-8 lead and continuation bytes.
            let alphabet: [UInt8] = [0x00, 0x0A, 0x0D, 0x1F, 0x22, 0x5C, 0x41, 0x7F, 0x80, 0x85, 0xA8, 0xBF, 0xC2, 0xE2,
                                     0xED, 0xF0, 0xF4, 0xFF, 0x9F, 0xA0]
            let bytes = (0..<length).map { _ in
                generator.next() % 3 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : alphabet[Int(generator.next() % UInt64(alphabet.count))]
            }
            let message = Self.message(body: bytes, properties: MessageProperties(headers: FieldTable([
                // A header name as the AMQP layer decodes it: bytes that are not UTF-8 escaped (ShortStringBytes).
                (ShortStringBytes.decode(bytes), .string(bytes)), ("list", .array([.string(bytes), .bytes(bytes)])),
            ])))
            let line = Envelope(message: message, id: "\(round)").jsonLine()
            #expect(line.last == 0x0A)
            #expect(!line.dropLast().contains(0x0A) && !line.contains(0x0D), "round \(round)")
            let object = try Self.parse(line)
            let headers = object["properties"]?["headers"]
            let lossy = String(decoding: bytes, as: UTF8.self)
            // Shown with U+FFFD for each escaped byte; valid text outside the escapes' private-use range as it is.
            let key = ShortStringBytes.displayed(ShortStringBytes.decode(bytes))
            #expect(headers?[key] == .string(lossy), "round \(round)")
            if let text = String(validating: bytes, as: UTF8.self), !text.unicodeScalars.contains(where: { $0.value >= 0x10FF00 }) {
                #expect(key == text, "round \(round)")
            }
            if let text = String(validating: bytes, as: UTF8.self) {
                #expect(object["body"] == .string(text), "round \(round)")
                #expect(object["body_base64"] == nil)
            } else {
                #expect(object["body"] == nil)
                #expect(decodeBase64(object["body_base64"]?.string ?? "-") == bytes, "round \(round)")
            }
        }
    }
}

/// A small seeded generator, so a failing round can be run again.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

import AMQP
import Testing
@testable import Warren

/// What `warren dlq` reads off a dead letter, what it prints, and what a
/// replayed copy carries: pure logic, no broker.
@Suite struct DeadLetterReportTests {
    static func letter(id: String? = "m-1", headers: [(String, FieldValue)], body: String = "hello") -> DeadLetter {
        let properties = MessageProperties(headers: FieldTable(headers), deliveryMode: 2, messageId: id)
        let delivery = Delivery(channel: 1, deliveryTag: 1, consumerTag: "", exchange: "", routingKey: "orders.dead",
                                redelivered: false, properties: properties, body: Array(body.utf8))
        return DeadLetter(delivery: delivery, position: 3)
    }

    static let warrenHeaders: [(String, FieldValue)] = [
        ("tenant", .string("acme")),
        ("x-warren-exchange", .string("shop")), ("x-warren-routing-key", .string("order.created")),
        ("x-warren-attempt", .int64(3)), ("x-warren-last-failure", .string("exit 1")),
        ("x-warren-reason", .string("handler exited with 65")), ("x-warren-exit-code", .int32(65)),
        ("x-warren-timed-out", .bool(false)), ("x-warren-attempts", .int64(3)),
        ("x-warren-last-stderr", .string("bad input")), ("x-warren-consumer", .string("orders")),
        ("x-warren-queue", .string("orders")), ("x-warren-dead-lettered-at", .timestamp(1_700_000_000)),
        ("x-warren-original-expiration", .string("60000")), ("x-delivery-count", .int64(2)),
    ]

    @Test func theReasonsWarrenWroteAreReadBack() {
        let letter = Self.letter(headers: Self.warrenHeaders)
        #expect(letter.reason == "handler exited with 65")
        #expect(letter.failure == "exit 65")
        #expect(letter.attempts == 3)
        #expect(letter.queue == "orders")
        #expect(letter.origin?.exchange == "shop" && letter.origin?.routingKey == "order.created")
        #expect(letter.deadLetteredAt == 1_700_000_000)
        #expect(DeadLetterReport.utc(1_700_000_000) == "2023-11-14 22:13:20")
    }

    @Test func aReplayedCopyLosesWarrensHeadersButWhereItWasFirstPublished() {
        let copy = Self.letter(headers: Self.warrenHeaders).replayProperties
        #expect(copy.headers?.entries.map(\.key) == ["tenant", "x-warren-exchange", "x-warren-routing-key"])
        #expect(copy.messageId == "m-1" && copy.deliveryMode == 2)
        #expect(Message.attempt(of: Delivery(channel: 1, deliveryTag: 1, consumerTag: "", exchange: "", routingKey: "orders",
                                             redelivered: false, properties: copy, body: [])) == 1)
    }

    @Test func aDeadLetterWithoutWarrensHeadersGoesBackToTheConsumersQueue() {
        let letter = Self.letter(headers: [("tenant", .string("acme"))])
        #expect(letter.replayQueue(fallback: "orders") == "orders")
        #expect(letter.replayProperties.headers?.entries.map(\.key) == ["tenant"])
        let oversized = Self.letter(headers: [("x-warren-queue", .string(String(repeating: "q", count: 256)))])
        #expect(oversized.replayQueue(fallback: "orders") == "orders", "no AMQP queue name is 256 bytes long")
    }

    @Test func aTimeoutOrASignalIsTheFailureShown() {
        #expect(Self.letter(headers: [("x-warren-timed-out", .bool(true)), ("x-warren-signal", .int32(15))]).failure == "timeout")
        #expect(Self.letter(headers: [("x-warren-signal", .int32(9))]).failure == "signal 9")
        #expect(Self.letter(headers: [("x-warren-exit-code", .string("65"))]).failure == nil, "a header of the wrong type is not believed")
    }

    @Test func controlCharactersFromTheQueueNeverReachTheTerminal() {
        let hostile = "a\u{1b}[2J\nb\tc\r\u{7f}\u{9b}\u{202e}d\\x1b"
        let shown = DeadLetterReport.visible(hostile)
        #expect(shown == #"a\x1b[2J\nb\tc\r\x7f\x9b\u{202e}d\\x1b"#)
        let letter = Self.letter(id: hostile, headers: [("x-warren-reason", .string("r\u{1b}]0;owned\u{7}"))])
        let table = DeadLetterReport.table([letter])
        #expect(!table.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" || (0x7f...0x9f).contains($0.value) })
        #expect(table.split(separator: "\n").count == 2)
        #expect(!DeadLetterReport.detail(letter).unicodeScalars.contains { $0.value == 0x1b })
        #expect(DeadLetterReport.matches(letter.delivery, id: shown))
        #expect(DeadLetterReport.matches(letter.delivery, id: hostile))
    }

    @Test func aNonUTF8ByteInAnIdIsShownAsItsHexEscape() {
        let id = ShortStringBytes.decode([0x69, 0xff, 0x64])
        #expect(DeadLetterReport.visible(id) == #"i\xffd"#)
    }

    @Test func theJSONLineIsValidJSONWithEveryField() throws {
        let letter = Self.letter(id: "m\u{1b}\"1", headers: Self.warrenHeaders)
        let line = DeadLetterReport.jsonLine(letter)
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let parsed = try StrictJSON.parse(Array(line.dropLast().utf8))
        #expect(parsed["message_id"]?.string == "m\u{1b}\"1")
        #expect(parsed["exit_code"] == .number("65"))
        #expect(parsed["signal"] == .null)
        #expect(parsed["queue"]?.string == "orders")
        let full = try StrictJSON.parse(Array(DeadLetterReport.jsonLine(letter, full: true).dropLast().utf8))
        #expect(full["body"]?.string == "hello")
        #expect(full["properties"]?["headers"]?["tenant"]?.string == "acme")
    }

    @Test func aTransientDeadLetterIsReplayedPersistent() {
        let properties = MessageProperties(headers: nil, deliveryMode: 1, messageId: "t-1")
        let transient = DeadLetter(delivery: Delivery(channel: 1, deliveryTag: 1, consumerTag: "", exchange: "", routingKey: "q",
                                                      redelivered: false, properties: properties, body: []), position: 1)
        #expect(transient.replayProperties.deliveryMode == 2)
        let unmarked = DeadLetter(delivery: Delivery(channel: 1, deliveryTag: 1, consumerTag: "", exchange: "", routingKey: "q",
                                                     redelivered: false, properties: MessageProperties(), body: []), position: 1)
        #expect(unmarked.replayProperties.deliveryMode == 2)
    }

    /// A message that went through a retry first died of its TTL in the
    /// delay queue; the broker's last death is why it is a dead letter.
    @Test func aBrokerMadeDeadLetterShowsItsLastDeathAndGoesBackToTheConsumersQueue() {
        let death: (String, String, Int64) -> FieldValue = { queue, reason, count in
            .table(FieldTable([("queue", .string(queue)), ("reason", .string(reason)), ("count", .int64(count))]))
        }
        let retried = Self.letter(headers: [
            ("x-first-death-queue", .string("orders.retry.1")), ("x-first-death-reason", .string("expired")),
            ("x-death", .array([death("orders", "delivery_limit", 1), death("orders.retry.1", "expired", 1)])),
        ])
        #expect(retried.reason == "broker: delivery_limit")
        #expect(retried.queue == "orders")
        #expect(retried.replayQueue(fallback: "other") == "orders")
        let newer = Self.letter(headers: [
            ("x-first-death-queue", .string("orders.retry.2")), ("x-first-death-reason", .string("expired")),
            ("x-last-death-queue", .string("orders")), ("x-last-death-reason", .string("maxlen")),
        ])
        #expect(newer.reason == "broker: maxlen" && newer.queue == "orders")
        // Only the first death known: a delay queue stands for its consumer's queue.
        let old = Self.letter(headers: [("x-first-death-queue", .string("orders.retry.12")), ("x-first-death-reason", .string("expired"))])
        #expect(old.queue == "orders")
        #expect(DeadLetter.consumedQueue("orders.retry.x") == "orders.retry.x")
        #expect(DeadLetter.consumedQueue(".retry.1") == ".retry.1")
        #expect(DeadLetter.consumedQueue("a.retry.1.retry.3") == "a.retry.1")
    }

    @Test func aListedLetterKeepsItsBodySizeButNotItsBody() {
        let body = String(repeating: "x", count: 10_000)
        let full = Self.letter(headers: [], body: body)
        let listed = DeadLetter(delivery: full.delivery, position: 1, keepingBody: 0)
        #expect(listed.bodySize == 10_000 && listed.delivery.payload.count == 0)
        #expect(DeadLetterReport.jsonLine(listed).contains(#""body_size":10000"#))
        let shown = DeadLetter(delivery: full.delivery, position: 1, keepingBody: DeadLetterReport.bodyPreview)
        #expect(shown.delivery.payload.count == DeadLetterReport.bodyPreview)
        #expect(DeadLetterReport.detail(shown).contains("body (10000 bytes, the first 4096 shown):"))
    }

    @Test func invisibleAndDirectionCharactersAreEscaped() {
        for value: UInt32 in [0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF] {
            let text = "a" + String(Character(Unicode.Scalar(value)!)) + "b"
            let hex = String(value, radix: 16)
            #expect(DeadLetterReport.visible(text) == "a\\u{" + String(repeating: "0", count: 4 - hex.count) + hex + "}b")
        }
    }

    /// `ShortStringBytes` keeps a real U+10FFxx as its four bytes' escapes;
    /// printed as such it would read like four bytes that were not UTF-8.
    @Test func aRealCharacterOfTheEscapeRangeIsNotShownAsRawBytes() {
        let real = ShortStringBytes.decode(Array("a\u{10FF41}b".utf8))
        #expect(DeadLetterReport.visible(real) == #"a\u{10ff41}b"#)
        let raw = ShortStringBytes.decode([0x61, 0xF4, 0x8F, 0x62])
        #expect(DeadLetterReport.visible(raw) == #"a\xf4\x8fb"#)
        let letter = Self.letter(id: real, headers: [])
        #expect(DeadLetterReport.matches(letter.delivery, id: #"a\u{10ff41}b"#))
    }

    @Test func aCutIdSaysSoAndTheWholeIdStillSelects() {
        let id = String(repeating: "k", count: 60)
        let letter = Self.letter(id: id, headers: [])
        let table = DeadLetterReport.table([letter])
        #expect(table.contains(String(repeating: "k", count: DeadLetterReport.idWidth - 6) + "…[cut]"), "\(table)")
        #expect(DeadLetterReport.cutIdsNote([letter])?.contains("--json") == true)
        #expect(DeadLetterReport.cutIdsNote([Self.letter(id: "short", headers: [])]) == nil)
        #expect(DeadLetterReport.matches(letter.delivery, id: id))
    }
}

import AMQP
import Testing

/// Short strings decode to Swift strings that encode back to the very
/// bytes they came from, UTF-8 or not.
@Suite struct ShortStringBytesTests {
    @Test func distinctBinaryIdsStayDistinctAndRoundTripByteForByte() {
        let a = ShortStringBytes.decode([0xFF, 0x41])
        let b = ShortStringBytes.decode([0xFE, 0x41])
        #expect(a != b)
        #expect(ShortStringBytes.encode(a) == [0xFF, 0x41])
        #expect(ShortStringBytes.encode(b) == [0xFE, 0x41])
    }

    @Test func utf8IsDecodedAsTextAndEveryByteStringRoundTrips() {
        #expect(ShortStringBytes.decode(Array("caf\u{e9} 😀".utf8)) == "caf\u{e9} 😀")
        // A valid code point in the escape range, an overlong form, a surrogate, a cut sequence.
        let awkward: [[UInt8]] = [[0xF4, 0x8F, 0xBC, 0x80], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xE2, 0x82],
                                  [UInt8](repeating: 0xFF, count: 100), Array(0...255)]
        for bytes in awkward {
            #expect(ShortStringBytes.encode(ShortStringBytes.decode(bytes)) == bytes, "\(bytes)")
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(ShortStringBytes.encode(ShortStringBytes.decode(bytes)) == bytes, "\(bytes)")
        }
    }

    @Test func handlersSeeBytesThatAreNotUTF8AsReplacementCharacters() {
        #expect(ShortStringBytes.displayed(ShortStringBytes.decode([0x61, 0xFF, 0x62])) == "a\u{FFFD}b")
        #expect(ShortStringBytes.displayed("caf\u{e9}") == "caf\u{e9}")
    }

    @Test func aPublishWithAShortStringOver255BytesIsRefusedBeforeAnythingIsSent() {
        let long = ShortStringBytes.decode([UInt8](repeating: 0xFF, count: 256))
        #expect(ShortStringBytes.tooLong(exchange: "", routingKey: "q", properties: MessageProperties(correlationId: long))?
            .contains("correlation_id is 256 bytes") == true)
        #expect(ShortStringBytes.tooLong(exchange: "", routingKey: "q",
                                         properties: MessageProperties(headers: FieldTable([(String(repeating: "k", count: 256), .bool(true))]))) != nil)
        #expect(ShortStringBytes.tooLong(exchange: "", routingKey: String(repeating: "q", count: 256), properties: MessageProperties()) != nil)
        #expect(ShortStringBytes.tooLong(exchange: "", routingKey: "q",
                                         properties: MessageProperties(messageId: ShortStringBytes.decode([UInt8](repeating: 0xFF, count: 255)))) == nil)
    }
}

/// AMQP short strings (property values, table keys, exchange and queue
/// names) are bytes, at most 255 of them, and nothing makes a publisher put
/// UTF-8 there: a binary `correlation_id` is common. warren holds them as
/// Swift `String`s, so they are decoded *reversibly*: a publish of what a
/// delivery carried sends the very bytes it came with.
///
/// The escape: a byte that is not part of valid UTF-8 becomes the code
/// point U+10FF00 + byte (the top of Supplementary Private Use Area-B,
/// which no standard assigns); encoding turns each such code point back
/// into its single byte. So that the escape stays unambiguous, a valid
/// encoding of a code point in that range is escaped byte by byte too.
/// Decoding then encoding gives back the bytes exactly. (A string built in
/// warren holding one of those 256 code points encodes to the byte it
/// stands for: no configuration or output needs them.)
///
/// Why not U+FFFD, as `String(decoding:as:)` does: two distinct binary ids
/// became the same string (a requester took another's reply), a reply's
/// `correlation_id` differed from its request's, and every invalid byte
/// grew to three, past the 255-byte limit of a short string.
public enum ShortStringBytes {
    /// The longest short string AMQP can carry.
    public static let limit = 255
    static let escapeBase: UInt32 = 0x10FF00

    /// The string standing for `bytes`, escaping what is not UTF-8.
    public static func decode<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> String {
        // The common case, every delivery's: plain ASCII.
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        let array = Array(bytes)
        var scalars = String.UnicodeScalarView()
        var index = 0
        while index < array.count {
            if let (scalar, length) = scalar(in: array, at: index), scalar.value < escapeBase {
                scalars.append(scalar)
                index += length
            } else if let (_, length) = scalar(in: array, at: index) {
                // A valid code point in the escape range: escaped byte by byte.
                for offset in 0..<length { scalars.append(escape(array[index + offset])) }
                index += length
            } else {
                scalars.append(escape(array[index]))
                index += 1
            }
        }
        return String(scalars)
    }

    /// The bytes `text` stands for: the inverse of `decode`.
    public static func encode(_ text: String) -> [UInt8] {
        let utf8 = text.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) { return Array(utf8) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        for scalar in text.unicodeScalars {
            if scalar.value >= escapeBase {
                bytes.append(UInt8(scalar.value - escapeBase))
            } else {
                bytes.append(contentsOf: String(scalar).utf8)
            }
        }
        return bytes
    }

    /// `text` as a handler sees it (envelope, `WARREN_*` variables): each
    /// escaped byte as U+FFFD, as bytes that are not UTF-8 always read there.
    public static func displayed(_ text: String) -> String {
        // Every escape's UTF-8 starts with 0xF4; most strings have none.
        guard text.utf8.contains(0xF4) else { return text }
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            scalars.append(scalar.value >= escapeBase ? "\u{FFFD}" : scalar)
        }
        return String(scalars)
    }

    /// How many bytes `text` is on the wire.
    public static func byteCount(_ text: String) -> Int {
        let utf8 = text.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) { return utf8.count }
        return encode(text).count
    }

    private static func escape(_ byte: UInt8) -> Unicode.Scalar {
        Unicode.Scalar(escapeBase + UInt32(byte))!
    }

    /// The well-formed UTF-8 scalar starting at `index` and its length, or
    /// nil if the bytes there are not one (overlong forms and surrogates
    /// included, as the standard says).
    private static func scalar(in bytes: [UInt8], at index: Int) -> (Unicode.Scalar, Int)? {
        let lead = bytes[index]
        let length: Int
        let minimum: UInt32
        var value: UInt32
        switch lead {
        case 0x00...0x7F: return (Unicode.Scalar(lead), 1)
        case 0xC2...0xDF: length = 2; minimum = 0x80; value = UInt32(lead & 0x1F)
        case 0xE0...0xEF: length = 3; minimum = 0x800; value = UInt32(lead & 0x0F)
        case 0xF0...0xF4: length = 4; minimum = 0x10000; value = UInt32(lead & 0x07)
        default: return nil
        }
        guard index + length <= bytes.count else { return nil }
        for offset in 1..<length {
            let byte = bytes[index + offset]
            guard byte & 0xC0 == 0x80 else { return nil }
            value = value << 6 | UInt32(byte & 0x3F)
        }
        guard value >= minimum, let scalar = Unicode.Scalar(value) else { return nil }
        return (scalar, length)
    }
}

extension ShortStringBytes {
    /// What in a publish would not fit in a short string, or nil. rabbitmq-c
    /// finds out only while writing the content header, after the
    /// `basic.publish` method frame went out: the broker then closes the
    /// whole connection (505 UNEXPECTED_FRAME), and every publish in
    /// flight on it fails. Checked before anything is sent, it is one
    /// publish's ordinary failure instead.
    public static func tooLong(exchange: String, routingKey: String, properties p: MessageProperties) -> String? {
        let named: [(String, String?)] = [
            ("exchange", exchange), ("routing key", routingKey), ("content_type", p.contentType),
            ("content_encoding", p.contentEncoding), ("correlation_id", p.correlationId), ("reply_to", p.replyTo),
            ("expiration", p.expiration), ("message_id", p.messageId), ("type", p.type), ("user_id", p.userId),
            ("app_id", p.appId)]
        for case let (name, value?) in named where byteCount(value) > limit {
            return "\(name) is \(byteCount(value)) bytes; AMQP allows at most \(limit)"
        }
        if let headers = p.headers, let key = tooLongKey(in: headers) {
            return "a header name is \(byteCount(key)) bytes; AMQP allows at most \(limit)"
        }
        return nil
    }

    private static func tooLongKey(in table: FieldTable) -> String? {
        for entry in table.entries {
            if byteCount(entry.key) > limit { return entry.key }
            if let key = tooLongKey(in: entry.value) { return key }
        }
        return nil
    }

    private static func tooLongKey(in value: FieldValue) -> String? {
        switch value {
        case .table(let table): return tooLongKey(in: table)
        case .array(let items):
            for item in items { if let key = tooLongKey(in: item) { return key } }
            return nil
        default: return nil
        }
    }
}

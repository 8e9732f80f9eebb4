import AMQP

/// Writes compact JSON straight into bytes: the envelope of every delivery
/// and the `WARREN_HEADER_*` values of non-string headers, with no
/// Foundation round trip per message.
///
/// What it writes is always valid JSON on one line, whatever the input:
/// - strings are checked as UTF-8 as they are escaped; a string that is not
///   valid UTF-8 is written with each bad sequence replaced by U+FFFD (a body
///   that is not is written as `body_base64` instead, see `Envelope`);
/// - `"` and `\` are escaped, and so is every control character
///   (U+0000-U+001F, U+007F-U+009F) and U+2028/U+2029, so no byte a line
///   splitter (C, Python's `splitlines`, JavaScript) reads as a line end
///   appears inside the line;
/// - a float or double that is NaN or infinite, which JSON cannot hold,
///   becomes the string `"NaN"`, `"Infinity"` or `"-Infinity"`.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    var count: Int { bytes.count }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func raw(_ byte: UInt8) { bytes.append(byte) }

    /// Drops what was written after `count` bytes, to write something else there.
    mutating func truncate(to count: Int) { bytes.removeSubrange(count...) }

    /// `"key":`
    mutating func key(_ name: StaticString) {
        raw(UInt8(ascii: "\""))
        raw(name)
        raw("\":")
    }

    mutating func string(_ text: String) {
        // Short strings hold bytes that are not UTF-8 as escapes (see `ShortStringBytes`).
        var text = ShortStringBytes.displayed(text)
        text.withUTF8 { string(validUTF8: $0) }
    }

    mutating func string(_ text: String?) {
        if let text { string(text) } else { raw("null") }
    }

    /// A string from bytes meant as UTF-8; bad sequences become U+FFFD.
    mutating func string(bytes input: UnsafeRawBufferPointer) {
        let start = count
        if !escapedIfValid(input) {
            truncate(to: start)
            var repaired = String(decoding: input, as: UTF8.self)
            repaired.withUTF8 { string(validUTF8: $0) }
        }
    }

    mutating func string(bytes input: [UInt8]) {
        input.withUnsafeBytes { string(bytes: $0) }
    }

    /// Writes `input` as a quoted, escaped JSON string and returns true when
    /// it is valid UTF-8; returns false at the first bad sequence, leaving a
    /// partial string the caller truncates.
    mutating func escapedIfValid(_ input: UnsafeRawBufferPointer) -> Bool {
        raw(UInt8(ascii: "\""))
        let ok = input.withMemoryRebound(to: UInt8.self) { escape($0, validate: true) }
        if ok { raw(UInt8(ascii: "\"")) }
        return ok
    }

    private mutating func string(validUTF8 input: UnsafeBufferPointer<UInt8>) {
        raw(UInt8(ascii: "\""))
        _ = escape(input, validate: false)
        raw(UInt8(ascii: "\""))
    }

    /// Copies runs of plain bytes at once and escapes the rest. With
    /// `validate`, checks UTF-8 as it goes (RFC 3629: no overlong forms, no
    /// surrogates, nothing above U+10FFFF) and stops at the first bad sequence.
    private mutating func escape(_ input: UnsafeBufferPointer<UInt8>, validate: Bool) -> Bool {
        let n = input.count
        var runStart = 0
        var i = 0
        while i < n {
            // Eight plain bytes at a time, the common case in text and JSON bodies.
            if i &+ 8 <= n, let base = input.baseAddress,
               Self.plainWord(UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)) {
                i &+= 8
                continue
            }
            let b = input[i]
            // Printable ASCII other than `"` and `\`: copied with its run.
            if b >= 0x20 && b < 0x7F && b != 0x22 && b != 0x5C {
                i += 1
                continue
            }
            if b < 0x80 {
                appendRun(input, from: runStart, to: i)
                if b == 0x22 || b == 0x5C {
                    bytes.append(UInt8(ascii: "\\"))
                    bytes.append(b)
                } else {
                    // U+0000-U+001F and DEL.
                    escapeControl(UInt32(b))
                }
                i += 1
                runStart = i
                continue
            }
            let length = validate ? Self.sequenceLength(input, at: i) : Self.leadLength(b)
            guard length > 0 else {
                appendRun(input, from: runStart, to: i)
                return false
            }
            if b == 0xC2 && input[i + 1] <= 0x9F {
                // C1 controls U+0080-U+009F (NEL among them).
                appendRun(input, from: runStart, to: i)
                escapeControl(UInt32(input[i + 1]))
                runStart = i + 2
            } else if b == 0xE2 && input[i + 1] == 0x80 && (input[i + 2] == 0xA8 || input[i + 2] == 0xA9) {
                appendRun(input, from: runStart, to: i)
                escapeControl(input[i + 2] == 0xA8 ? 0x2028 : 0x2029)
                runStart = i + 3
            }
            i += length
        }
        appendRun(input, from: runStart, to: n)
        return true
    }

    /// True when none of the eight bytes needs more than copying: no
    /// control character, DEL, `"`, `\` or byte of a multi-byte sequence.
    /// (The bit tricks find a byte below a bound, or equal to one, in a word.)
    @inline(__always)
    private static func plainWord(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        func hasZero(_ v: UInt64) -> Bool { (v &- ones) & ~v & highs != 0 }
        func hasBelow(_ v: UInt64, _ bound: UInt64) -> Bool { (v &- ones &* bound) & ~v & highs != 0 }
        return w & highs == 0 && !hasBelow(w, 0x20) && !hasZero(w ^ (ones &* 0x22)) && !hasZero(w ^ (ones &* 0x5C))
            && !hasZero(w ^ (ones &* 0x7F))
    }

    private mutating func appendRun(_ input: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) {
        if end > start { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: input[start..<end])) }
    }

    private mutating func escapeControl(_ scalar: UInt32) {
        switch scalar {
        case 0x08: raw("\\b")
        case 0x09: raw("\\t")
        case 0x0A: raw("\\n")
        case 0x0C: raw("\\f")
        case 0x0D: raw("\\r")
        default:
            raw("\\u")
            for shift in stride(from: 12, through: 0, by: -4) {
                bytes.append(Self.hexDigits[Int((scalar >> UInt32(shift)) & 0xF)])
            }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The length a lead byte announces, for input already known valid.
    private static func leadLength(_ b: UInt8) -> Int {
        b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
    }

    /// The length of the well-formed UTF-8 sequence at `i`, or 0 if there is none.
    @inline(__always)
    private static func sequenceLength(_ s: UnsafeBufferPointer<UInt8>, at i: Int) -> Int {
        let b = s[i]
        let n = s.count
        func cont(_ k: Int, _ low: UInt8 = 0x80, _ high: UInt8 = 0xBF) -> Bool {
            i + k < n && s[i + k] >= low && s[i + k] <= high
        }
        switch b {
        case 0xC2...0xDF: return cont(1) ? 2 : 0
        case 0xE0: return cont(1, 0xA0) && cont(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return cont(1) && cont(2) ? 3 : 0
        case 0xED: return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0
        case 0xF0: return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0
        case 0xF1...0xF3: return cont(1) && cont(2) && cont(3) ? 4 : 0
        case 0xF4: return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0
        default: return 0
        }
    }

    /// Standard base64 with padding, as a quoted JSON string.
    mutating func base64(_ input: UnsafeRawBufferPointer) {
        raw(UInt8(ascii: "\""))
        let n = input.count
        let start = bytes.count
        // Sized once, then filled in place.
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "="), count: (n + 2) / 3 * 4))
        Self.base64Alphabet.withUnsafeBufferPointer { alphabet in
            bytes.withUnsafeMutableBufferPointer { out in
                var o = start
                var i = 0
                while i + 3 <= n {
                    let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                    out[o] = alphabet[Int(v >> 18)]
                    out[o + 1] = alphabet[Int(v >> 12 & 0x3F)]
                    out[o + 2] = alphabet[Int(v >> 6 & 0x3F)]
                    out[o + 3] = alphabet[Int(v & 0x3F)]
                    i += 3
                    o += 4
                }
                if n - i >= 1 {
                    // One or two bytes left: the "==" or "=" already there stay as padding.
                    let v = UInt32(input[i]) << 16 | (n - i == 2 ? UInt32(input[i + 1]) << 8 : 0)
                    out[o] = alphabet[Int(v >> 18)]
                    out[o + 1] = alphabet[Int(v >> 12 & 0x3F)]
                    if n - i == 2 { out[o + 2] = alphabet[Int(v >> 6 & 0x3F)] }
                }
            }
        }
        raw(UInt8(ascii: "\""))
    }

    private static let base64Alphabet: [UInt8] =
        Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    mutating func number<T: BinaryInteger>(_ value: T) {
        bytes.append(contentsOf: String(value).utf8)
    }

    mutating func number(_ value: Double) {
        if value.isNaN {
            raw("\"NaN\"")
        } else if value.isInfinite {
            raw(value < 0 ? "\"-Infinity\"" : "\"Infinity\"")
        } else {
            // Swift prints the shortest form that reads back as the same
            // double (`1.0`, `1e-05`, `1e+20`): all valid JSON numbers.
            bytes.append(contentsOf: value.description.utf8)
        }
    }

    mutating func number(_ value: Float) {
        if value.isNaN || value.isInfinite {
            number(Double(value))
        } else {
            // The float's own shortest form: 0.1 stays 0.1, not 0.10000000149011612.
            bytes.append(contentsOf: value.description.utf8)
        }
    }

    /// An AMQP decimal (`value` x 10^-`scale`), exactly, as a plain number.
    mutating func decimal(scale: UInt8, value: UInt32) {
        var digits = Array(String(value).utf8)
        let scale = Int(scale)
        if scale > 0 {
            if digits.count <= scale {
                digits.insert(contentsOf: repeatElement(UInt8(ascii: "0"), count: scale - digits.count + 1), at: 0)
            }
            digits.insert(UInt8(ascii: "."), at: digits.count - scale)
        }
        bytes.append(contentsOf: digits)
    }

    mutating func bool(_ value: Bool) { value ? raw("true") : raw("false") }

    /// A header value, keeping its AMQP type: tables as objects, arrays as
    /// arrays, every integer kind and timestamps as numbers, decimals as
    /// exact numbers, byte arrays as base64 strings, void as null.
    mutating func field(_ value: FieldValue) {
        switch value {
        case .bool(let v): bool(v)
        case .int8(let v): number(v)
        case .uint8(let v): number(v)
        case .int16(let v): number(v)
        case .uint16(let v): number(v)
        case .int32(let v): number(v)
        case .uint32(let v): number(v)
        case .int64(let v): number(v)
        case .uint64(let v): number(v)
        case .float(let v): number(v)
        case .double(let v): number(v)
        case .decimal(let scale, let v): decimal(scale: scale, value: v)
        case .string(let v): string(bytes: v)
        case .bytes(let v): v.withUnsafeBytes { base64($0) }
        case .timestamp(let v): number(v)
        case .table(let t): table(t)
        case .array(let items):
            raw(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { raw(UInt8(ascii: ",")) }
                field(item)
            }
            raw(UInt8(ascii: "]"))
        case .void: raw("null")
        }
    }

    /// A table as an object, its entries in wire order. Duplicate keys (AMQP
    /// allows them) are all written; JSON parsers keep the last, as warren does.
    mutating func table(_ table: FieldTable) {
        raw(UInt8(ascii: "{"))
        for (index, entry) in table.entries.enumerated() {
            if index > 0 { raw(UInt8(ascii: ",")) }
            string(entry.key)
            raw(UInt8(ascii: ":"))
            field(entry.value)
        }
        raw(UInt8(ascii: "}"))
    }

    /// The compact JSON of one value, as text (for environment variables).
    static func text(of value: FieldValue) -> String {
        var writer = JSONWriter()
        writer.field(value)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}

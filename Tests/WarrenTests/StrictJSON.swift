/// A strict RFC 8259 reader for the tests, written apart from warren's
/// writer so that one cannot excuse the other: raw control characters in
/// strings, bad escapes, lone surrogates, invalid UTF-8, leading zeros and
/// trailing bytes are all refused.
enum StrictJSON: Equatable {
    case null
    case bool(Bool)
    /// The number's text, as written.
    case number(String)
    case string(String)
    case array([StrictJSON])
    /// Members in the order written.
    case object([(String, StrictJSON)])

    struct Refused: Error, CustomStringConvertible {
        var offset: Int
        var why: String
        var description: String { "not JSON at byte \(offset): \(why)" }
    }

    static func parse(_ bytes: [UInt8]) throws -> StrictJSON {
        guard String(validating: bytes, as: UTF8.self) != nil else { throw Refused(offset: 0, why: "invalid UTF-8") }
        var reader = Reader(bytes: bytes)
        let value = try reader.value()
        reader.skipSpace()
        guard reader.at == bytes.count else { throw Refused(offset: reader.at, why: "trailing bytes") }
        return value
    }

    subscript(key: String) -> StrictJSON? {
        guard case .object(let members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    var string: String? { if case .string(let s) = self { s } else { nil } }

    static func == (lhs: StrictJSON, rhs: StrictJSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0

        func fail(_ why: String) -> Refused { Refused(offset: at, why: why) }

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        mutating func expect(_ literal: String) throws {
            let want = Array(literal.utf8)
            guard at + want.count <= bytes.count, Array(bytes[at..<at + want.count]) == want else { throw fail("expected \(literal)") }
            at += want.count
        }

        mutating func value() throws -> StrictJSON {
            skipSpace()
            guard at < bytes.count else { throw fail("unexpected end") }
            switch bytes[at] {
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                at += 1
                var items: [StrictJSON] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                while true {
                    items.append(try value())
                    skipSpace()
                    guard at < bytes.count else { throw fail("unterminated array") }
                    if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                    try expect(",")
                }
            case UInt8(ascii: "{"):
                at += 1
                var members: [(String, StrictJSON)] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                    let key = try string()
                    skipSpace()
                    try expect(":")
                    members.append((key, try value()))
                    skipSpace()
                    guard at < bytes.count else { throw fail("unterminated object") }
                    if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(members) }
                    try expect(",")
                }
            default: return .number(try number())
            }
        }

        mutating func number() throws -> String {
            let start = at
            func digits(_ r: inout Reader) -> Int {
                let s = r.at
                while r.at < r.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(r.bytes[r.at]) { r.at += 1 }
                return r.at - s
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
            let intStart = at
            let intDigits = digits(&self)
            guard intDigits > 0 else { throw fail("expected a value") }
            if intDigits > 1 && bytes[intStart] == UInt8(ascii: "0") { throw fail("leading zero") }
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                at += 1
                guard digits(&self) > 0 else { throw fail("no digits after the point") }
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                at += 1
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
                guard digits(&self) > 0 else { throw fail("no exponent digits") }
            }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        mutating func hex4() throws -> UInt32 {
            guard at + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[at..<at + 4], as: UTF8.self), radix: 16)
            else { throw fail("bad \\u escape") }
            at += 4
            return v
        }

        mutating func string() throws -> String {
            at += 1
            var scalars = String.UnicodeScalarView()
            var run: [UInt8] = []
            func flush() { scalars.append(contentsOf: String(decoding: run, as: UTF8.self).unicodeScalars); run.removeAll() }
            while true {
                guard at < bytes.count else { throw fail("unterminated string") }
                let b = bytes[at]
                if b == UInt8(ascii: "\"") { at += 1; break }
                if b < 0x20 { throw fail("raw control character \(b) in a string") }
                if b != UInt8(ascii: "\\") { run.append(b); at += 1; continue }
                flush()
                at += 1
                guard at < bytes.count else { throw fail("unterminated escape") }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    var v = try hex4()
                    if (0xD800...0xDBFF).contains(v) {
                        try expect("\\u")
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("lone high surrogate") }
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(v) {
                        throw fail("lone low surrogate")
                    }
                    scalars.append(Unicode.Scalar(v)!)
                default: throw fail("bad escape")
                }
            }
            flush()
            return String(scalars)
        }
    }
}

/// Standard base64 back to bytes, for checking `body_base64`; nil when malformed.
func decodeBase64(_ text: String) -> [UInt8]? {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    let chars = Array(text.utf8)
    guard chars.count % 4 == 0 else { return nil }
    var out: [UInt8] = []
    var index = 0
    while index < chars.count {
        var v: UInt32 = 0
        var pad = 0
        for k in 0..<4 {
            let c = chars[index + k]
            if c == UInt8(ascii: "=") {
                guard index + 4 == chars.count, k >= 2 else { return nil }
                pad += 1
                v <<= 6
            } else {
                guard pad == 0, let d = alphabet.firstIndex(of: c) else { return nil }
                v = v << 6 | UInt32(d)
            }
        }
        out.append(UInt8(v >> 16))
        if pad < 2 { out.append(UInt8(v >> 8 & 0xFF)) }
        if pad < 1 { out.append(UInt8(v & 0xFF)) }
        index += 4
    }
    return out
}

public import AMQP
import Glibc

/// How `warren dlq` prints dead letters: a table for people, a JSON object
/// per line for scripts, and one message in full.
///
/// Everything printed comes from the queue, so from whoever published the
/// message: on a terminal an id or a reason could hold escape sequences
/// that rewrite the screen, or a newline that fakes a row. The text forms
/// print every control character, bidirectional override and non-UTF-8
/// byte as a visible escape (`\x1b`, `\n`, `\u{202e}`); the JSON form
/// escapes as JSON does.
public enum DeadLetterReport {
    // MARK: The table

    static let columns = ["POS", "MESSAGE ID", "REASON", "FAILURE", "ATTEMPTS", "DEAD-LETTERED (UTC)", "FROM"]
    /// Columns cut to this many characters (the rest as "…"); `show` prints them whole.
    static let idWidth = 40
    static let reasonWidth = 60

    /// The table of `letters` with a header line, columns aligned; each line ends in "\n".
    public static func table(_ letters: [DeadLetter]) -> String {
        let rows = [columns] + letters.map(row)
        var widths = [Int](repeating: 0, count: columns.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        var text = ""
        for row in rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                let last = index == row.count - 1
                line += last ? cell : cell + String(repeating: " ", count: widths[index] - cell.count + 2)
            }
            text += line + "\n"
        }
        return text
    }

    static func row(_ letter: DeadLetter) -> [String] {
        [
            "\(letter.position)",
            cut(letter.id.map(visible) ?? "-", to: idWidth, marker: cutIdMarker),
            cut(letter.reason.map(visible) ?? "-", to: reasonWidth),
            letter.failure ?? "-",
            letter.attempts.map { "\($0)" } ?? "-",
            letter.deadLetteredAt.map(utc) ?? "-",
            from(letter),
        ]
    }

    /// Where it came from: the queue, and where it was first published when
    /// that is another route than the queue's own.
    static func from(_ letter: DeadLetter) -> String {
        let queue = letter.queue.map(visible) ?? "-"
        guard let origin = letter.origin, !(origin.exchange.isEmpty && origin.routingKey == letter.queue) else { return queue }
        let exchange = origin.exchange.isEmpty ? "(default)" : visible(origin.exchange)
        return "\(queue) <- \(exchange) \(visible(origin.routingKey))"
    }

    static func cut(_ text: String, to width: Int, marker: String = "…") -> String {
        text.count <= width ? text : String(text.prefix(width - marker.count)) + marker
    }

    /// Ends an id the table cut: not "…" alone, which an id may hold. The
    /// whole id is in `list --json`, and `--id` takes it whole.
    static let cutIdMarker = "…[cut]"

    /// The line under a table where an id was cut, saying how to get it whole.
    public static func cutIdsNote(_ letters: [DeadLetter]) -> String? {
        guard letters.contains(where: { ($0.id.map(visible)?.count ?? 0) > idWidth }) else { return nil }
        return "(an id ending in \(cutIdMarker) is cut: list --json prints it whole, and --id takes it whole)\n"
    }

    // MARK: One message in full

    /// Body bytes `show` prints.
    public static let bodyPreview = 4096

    /// Every field, every header, the last stderr line and the start of the body.
    public static func detail(_ letter: DeadLetter) -> String {
        let delivery = letter.delivery
        let properties = delivery.properties
        var lines: [(String, String)] = [
            ("position", "\(letter.position)"),
            ("message id", letter.id.map(visible) ?? "-"),
            ("reason", letter.reason.map(visible) ?? "-"),
            ("failure", letter.failure ?? "-"),
            ("attempts", letter.attempts.map { "\($0)" } ?? "-"),
            ("dead-lettered", letter.deadLetteredAt.map { "\(utc($0)) UTC" } ?? "-"),
            ("consumer", letter.consumer.map(visible) ?? "-"),
            ("queue", letter.queue.map(visible) ?? "-"),
        ]
        if let origin = letter.origin {
            lines.append(("first published to", "exchange '\(visible(origin.exchange))', routing key '\(visible(origin.routingKey))'"))
        }
        lines.append(("last stderr", letter.lastStderr.map(visible) ?? "-"))
        for (name, value) in [("correlation id", properties.correlationId), ("reply to", properties.replyTo),
                              ("content type", properties.contentType), ("content encoding", properties.contentEncoding),
                              ("type", properties.type), ("app id", properties.appId), ("user id", properties.userId)] {
            if let value { lines.append((name, visible(value))) }
        }
        if let timestamp = properties.timestamp { lines.append(("timestamp", "\(utc(timestamp)) UTC")) }
        if let priority = properties.priority { lines.append(("priority", "\(priority)")) }
        let width = lines.map(\.0.count).max() ?? 0
        var text = ""
        for (name, value) in lines {
            text += name + ":" + String(repeating: " ", count: width - name.count + 1) + value + "\n"
        }
        text += "headers:\n"
        for entry in properties.headers?.entries ?? [] {
            text += "  \(visible(entry.key)): \(visible(JSONWriter.text(of: entry.value)))\n"
        }
        let size = letter.bodySize
        let shown = min(size, bodyPreview, delivery.payload.count)
        text += "body (\(size) bytes\(shown < size ? ", the first \(shown) shown" : "")):\n"
        let preview = delivery.payload.withUnsafeBytes { Array($0.prefix(shown)) }
        text += visible(ShortStringBytes.decode(preview), keepingLines: true)
        if !text.hasSuffix("\n") { text += "\n" }
        return text
    }

    // MARK: JSON

    /// One JSON object and "\n". `full` (for `show`) adds the properties,
    /// every header and the body (`body`, or `body_base64`).
    public static func jsonLine(_ letter: DeadLetter, full: Bool = false) -> String {
        var json = JSONWriter(capacity: 512 + (full ? letter.delivery.payload.count * 4 / 3 : 0))
        json.raw("{"); json.key("position"); json.number(letter.position)
        json.raw(","); json.key("message_id"); json.string(letter.id)
        json.raw(","); json.key("reason"); json.string(letter.reason)
        json.raw(","); json.key("exit_code"); json.number(letter.exitCode)
        json.raw(","); json.key("signal"); json.number(letter.signal)
        json.raw(","); json.key("timed_out"); json.bool(letter.timedOut)
        json.raw(","); json.key("attempts"); json.number(letter.attempts)
        json.raw(","); json.key("dead_lettered_at"); json.number(letter.deadLetteredAt)
        json.raw(","); json.key("consumer"); json.string(letter.consumer)
        json.raw(","); json.key("queue"); json.string(letter.queue)
        json.raw(","); json.key("exchange"); json.string(letter.origin?.exchange)
        json.raw(","); json.key("routing_key"); json.string(letter.origin?.routingKey)
        json.raw(","); json.key("last_stderr"); json.string(letter.lastStderr)
        json.raw(","); json.key("body_size"); json.number(letter.bodySize)
        if full {
            json.raw(","); json.key("redelivered"); json.bool(letter.delivery.redelivered)
            json.raw(","); json.key("properties"); json.properties(letter.delivery.properties)
            json.raw(","); json.body(letter.delivery.payload)
        }
        json.raw("}\n")
        return String(decoding: json.bytes, as: UTF8.self)
    }

    /// What `replay --json` prints for each message: `outcome` is
    /// `replayed` or `refused` (then with `reason`), `queue` where it went.
    public static func outcomeLine(_ letter: DeadLetter, outcome: StaticString, queue: String, reason: String?) -> String {
        var json = JSONWriter(capacity: 256)
        json.raw("{"); json.key("position"); json.number(letter.position)
        json.raw(","); json.key("message_id"); json.string(letter.id)
        json.raw(","); json.key("outcome"); json.raw(UInt8(ascii: "\"")); json.raw(outcome); json.raw(UInt8(ascii: "\""))
        json.raw(","); json.key("queue"); json.string(queue)
        json.raw(","); json.key("reason"); json.string(reason)
        json.raw("}\n")
        return String(decoding: json.bytes, as: UTF8.self)
    }

    // MARK: Text that cannot fool a terminal

    /// `text` with every control character (C0, DEL, C1), line and
    /// paragraph separator, bidirectional control (U+061C, U+200E/F,
    /// U+202A-E, U+2066-9) and invisible character (U+200B-D, U+2060-4,
    /// U+FEFF) written as `\u{XXXX}` (or `\xNN` for C0/C1), a byte that was
    /// not UTF-8 (see `ShortStringBytes`) as `\xNN`, a real character of
    /// U+10FF00-U+10FFFF as `\u{10ffxx}`, and a backslash doubled, so an
    /// escape in the output is always warren's and says which it is.
    /// `keepingLines` (a body preview) leaves newlines and tabs as they are.
    public static func visible(_ text: String) -> String { visible(text, keepingLines: false) }

    static func visible(_ text: String, keepingLines: Bool) -> String {
        var out = ""
        let scalars = Array(text.unicodeScalars)
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            let value = scalar.value
            index += 1
            if let (character, length) = escapedCharacter(scalars, at: index - 1) {
                // A real U+10FFxx character, which `ShortStringBytes` keeps
                // as its four bytes' escapes: printed as the character, so
                // it never reads like four bytes that were not UTF-8.
                out += "\\u{" + hex(character, digits: 4) + "}"
                index += length - 1
                continue
            }
            switch value {
            case 0x0A where keepingLines, 0x09 where keepingLines:
                out.unicodeScalars.append(scalar)
            case 0x0A: out += "\\n"
            case 0x09: out += "\\t"
            case 0x0D: out += "\\r"
            case 0x5C: out += "\\\\"
            case 0..<0x20, 0x7F...0x9F:
                out += "\\x" + hex(value, digits: 2)
            case 0x061C, 0x200B...0x200F, 0x2028, 0x2029, 0x202A...0x202E, 0x2060...0x2064, 0x2066...0x2069, 0xFEFF:
                out += "\\u{" + hex(value, digits: 4) + "}"
            case 0x10FF00...0x10FFFF:
                out += "\\x" + hex(value - 0x10FF00, digits: 2)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// The character U+10FF00...U+10FFFF whose four UTF-8 bytes start at
    /// `index` as escapes (see `ShortStringBytes`), and their count.
    private static func escapedCharacter(_ scalars: [Unicode.Scalar], at index: Int) -> (UInt32, Int)? {
        let base: UInt32 = 0x10FF00
        guard index + 4 <= scalars.count else { return nil }
        var bytes: [UInt8] = []
        for scalar in scalars[index..<index + 4] {
            guard scalar.value >= base else { return nil }
            bytes.append(UInt8(scalar.value - base))
        }
        guard bytes[0] == 0xF4, bytes[1] == 0x8F, (0xBC...0xBF).contains(bytes[2]), (0x80...0xBF).contains(bytes[3]) else { return nil }
        let value = UInt32(bytes[0] & 0x07) << 18 | UInt32(bytes[1] & 0x3F) << 12 | UInt32(bytes[2] & 0x3F) << 6 | UInt32(bytes[3] & 0x3F)
        return (value, 4)
    }

    private static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// `2026-11-26 10:33:42` (UTC).
    static func utc(_ seconds: UInt64) -> String {
        var time = time_t(clamping: seconds)
        var parts = tm()
        guard gmtime_r(&time, &parts) != nil else { return "\(seconds)" }
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday)) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))"
    }

    /// Whether a dead letter is the one an operator named with `--id`: its
    /// message id as it is, or as the table shows it (escapes and all, for
    /// an id no shell can type).
    public static func matches(_ letter: Delivery, id: String) -> Bool {
        guard let messageId = letter.properties.messageId else { return false }
        return messageId == id || visible(messageId) == id
    }
}

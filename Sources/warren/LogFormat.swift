import Glibc
import Logging
import Synchronization

/// Log lines on stderr: `text` (human), `json` (shippers), and, when
/// `JOURNAL_STREAM` says stderr is the journal, a `<N>` syslog priority
/// prefix instead of a timestamp, so journald keeps the level.
///
/// One record is always exactly one line. Message ids, headers and handler
/// output come from whoever published the message: a newline in them would
/// start a new journal record with any `<N>` priority it likes, a `\r` or an
/// escape sequence would rewrite what a terminal shows. So every control
/// character (C0, DEL, C1, U+2028, U+2029) is written as a visible escape,
/// in the message, the keys and the values, in every format.
struct StderrLogHandler: LogHandler {
    enum Format: Sendable { case text, json }

    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level
    let label: String
    let format: Format
    let journal: Bool

    /// Serialises whole lines onto fd 2, so concurrent lines never interleave.
    private static let lock = Mutex(())

    init(label: String, level: Logger.Level, format: Format, journal: Bool) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.journal = journal
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let line = render(level: event.level, message: event.message, metadata: event.metadata)
        Self.lock.withLock { _ in writeToStderr(line) }
    }

    /// One record as one `\n`-terminated line.
    ///
    /// Built by appending to one buffer, with byte-level checks for what
    /// needs quoting or escaping: with an outcome line for every message
    /// (`log_outcomes`), this runs thousands of times a second.
    func render(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?) -> String {
        let pairs = Self.merged(metadata, extra)
        var line = ""
        line.reserveCapacity(192)
        switch format {
        case .text:
            if journal {
                line += "<"; line += String(Self.priority(level)); line += ">"
            } else {
                line += Self.timestamp(); line += " "; line += Self.upperName(level); line += " "
            }
            line += Self.escapingControls("\(message)")
            for entry in pairs {
                let (key, value) = (entry.key, entry.value)
                line += " "; line += Self.escapingControls(key); line += "="; line += Self.quoteIfNeeded(Self.text(of: value))
            }
        case .json:
            if journal { line += "<"; line += String(Self.priority(level)); line += ">" }
            line += "{\"time\":\""; line += Self.timestamp()
            line += "\",\"level\":\""; line += level.rawValue
            line += "\",\"message\":"; line += Self.jsonString("\(message)")
            for entry in pairs {
                let (key, value) = (entry.key, entry.value)
                line += ","; line += Self.jsonString(key); line += ":"; line += Self.jsonString(Self.text(of: value))
            }
            line += "}"
        }
        line += "\n"
        return line
    }

    /// One metadata entry. A struct, not a tuple: an array of tuples looks
    /// its type up at run time on every line.
    struct Entry {
        var key: String
        var value: Logger.MetadataValue
    }

    /// The handler's metadata and the line's own (which wins), sorted by key.
    static func merged(_ base: Logger.Metadata, _ extra: Logger.Metadata?) -> [Entry] {
        var entries: [Entry] = []
        entries.reserveCapacity(base.count + (extra?.count ?? 0))
        if let extra {
            for (key, value) in base where extra[key] == nil { entries.append(Entry(key: key, value: value)) }
            for (key, value) in extra { entries.append(Entry(key: key, value: value)) }
        } else {
            for (key, value) in base { entries.append(Entry(key: key, value: value)) }
        }
        entries.sort { $0.key < $1.key }
        return entries
    }

    static func text(of value: Logger.MetadataValue) -> String {
        if case .string(let text) = value { return text }
        return "\(value)"
    }

    static func upperName(_ level: Logger.Level) -> String {
        switch level {
        case .trace: "TRACE"
        case .debug: "DEBUG"
        case .info: "INFO"
        case .notice: "NOTICE"
        case .warning: "WARNING"
        case .error: "ERROR"
        case .critical: "CRITICAL"
        }
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Blanks, quotes, `=` and control characters would make a value
    /// ambiguous or break the line: such values are written as JSON strings.
    static func quoteIfNeeded(_ text: String) -> String {
        if text.isEmpty { return "\"\"" }
        // Blank, quote, '=', and every byte that can start a control character (see `mayHoldControls`).
        for byte in text.utf8 where byte <= 0x20 || byte == 0x22 || byte == 0x3d || byte == 0x7f || byte == 0xc2 || byte == 0xe2 {
            return jsonString(text)
        }
        return text
    }

    /// `\n`, `\r`, `\t` as themselves, other control characters as `\xHH`
    /// (`\u2028`, `\u2029` for the two beyond a byte); everything else,
    /// backslashes included, as it was, so ordinary text reads unchanged.
    static func escapingControls(_ text: String) -> String {
        guard mayHoldControls(text) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if isControl(scalar) {
                    out += scalar.value > 0xff ? "\\u" + hex(scalar.value, digits: 4) : "\\x" + hex(scalar.value, digits: 2)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    static func jsonString(_ text: String) -> String {
        // Most values hold nothing to escape: no scalar-by-scalar copy for them.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5c || $0 == 0x7f || $0 == 0xc2 || $0 == 0xe2 }) {
            return "\"" + text + "\""
        }
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if isControl(scalar) {
                    out += "\\u" + hex(scalar.value, digits: 4)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// C0, DEL, C1, and the Unicode line and paragraph separators.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    /// A quick look at the bytes: only these can start a control character
    /// in UTF-8 (0xC2 leads C1, 0xE2 leads U+2028 and U+2029), so most lines
    /// are never decoded scalar by scalar.
    static func mayHoldControls(_ text: String) -> Bool {
        text.utf8.contains { $0 < 0x20 || $0 == 0x7f || $0 == 0xc2 || $0 == 0xe2 }
    }

    static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// The date and time to the second, made once a second: most lines
    /// of a busy second share it.
    private static let currentSecond = Mutex(Second(seconds: -1, text: ""))

    struct Second {
        var seconds: Int
        var text: String
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let prefix = currentSecond.withLock { current -> String in
            if current.seconds == ts.tv_sec { return current.text }
            var seconds = ts.tv_sec
            var parts = tm()
            gmtime_r(&seconds, &parts)
            func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
            let text = "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))."
            current = Second(seconds: ts.tv_sec, text: text)
            return text
        }
        let millis = Int(ts.tv_nsec / 1_000_000)
        return prefix + (millis < 10 ? "00" : millis < 100 ? "0" : "") + String(millis) + "Z"
    }
}

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
    func render(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?) -> String {
        var all = metadata
        if let extra { all.merge(extra) { $1 } }
        var line: String
        switch format {
        case .text:
            line = journal ? "<\(Self.priority(level))>" : "\(Self.timestamp()) \(level.rawValue.uppercased()) "
            line += Self.escapingControls("\(message)")
            for (key, value) in all.sorted(by: { $0.key < $1.key }) {
                line += " \(Self.escapingControls(key))=\(Self.quoteIfNeeded("\(value)"))"
            }
        case .json:
            line = journal ? "<\(Self.priority(level))>" : ""
            line += "{\"time\":\"\(Self.timestamp())\",\"level\":\"\(level.rawValue)\",\"message\":\(Self.jsonString("\(message)"))"
            for (key, value) in all.sorted(by: { $0.key < $1.key }) {
                line += ",\(Self.jsonString(key)):\(Self.jsonString("\(value)"))"
            }
            line += "}"
        }
        return line + "\n"
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
        text.isEmpty || text.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) || mayHoldControls(text)
            ? jsonString(text) : text
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

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var seconds = ts.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let millis = Int(ts.tv_nsec / 1_000_000)
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
    }
}

import Glibc
import Logging
import Synchronization

/// Log lines on stderr: `text` (human), `json` (shippers), and, when
/// `JOURNAL_STREAM` says stderr is the journal, a `<N>` syslog priority
/// prefix instead of a timestamp, so journald keeps the level.
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
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var line: String
        switch format {
        case .text:
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.quoteIfNeeded("\($0.value)"))" }.joined(separator: " ")
            line = journal ? "<\(Self.priority(event.level))>" : "\(Self.timestamp()) \(event.level.rawValue.uppercased()) "
            line += "\(event.message)"
            if !fields.isEmpty { line += " " + fields }
        case .json:
            var object = "{\"time\":\"\(Self.timestamp())\",\"level\":\"\(event.level.rawValue)\",\"message\":\(Self.jsonString("\(event.message)"))"
            for (key, value) in all.sorted(by: { $0.key < $1.key }) {
                object += ",\(Self.jsonString(key)):\(Self.jsonString("\(value)"))"
            }
            object += "}"
            line = journal ? "<\(Self.priority(event.level))>" + object : object
        }
        line += "\n"
        Self.lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
                if written <= 0 { if errno == EINTR { continue }; break }
                offset += written
            }
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

    static func quoteIfNeeded(_ text: String) -> String {
        text.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) || text.isEmpty ? jsonString(text) : text
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
                if scalar.value < 0x20 {
                    out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
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

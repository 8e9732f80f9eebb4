/// One output stream of a handler, cut into log lines within a byte budget.
///
/// Kept free of I/O so that its cost can be tested: while under budget,
/// `feed` decodes each line once; once the budget is spent it decodes
/// nothing more and only keeps the last bytes (for the last stderr line),
/// so a handler that writes without end costs the supervisor thread a
/// bounded copy per read, not a string per line.
struct OutputLineSplitter {
    /// Bytes logged per stream (each line with its newline) before the rest is dropped.
    let limit: Int
    /// A longer line is logged in pieces of this size.
    static let maxLine = 4096
    /// Kept for `lastLine`.
    static let maxLastLine = 512

    private var pending: [UInt8] = []
    private(set) var logged = 0
    private(set) var truncated = false
    /// The last non-empty line, at most `maxLastLine` bytes' worth; complete after `finish`.
    private(set) var lastLine: String? = nil
    /// The stream's last bytes once truncated, from which `finish` takes `lastLine`.
    private var tail: [UInt8] = []

    init(limit: Int) { self.limit = limit }

    /// The notice logged once, in place of everything past the budget.
    static func notice(_ streamName: String, limit: Int) -> String {
        "[warren: further \(streamName) of this handler is not logged (over \(limit) bytes)]"
    }

    /// Takes the next bytes of the stream; `emit` gets each complete line
    /// (without its newline, a trailing `\r` dropped), or `nil` once for
    /// the notice that the budget is spent.
    mutating func feed(_ bytes: ArraySlice<UInt8>, emit: (String?) -> Void) {
        if truncated {
            keepTail(bytes)
            return
        }
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = pending + bytes[start..<newline]
            pending = []
            start = newline + 1
            if !log(line, newline: true, emit: emit) {
                keepTail(bytes[start...])
                return
            }
        }
        pending.append(contentsOf: bytes[start...])
        while pending.count >= Self.maxLine {
            let piece = Array(pending.prefix(Self.maxLine))
            pending.removeFirst(Self.maxLine)
            if !log(piece, newline: false, emit: emit) {
                keepTail(pending[...])
                pending = []
                return
            }
        }
    }

    /// A new budget, for a long-lived worker's next message: its stderr is
    /// bounded per message, not once for its whole life.
    mutating func renewBudget() {
        logged = 0
        truncated = false
        tail = []
    }

    /// The stream ended: logs a last unterminated line and settles `lastLine`.
    mutating func finish(emit: (String?) -> Void) {
        if !truncated, !pending.isEmpty {
            let line = pending
            pending = []
            _ = log(line, newline: false, emit: emit)
        }
        if truncated, let line = Self.lastNonEmptyLine(in: tail) { lastLine = line }
        tail = []
    }

    /// Logs one line if the budget allows; false once it does not.
    private mutating func log(_ line: [UInt8], newline: Bool, emit: (String?) -> Void) -> Bool {
        let cost = line.count + (newline ? 1 : 0)
        guard logged + cost <= limit else {
            truncated = true
            tail = Array(line.suffix(Self.maxLastLine * 2))
            emit(nil)
            return false
        }
        logged += cost
        var text = String(decoding: line, as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        if !text.isEmpty { lastLine = String(text.prefix(Self.maxLastLine)) }
        emit(text)
        return true
    }

    private mutating func keepTail(_ bytes: ArraySlice<UInt8>) {
        let keep = Self.maxLastLine * 2
        if bytes.count >= keep {
            tail = Array(bytes.suffix(keep))
        } else {
            tail.append(contentsOf: bytes)
            if tail.count > keep { tail.removeFirst(tail.count - keep) }
        }
    }

    static func lastNonEmptyLine(in bytes: [UInt8]) -> String? {
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
        for line in lines.reversed() {
            var text = String(decoding: line, as: UTF8.self)
            if text.hasSuffix("\r") { text.removeLast() }
            if !text.isEmpty { return String(text.prefix(maxLastLine)) }
        }
        return nil
    }
}

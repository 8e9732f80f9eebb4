/// A persistent worker's stdout, cut into protocol lines of bounded size.
///
/// Unlike a handler's output, which is logged within a budget, these lines
/// are the protocol: each complete one is handed on whole, and one longer
/// than `limit` is a protocol error (the worker is replaced), so a worker
/// that writes without a newline cannot make warren hold unbounded memory.
struct WorkerLineSplitter {
    enum Piece: Equatable {
        /// A complete line, without its newline (a trailing `\r` dropped).
        case line([UInt8])
        /// A line longer than `limit`: its first bytes, for the log; the
        /// rest of it, up to its newline, is dropped.
        case tooLong(prefix: [UInt8])
    }

    /// The longest line accepted (bytes, without the newline).
    let limit: Int
    private var pending: [UInt8] = []
    /// Inside a line already reported as too long: dropped up to its newline.
    private var skipping = false

    init(limit: Int) { self.limit = limit }

    mutating func feed(_ bytes: ArraySlice<UInt8>, emit: (Piece) -> Void) {
        var start = bytes.startIndex
        while start < bytes.endIndex {
            guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                if !skipping { pending.append(contentsOf: bytes[start...]) }
                if !skipping, pending.count > limit {
                    emit(.tooLong(prefix: Array(pending.prefix(200))))
                    pending = []
                    skipping = true
                }
                return
            }
            if skipping {
                skipping = false
            } else {
                var line = pending + bytes[start..<newline]
                pending = []
                if line.count > limit {
                    emit(.tooLong(prefix: Array(line.prefix(200))))
                } else {
                    if line.last == UInt8(ascii: "\r") { line.removeLast() }
                    emit(.line(line))
                }
            }
            start = newline + 1
        }
    }
}

import Glibc

/// Writes all of `text` to stderr (fd 2), going on after a partial write or
/// an interrupted one: log records and config errors are never cut short.
func writeToStderr(_ text: String) { writeAll(text, to: 2) }

/// Writes all of `text` to stdout (fd 1) at once, unbuffered: `warren dlq
/// replay` reports each message as it is done, so a script (or an operator
/// who kills it) sees exactly what was done.
/// false when stdout is gone (EPIPE: the reader closed the pipe, with
/// SIGPIPE ignored) or refused the write.
@discardableResult
func writeToStdout(_ text: String) -> Bool { writeAll(text, to: 1) }

@discardableResult
private func writeAll(_ text: String, to descriptor: Int32) -> Bool {
    var text = text
    // A native string's bytes in place: no copy for each line.
    return text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }
}

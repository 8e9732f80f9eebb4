import Glibc

/// Writes all of `text` to stderr (fd 2), going on after a partial write or
/// an interrupted one: log records and config errors are never cut short.
func writeToStderr(_ text: String) {
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { break }
        offset += written
    }
}

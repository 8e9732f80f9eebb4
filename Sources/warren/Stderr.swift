import Glibc

/// Writes all of `text` to stderr (fd 2), going on after a partial write or
/// an interrupted one: log records and config errors are never cut short.
func writeToStderr(_ text: String) {
    var text = text
    // A native string's bytes in place: no copy for each line.
    text.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { break }
            offset += written
        }
    }
}

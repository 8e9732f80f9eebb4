/// Splits a `command = ...` value into words the way a POSIX shell would
/// split a simple command, without running a shell: no variables, globs,
/// pipes or redirections. Quoting rules:
///
/// - unquoted blanks separate words;
/// - `'...'` keeps everything literally;
/// - `"..."` keeps everything but `\"`, `\\` which are unescaped;
/// - outside quotes, `\` makes the next character literal.
public enum CommandWords {
    public struct SplitError: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    public static func split(_ text: String) throws(SplitError) -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var iterator = text.makeIterator()
        while let char = iterator.next() {
            switch char {
            case " ", "\t":
                if inWord {
                    words.append(current)
                    current = ""
                    inWord = false
                }
            case "'":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "'" { closed = true; break }
                    current.append(next)
                }
                if !closed { throw SplitError(description: "unterminated single quote") }
            case "\"":
                inWord = true
                var closed = false
                while let next = iterator.next() {
                    if next == "\"" { closed = true; break }
                    if next == "\\" {
                        guard let escaped = iterator.next() else { break }
                        if escaped != "\"" && escaped != "\\" { current.append("\\") }
                        current.append(escaped)
                    } else {
                        current.append(next)
                    }
                }
                if !closed { throw SplitError(description: "unterminated double quote") }
            case "\\":
                inWord = true
                guard let escaped = iterator.next() else {
                    throw SplitError(description: "a backslash at the end escapes nothing")
                }
                current.append(escaped)
            default:
                inWord = true
                current.append(char)
            }
        }
        if inWord { words.append(current) }
        return words
    }
}

/// The INI dialect of warren's config file.
///
/// - `[section]` headers; `[consumer.NAME]` carries a name after the dot.
/// - `key = value` lines; blanks around keys and values are dropped.
/// - Comments: a line whose first non-blank is `;` or `#`, or the rest of a
///   line from a `;` or `#` that follows a blank and is outside quotes
///   (`url = amqp://h/%2f ; primary` keeps `amqp://h/%2f`), after a section
///   header too (`[broker] ; production`).
/// - Control characters other than tab are an error: a NUL would cut a
///   value short where it reaches C.
/// - Quotes are kept in the value: `'...'` and `"..."` protect blanks, `;`
///   and `#`; readers strip one pair around a whole value, and `command`
///   splits on them like a shell would.
/// - A key given twice in one section, or a section given twice, is an
///   error: it is almost always a mistake, and "last one wins" hides it.
/// - No line continuations, no includes, no interpolation.
public struct INIFile: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: String
        public var line: Int
    }

    public struct Section: Sendable, Equatable {
        public var name: String
        public var line: Int
        public var entries: [Entry]

        public func entry(_ key: String) -> Entry? { entries.first { $0.key == key } }
    }

    public var sections: [Section]

    public func section(_ name: String) -> Section? { sections.first { $0.name == name } }
}

/// A problem at a place in the config: printed as `file:line: message`.
public struct ConfigProblem: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file, or `environment` for a `WARREN_*` override.
    public var file: String
    public var line: Int
    public var message: String

    /// `message` may quote text from the config; whatever follows a `://`
    /// there is masked up to the next blank, so no message can carry a
    /// password, however mangled the URL or wherever it was put.
    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = Self.maskingURLs(message)
    }

    public var description: String { "\(file):\(line): \(message)" }

    static func maskingURLs(_ text: String) -> String {
        var rest = Substring(text)
        var out = ""
        while let separator = rest.firstRange(of: "://") {
            out += rest[..<separator.upperBound]
            rest = rest[separator.upperBound...]
            let end = rest.firstIndex { $0 == " " || $0 == "\t" } ?? rest.endIndex
            let token = rest[..<end]
            if !token.isEmpty {
                out += "***"
                if let last = token.last, last == "'" || last == "\"" { out.append(last) }
            }
            rest = rest[end...]
        }
        return out + rest
    }
}

public enum INIParser {
    /// One pass over the text: duplicate sections and keys are found by
    /// hashing, never by scanning what came before, so the cost grows with
    /// the file's size, not its square.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> INIFile {
        var sections: [INIFile.Section] = []
        var sectionLines: [String: Int] = [:]
        var keyLines: [String: Int] = [:]
        var problems: [ConfigProblem] = []
        var lineNumber = 0
        var body = Substring(text)
        if body.hasPrefix("\u{FEFF}") { body = body.dropFirst() }
        // "\r\n" is one Character in Swift, so both endings are separators.
        for line in body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            // A NUL would cut a value short where it reaches C; the others
            // are never meant and would garble the messages that quote them.
            if let control = line.unicodeScalars.first(where: isForbiddenControl) {
                problems.append(ConfigProblem(file: file, line: lineNumber, message:
                    "control character \(codePoint(control)) in the line; remove it (only tab is allowed)"))
                continue
            }
            let trimmed = line.trimmingBlanks()
            if trimmed.isEmpty || trimmed.hasPrefix(";") || trimmed.hasPrefix("#") { continue }

            if trimmed.hasPrefix("[") {
                let header = stripComment(trimmed).trimmingBlanks()
                guard header.hasSuffix("]") else {
                    let what = header.contains("]")
                        ? "has text after the closing ']' (a comment there needs a blank before its ';' or '#')"
                        : "has no closing ']'"
                    problems.append(ConfigProblem(file: file, line: lineNumber, message: "section header \(quoted(trimmed)) \(what)"))
                    continue
                }
                let name = String(header.dropFirst().dropLast().trimmingBlanks())
                if name.isEmpty {
                    problems.append(ConfigProblem(file: file, line: lineNumber, message: "empty section name '[]'"))
                    continue
                }
                if let first = sectionLines[name] {
                    problems.append(ConfigProblem(file: file, line: lineNumber,
                                                  message: "section [\(name)] appears twice (first at line \(first)); merge them"))
                    // Read on, so the lines below are still checked.
                } else {
                    sectionLines[name] = lineNumber
                }
                sections.append(INIFile.Section(name: name, line: lineNumber, entries: []))
                keyLines = [:]
                continue
            }

            guard let equals = trimmed.firstIndex(of: "=") else {
                problems.append(ConfigProblem(file: file, line: lineNumber,
                                              message: "expected 'key = value' or '[section]', found \(quoted(trimmed))"))
                continue
            }
            let key = String(trimmed[..<equals].trimmingBlanks())
            let value = String(stripComment(trimmed[trimmed.index(after: equals)...]).trimmingBlanks())
            guard !key.isEmpty else {
                problems.append(ConfigProblem(file: file, line: lineNumber, message: "a value without a key"))
                continue
            }
            guard !sections.isEmpty else {
                problems.append(ConfigProblem(file: file, line: lineNumber,
                                              message: "\(quoted(key[...])) comes before any [section]; put it under [broker], [shutdown], [consumer.NAME], [metrics] or [log]"))
                continue
            }
            if let first = keyLines[key] {
                problems.append(ConfigProblem(file: file, line: lineNumber,
                                              message: "\(quoted(key[...])) is set twice in [\(sections[sections.count - 1].name)] (first at line \(first)); keep one"))
                continue
            }
            keyLines[key] = lineNumber
            sections[sections.count - 1].entries.append(INIFile.Entry(key: key, value: value, line: lineNumber))
        }
        if !problems.isEmpty { throw ConfigErrors(problems) }
        return INIFile(sections: sections)
    }

    /// Text from the file for a message: quoted, and cut short so one huge
    /// line cannot flood the log.
    static func quoted(_ text: Substring) -> String {
        text.count <= 80 ? "'\(text)'" : "'\(text.prefix(80))...'"
    }

    /// The C0 and C1 controls (Unicode category Cc) except tab.
    static func isForbiddenControl(_ scalar: Unicode.Scalar) -> Bool {
        (scalar.value < 0x20 && scalar != "\t") || (0x7F...0x9F).contains(scalar.value)
    }

    static func codePoint(_ scalar: Unicode.Scalar) -> String {
        let hex = String(scalar.value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }

    /// Cuts a comment that starts with `;` or `#` after a blank, outside quotes.
    static func stripComment(_ text: Substring) -> Substring {
        var quote: Character? = nil
        var previous: Character = " "
        var index = text.startIndex
        while index < text.endIndex {
            let char = text[index]
            if let open = quote {
                if char == open { quote = nil }
            } else if char == "'" || char == "\"" {
                quote = char
            } else if (char == ";" || char == "#") && (previous == " " || previous == "\t") {
                return text[..<index]
            }
            previous = char
            index = text.index(after: index)
        }
        return text
    }
}

/// One or more config problems; the config is not used.
public struct ConfigErrors: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [ConfigProblem]

    public init(_ problems: [ConfigProblem]) { self.problems = problems }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

extension Substring {
    func trimmingBlanks() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }
}

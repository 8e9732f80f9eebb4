/// The INI dialect of warren's config file.
///
/// - `[section]` headers; `[consumer.NAME]` carries a name after the dot.
/// - `key = value` lines; blanks around keys and values are dropped.
/// - Comments: a line whose first non-blank is `;` or `#`, or the rest of a
///   line from a `;` or `#` that follows a blank and is outside quotes
///   (`url = amqp://h/%2f ; primary` keeps `amqp://h/%2f`).
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

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { "\(file):\(line): \(message)" }
}

public enum INIParser {
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> INIFile {
        var sections: [INIFile.Section] = []
        var problems: [ConfigProblem] = []
        var lineNumber = 0
        var body = Substring(text)
        if body.hasPrefix("\u{FEFF}") { body = body.dropFirst() }
        // "\r\n" is one Character in Swift, so both endings are separators.
        for line in body.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            let trimmed = line.trimmingBlanks()
            if trimmed.isEmpty || trimmed.hasPrefix(";") || trimmed.hasPrefix("#") { continue }

            if trimmed.hasPrefix("[") {
                let header = stripComment(trimmed)
                guard header.hasSuffix("]") else {
                    problems.append(ConfigProblem(file: file, line: lineNumber,
                                                  message: "section header '\(trimmed)' has no closing ']'"))
                    continue
                }
                let name = String(header.dropFirst().dropLast().trimmingBlanks())
                if name.isEmpty {
                    problems.append(ConfigProblem(file: file, line: lineNumber, message: "empty section name '[]'"))
                    continue
                }
                if let first = sections.first(where: { $0.name == name }) {
                    problems.append(ConfigProblem(file: file, line: lineNumber,
                                                  message: "section [\(name)] appears twice (first at line \(first.line)); merge them"))
                    // Read on, so the lines below are still checked.
                }
                sections.append(INIFile.Section(name: name, line: lineNumber, entries: []))
                continue
            }

            guard let equals = trimmed.firstIndex(of: "=") else {
                problems.append(ConfigProblem(file: file, line: lineNumber,
                                              message: "expected 'key = value' or '[section]', found '\(trimmed)'"))
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
                                              message: "'\(key)' comes before any [section]; put it under [broker], [shutdown], [consumer.NAME], [metrics] or [log]"))
                continue
            }
            if let first = sections[sections.count - 1].entry(key) {
                problems.append(ConfigProblem(file: file, line: lineNumber,
                                              message: "'\(key)' is set twice in [\(sections[sections.count - 1].name)] (first at line \(first.line)); keep one"))
                continue
            }
            sections[sections.count - 1].entries.append(INIFile.Entry(key: key, value: value, line: lineNumber))
        }
        if !problems.isEmpty { throw ConfigErrors(problems) }
        return INIFile(sections: sections)
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

/// RabbitMQ's refusal to declare a queue or exchange that exists with
/// other arguments (`406 PRECONDITION_FAILED - inequivalent arg ...`),
/// taken apart so warren can say which argument, both values, which config
/// key sets it and the way out, instead of passing the broker's sentence on.
///
/// The broker's texts (RabbitMQ 3.10):
/// `inequivalent arg 'x-max-priority' for queue 'q' in vhost '/': received the value '10' of type 'long' but current is the value '5' of type 'long'`,
/// `... received the value '' of type 'longstr' but current is none`,
/// `inequivalent arg 'type' for exchange 'e' in vhost '/': received 'topic' but current is 'direct'`.
struct InequivalentArgument: Sendable, Equatable {
    /// `x-max-priority`, `type`, `durable` ...
    var argument: String
    /// `queue` or `exchange`.
    var kind: String
    var name: String
    /// What warren sent, and what the broker has; `none` when absent.
    var declared: String
    var existing: String
    /// The AMQP type the broker named for its value (`bool`, `longstr`, `long` ...), when it named one.
    var existingType: String?

    init(argument: String, kind: String, name: String, declared: String, existing: String, existingType: String? = nil) {
        self.argument = argument
        self.kind = kind
        self.name = name
        self.declared = declared
        self.existing = existing
        self.existingType = existingType
    }

    /// nil when the text is not an inequivalent-argument refusal.
    init?(replyText text: String) {
        guard let start = text.firstRange(of: "inequivalent arg '") else { return nil }
        var rest = text[start.upperBound...]
        guard let argumentEnd = rest.firstIndex(of: "'") else { return nil }
        argument = String(rest[..<argumentEnd])
        rest = rest[rest.index(after: argumentEnd)...]
        guard let forRange = rest.firstRange(of: " for ") else { return nil }
        rest = rest[forRange.upperBound...]
        guard let space = rest.firstIndex(of: " ") else { return nil }
        kind = String(rest[..<space])
        rest = rest[rest.index(after: space)...]
        guard rest.first == "'", let nameEnd = rest.firstRange(of: "' in vhost '") else { return nil }
        name = String(rest[rest.index(after: rest.startIndex)..<nameEnd.lowerBound])
        guard let received = rest.firstRange(of: ": received "), let current = rest.firstRange(of: " but current is ") else { return nil }
        declared = Self.value(rest[received.upperBound..<current.lowerBound])
        existing = Self.value(rest[current.upperBound...])
        existingType = Self.type(rest[current.upperBound...])
    }

    /// `the value '10' of type 'long'` -> `long`.
    static func type(_ text: Substring) -> String? {
        guard let type = text.ranges(of: "' of type '").last else { return nil }
        let rest = text[type.upperBound...]
        guard rest.last == "'" else { return nil }
        return String(rest.dropLast())
    }

    /// `the value '10' of type 'long'` -> `10`; `'topic'` -> `topic`; `none` stays.
    static func value(_ text: Substring) -> String {
        var text = text
        if text.hasPrefix("the value ") { text = text.dropFirst("the value ".count) }
        if let type = text.ranges(of: "' of type '").last {
            text = text[..<type.lowerBound].drop(while: { $0 == "'" })
        } else if text.count >= 2, text.first == "'", text.last == "'" {
            text = text.dropFirst().dropLast()
        }
        return text.isEmpty ? "''" : String(text)
    }
}

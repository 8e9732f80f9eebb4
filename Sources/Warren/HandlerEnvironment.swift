import AMQP
import Glibc

/// The environment of a handler command: warren's own, plus `WARREN_*`
/// variables describing the message (the contract in README).
enum HandlerEnvironment {
    /// warren's own environment, read once.
    static let inherited: [String] = readEnvironment()

    private static func readEnvironment() -> [String] {
        var result: [String] = []
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            // Per-message names are always set fresh, never inherited.
            if !isPerMessage(text) { result.append(text) }
            index += 1
        }
        return result
    }

    private static func isPerMessage(_ entry: String) -> Bool {
        let perMessage = ["WARREN_QUEUE=", "WARREN_EXCHANGE=", "WARREN_ROUTING_KEY=", "WARREN_MESSAGE_ID=",
                          "WARREN_CORRELATION_ID=", "WARREN_CONTENT_TYPE=", "WARREN_REDELIVERED=", "WARREN_ATTEMPT=",
                          "WARREN_HEADER_", "WARREN_DELIVERY_COUNT=", "TRACEPARENT="]
        return perMessage.contains { entry.hasPrefix($0) }
    }

    static func forMessage(_ message: Message) -> [String] {
        let delivery = message.delivery
        let properties = delivery.properties
        var env = inherited
        env.reserveCapacity(env.count + 12)
        env.append("WARREN_QUEUE=\(message.queue)")
        // A retried message arrives from its delay queue: show where it first came from.
        let headers = properties.headers
        env.append("WARREN_EXCHANGE=\(clean(headers?["x-warren-exchange"]?.stringValue ?? delivery.exchange))")
        env.append("WARREN_ROUTING_KEY=\(clean(headers?["x-warren-routing-key"]?.stringValue ?? delivery.routingKey))")
        if let count = headers?["x-delivery-count"]?.integerValue { env.append("WARREN_DELIVERY_COUNT=\(count)") }
        env.append("WARREN_MESSAGE_ID=\(clean(properties.messageId ?? ""))")
        env.append("WARREN_CORRELATION_ID=\(clean(properties.correlationId ?? ""))")
        env.append("WARREN_CONTENT_TYPE=\(clean(properties.contentType ?? ""))")
        env.append("WARREN_REDELIVERED=\(delivery.redelivered ? 1 : 0)")
        env.append("WARREN_ATTEMPT=\(message.attempt)")
        if let headers = properties.headers {
            for (key, value) in headers.entries {
                guard let text = value.stringValue else { continue }
                if key.lowercased() == "traceparent" { env.append("TRACEPARENT=\(clean(text))") }
                env.append("WARREN_HEADER_\(headerName(key))=\(clean(text))")
            }
        }
        return env
    }

    /// `x-trace-id` -> `X_TRACE_ID`: upper-cased, every non-alphanumeric as `_`.
    static func headerName(_ key: String) -> String {
        String(key.unicodeScalars.map { scalar -> Character in
            scalar.isASCII && (("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar))
                ? Character(String(scalar).uppercased()) : "_"
        })
    }

    /// Environment values cannot hold NUL bytes; a hostile header must not truncate or break the spawn.
    private static func clean(_ text: String) -> String {
        text.contains("\0") ? text.replacingOccurrences(of: "\0", with: "") : text
    }
}

private extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

import AMQP
import Glibc

/// The environment of a handler command: warren's own, less what belongs
/// to warren alone, plus `WARREN_*` variables describing the message (the
/// contract in README).
enum HandlerEnvironment {
    /// warren's own environment, read once, less what handlers must not see.
    static let inherited: [String] = inheritable(ProcessEnvironment.entries())

    /// warren's environment as a handler inherits it, in its order, without:
    /// - every `WARREN_*` variable: warren's configuration overrides
    ///   (`WARREN_BROKER_URL` carries the broker password, and a handler that
    ///   prints its environment would put it in the log) and stale copies of
    ///   the per-message names, which are set fresh for every message;
    /// - `TRACEPARENT`: per message too;
    /// - what systemd tells warren about itself: `NOTIFY_SOCKET` and
    ///   `WATCHDOG_*` (a handler could report ready, stopping or alive in
    ///   warren's name), `LISTEN_*` (sockets handed to warren),
    ///   `CREDENTIALS_DIRECTORY` (where its secrets are) and
    ///   `JOURNAL_STREAM` (names warren's stderr; a handler's stderr is a
    ///   pipe to warren, which prefixes the lines itself).
    static func inheritable(_ entries: [String]) -> [String] {
        entries.filter { entry in
            let name = entry.prefix { $0 != "=" }
            return !name.hasPrefix("WARREN_") && !withheld.contains(name)
        }
    }

    private static let withheld: Set<Substring> = [
        "TRACEPARENT", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
        "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM",
    ]

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

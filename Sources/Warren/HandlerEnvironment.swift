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

    /// The most one `WARREN_HEADER_*` variable (or `TRACEPARENT`) may take,
    /// name and value: half the kernel's limit for one string (128 KiB,
    /// `MAX_ARG_STRLEN`), past which `posix_spawn` fails with E2BIG.
    static let headerVariableLimit = 64 * 1024
    /// The most all header variables together may take, each counted as
    /// the kernel counts it (its bytes, its NUL, its pointer): an eighth of
    /// the usual limit for arguments and environment together (2 MB with an
    /// 8 MB stack), leaving the rest to warren's own environment.
    static let headerBudget = 256 * 1024

    /// The variables for one message, and the headers left out of them
    /// because they did not fit the budget (in table order; they are still
    /// in the envelope). Every value is the text as it is, except that NUL
    /// bytes, which no environment value can hold, are dropped, and bytes
    /// that are not UTF-8 read as U+FFFD; other control characters stay.
    static func forMessage(_ message: Message) -> (variables: [String], skippedHeaders: [String]) {
        let delivery = message.delivery
        let properties = delivery.properties
        var env = inherited
        env.reserveCapacity(env.count + 24 + (properties.headers?.entries.count ?? 0))
        env.append("WARREN_QUEUE=\(message.queue)")
        env.append("WARREN_CONSUMER=\(clean(message.consumer))")
        // A retried message arrives from its delay queue: show where it first came from.
        let origin = message.origin
        env.append("WARREN_EXCHANGE=\(clean(origin.exchange))")
        env.append("WARREN_ROUTING_KEY=\(clean(origin.routingKey))")
        let headers = properties.headers
        if let count = headers?["x-delivery-count"]?.integerValue { env.append("WARREN_DELIVERY_COUNT=\(count)") }
        env.append("WARREN_MESSAGE_ID=\(clean(properties.messageId ?? ""))")
        env.append("WARREN_CORRELATION_ID=\(clean(properties.correlationId ?? ""))")
        env.append("WARREN_REPLY_TO=\(clean(properties.replyTo ?? ""))")
        env.append("WARREN_CONTENT_TYPE=\(clean(properties.contentType ?? ""))")
        env.append("WARREN_CONTENT_ENCODING=\(clean(properties.contentEncoding ?? ""))")
        env.append("WARREN_DELIVERY_MODE=\(properties.deliveryMode.map { "\($0)" } ?? "")")
        env.append("WARREN_PRIORITY=\(properties.priority.map { "\($0)" } ?? "")")
        env.append("WARREN_EXPIRATION=\(clean(properties.expiration ?? ""))")
        env.append("WARREN_TIMESTAMP=\(properties.timestamp.map { "\($0)" } ?? "")")
        env.append("WARREN_TYPE=\(clean(properties.type ?? ""))")
        env.append("WARREN_USER_ID=\(clean(properties.userId ?? ""))")
        env.append("WARREN_APP_ID=\(clean(properties.appId ?? ""))")
        env.append("WARREN_REDELIVERED=\(delivery.redelivered ? 1 : 0)")
        env.append("WARREN_ATTEMPT=\(message.attempt)")
        var skipped: [String] = []
        if let headers, !headers.isEmpty {
            var budget = headerBudget
            // Sized before it is built: a megabyte header is measured, not copied.
            func add(_ name: String, _ text: String, for key: String) {
                let size = name.utf8.count + 1 + text.utf8.count
                let cost = size + 1 + MemoryLayout<UnsafePointer<CChar>>.size
                guard size <= headerVariableLimit, cost <= budget else {
                    if skipped.last != key { skipped.append(key) }
                    return
                }
                budget -= cost
                env.append("\(name)=\(text)")
            }
            for (key, value) in lastOfEachName(headers) {
                let text = clean(value)
                if key.lowercased() == "traceparent", case .string = value { add("TRACEPARENT", text, for: key) }
                add("WARREN_HEADER_\(headerName(key))", text, for: key)
            }
        }
        return (env, skipped)
    }

    /// The headers in table order, less those whose variable name a later
    /// header takes too (`x-a` and `X_A` are both `WARREN_HEADER_X_A`): the
    /// last one wins, as it does when warren reads a header by name.
    private static func lastOfEachName(_ headers: FieldTable) -> [(key: String, value: FieldValue)] {
        var seen = Set<String>()
        var kept: [(key: String, value: FieldValue)] = []
        for entry in headers.entries.reversed() where seen.insert(headerName(entry.key)).inserted {
            kept.append(entry)
        }
        return kept.reversed()
    }

    /// A string header as its text; any other as compact JSON, written as
    /// in the envelope (`JSONWriter`).
    private static func clean(_ value: FieldValue) -> String {
        if case .string(let bytes) = value { return withoutNUL(String(decoding: bytes, as: UTF8.self)) }
        return JSONWriter.text(of: value)
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
        // Short strings hold bytes that are not UTF-8 as escapes (see `ShortStringBytes`).
        withoutNUL(ShortStringBytes.displayed(text))
    }

    private static func withoutNUL(_ text: String) -> String {
        text.contains("\0") ? text.replacingOccurrences(of: "\0", with: "") : text
    }
}

private extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

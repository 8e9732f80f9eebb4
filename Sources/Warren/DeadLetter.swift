public import AMQP

/// One message in a dead-letter queue, read back with the reasons warren
/// wrote on it (the `x-warren-*` headers of `Consumer.deadLetter`): what
/// `warren dlq list` and `show` print, and what `replay` republishes.
///
/// Header values come from the queue, so from anyone who can publish to
/// it: each is taken only when it has the type warren writes, and names
/// (queue, exchange, routing key) only when they fit an AMQP short string.
/// A dead letter the broker made itself (a quorum queue's
/// `delivery_limit`, `max_length` with `reject-publish-dlx`) carries no
/// `x-warren-*` header: its reason and queue come from `x-first-death-*`.
public struct DeadLetter: Sendable {
    public let delivery: Delivery
    /// 1 for the first message read from the queue (the head), and so on.
    public let position: Int

    public init(delivery: Delivery, position: Int) {
        self.delivery = delivery
        self.position = position
    }

    private var headers: FieldTable? { delivery.properties.headers }
    private func text(_ key: String) -> String? { headers?[key]?.stringValue }
    private func name(_ key: String) -> String? {
        guard let value = text(key), value.utf8.count <= 255 else { return nil }
        return value
    }

    /// The producer's `message_id`; nil when the message has none.
    public var id: String? { delivery.properties.messageId }

    /// Why it was dead-lettered: warren's `x-warren-reason`, or the
    /// broker's own reason (`broker: delivery_limit`, `broker: maxlen`...).
    public var reason: String? {
        if let reason = text("x-warren-reason") { return reason }
        return text("x-first-death-reason").map { "broker: \($0)" }
    }

    public var exitCode: Int32? { int32("x-warren-exit-code") }
    public var signal: Int32? { int32("x-warren-signal") }
    public var timedOut: Bool {
        if case .bool(true)? = headers?["x-warren-timed-out"] { return true }
        return false
    }

    private func int32(_ key: String) -> Int32? {
        guard let value = headers?[key]?.integerValue else { return nil }
        return Int32(exactly: value)
    }

    /// The attempts the message had (`x-warren-attempts`).
    public var attempts: Int? {
        guard let value = headers?["x-warren-attempts"]?.integerValue, value >= 0, value < 1_000_000_000 else { return nil }
        return Int(value)
    }

    /// When warren dead-lettered it, seconds since 1970 (UTC).
    public var deadLetteredAt: UInt64? {
        switch headers?["x-warren-dead-lettered-at"] {
        case .timestamp(let seconds)?: seconds
        case let value?: value.integerValue.flatMap { UInt64(exactly: $0) }
        case nil: nil
        }
    }

    /// The `[consumer.NAME]` that dead-lettered it.
    public var consumer: String? { text("x-warren-consumer") }

    /// The queue it was consumed from: where `replay` sends it back.
    public var queue: String? { name("x-warren-queue") ?? name("x-first-death-queue") }

    /// The exchange and routing key it was first published with (kept
    /// through retries in `x-warren-exchange`, `x-warren-routing-key`).
    public var origin: (exchange: String, routingKey: String)? {
        guard let exchange = name("x-warren-exchange"), let routingKey = name("x-warren-routing-key") else { return nil }
        return (exchange, routingKey)
    }

    /// The handler's last line on stderr.
    public var lastStderr: String? { text("x-warren-last-stderr") }

    /// What the failure was, in a few words: `exit 65`, `signal 9`,
    /// `timeout`, or nil (a refusal such as `body too large`).
    public var failure: String? {
        if timedOut { return "timeout" }
        if let signal { return "signal \(signal)" }
        if let exitCode { return "exit \(exitCode)" }
        return nil
    }

    // MARK: Replay

    /// The queue `replay` publishes to (through the default exchange): the
    /// one the message was consumed from, or `fallback` (the consumer's
    /// queue) for a dead letter that does not say.
    ///
    /// Not the exchange it was first published to: that exchange may route
    /// to other queues as well, whose consumers handled the message
    /// already and would get it a second time.
    public func replayQueue(fallback: String) -> String { queue ?? fallback }

    /// The properties of the replayed copy: the original's, with warren's
    /// dead-letter and retry headers removed, so it starts again at attempt
    /// 1 (`x-warren-attempt` and the broker's `x-delivery-count` gone). Two
    /// are kept: `x-warren-exchange` and `x-warren-routing-key`, where it
    /// was first published, which the handler keeps seeing as
    /// `WARREN_EXCHANGE` and `WARREN_ROUTING_KEY`, though the copy comes
    /// through the default exchange. The producer's TTL is not restored
    /// (`x-warren-original-expiration`): it ran out long ago.
    public var replayProperties: MessageProperties {
        var properties = delivery.properties
        guard var table = properties.headers else { return properties }
        let origin = self.origin
        table.entries.removeAll { $0.key.hasPrefix("x-warren-") || $0.key == "x-delivery-count" }
        if let origin {
            table["x-warren-exchange"] = .string(origin.exchange)
            table["x-warren-routing-key"] = .string(origin.routingKey)
        }
        properties.headers = table.isEmpty ? nil : table
        return properties
    }
}

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
/// `x-warren-*` header: its reason and queue come from the broker's last
/// death (`x-last-death-*`, or the newest `x-death` entry), not the first:
/// a message that went through a retry first died of its TTL in a delay
/// queue (`<queue>.retry.N`, reason `expired`), which is how every retry
/// returns, not why it is a dead letter.
///
/// A dead letter keeps only what is printed: its properties, its body's
/// size and at most `keepingBody` bytes of the body (none for `list`, a
/// preview for `show`), so reading a queue of big messages does not hold
/// their bodies.
public struct DeadLetter: Sendable {
    /// The delivery, its body cut to the bytes kept (see `bodySize`).
    public let delivery: Delivery
    /// 1 for the first message read from the queue (the head), and so on.
    public let position: Int
    /// The whole body's size, in bytes.
    public let bodySize: Int

    public init(delivery: Delivery, position: Int, keepingBody kept: Int = Int.max) {
        bodySize = delivery.payload.count
        if bodySize > kept {
            let prefix = delivery.payload.withUnsafeBytes { Array($0.prefix(max(0, kept))) }
            self.delivery = Delivery(channel: delivery.channel, deliveryTag: delivery.deliveryTag, consumerTag: delivery.consumerTag,
                                     exchange: delivery.exchange, routingKey: delivery.routingKey,
                                     redelivered: delivery.redelivered, properties: delivery.properties, body: prefix)
        } else {
            self.delivery = delivery
        }
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
        return lastDeath("reason").map { "broker: \($0)" }
    }

    /// A field of the broker's last dead-lettering: `x-last-death-*`
    /// (RabbitMQ 3.13 and later), else the newest `x-death` entry (the
    /// broker keeps them newest first), else `x-first-death-*`.
    private func lastDeath(_ field: String) -> String? {
        if let value = text("x-last-death-\(field)") { return value }
        if case .array(let deaths)? = headers?["x-death"], case .table(let newest)? = deaths.first {
            return newest[field]?.stringValue
        }
        return text("x-first-death-\(field)")
    }

    /// The consumer's queue for one of its delay queues (`<queue>.retry.N`,
    /// N a number), whose dead letters it made; any other name as it is.
    static func consumedQueue(_ name: String) -> String {
        guard let range = name.ranges(of: ".retry.").last else { return name }
        let level = name[range.upperBound...]
        guard !level.isEmpty, level.allSatisfy({ $0.isASCII && $0.isNumber }), range.lowerBound > name.startIndex else { return name }
        return String(name[..<range.lowerBound])
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
    public var queue: String? {
        if let queue = name("x-warren-queue") { return queue }
        guard let queue = lastDeath("queue"), queue.utf8.count <= 255 else { return nil }
        return Self.consumedQueue(queue)
    }

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
    /// (`x-warren-original-expiration`): it ran out long ago. The copy is
    /// persistent (delivery mode 2).
    public var replayProperties: MessageProperties {
        var properties = delivery.properties
        // Persistent whatever the dead letter was: a transient copy in a
        // classic queue would not survive a broker restart, and the dead
        // letter it replaces is gone by then.
        properties.deliveryMode = 2
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

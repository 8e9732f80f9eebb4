import Warren

/// The topology keys of a `[consumer.NAME]` (README, "Topology"), and the
/// broker's acknowledgement timeout checked against each consumer.
extension Reader {
    struct TopologyValues {
        var exchange: String?
        var exchangeType = ExchangeType.direct
        var routingKeys: [String]?
        var consumerPriority: Int32?
        var exclusive = false
        var singleActiveConsumer = false
        var maxPriority: Int?
        var maxLength: Int?
        var overflow: Overflow?
        var deliveryLimit: Int?
    }

    /// Reads them, refusing combinations the broker would refuse later or
    /// that would be silently ignored (a queue argument with `declare =
    /// false` is never sent: the queue is only checked).
    mutating func topology(_ values: [String: Located], queueType: QueueType, declare: Bool) -> TopologyValues {
        var t = TopologyValues()
        t.exchange = string(values["exchange"])
        if let name = t.exchange, name.utf8.count > 255, let at = values["exchange"] {
            problem(at, "exchange name is longer than 255 bytes")
        }
        t.exchangeType = choice(values["exchange_type"], ExchangeType.self) ?? t.exchangeType
        if let at = values["routing_keys"], let text = nonEmpty(at) {
            let keys = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if let long = keys.first(where: { $0.utf8.count > 255 }) {
                problem(at, "routing key '\(long.prefix(40))...' is longer than 255 bytes")
            }
            t.routingKeys = keys
        }
        for key in ["exchange_type", "routing_keys"] {
            guard let at = values[key] else { continue }
            if values["exchange"] == nil {
                problem(at, "\(key) needs exchange: name the exchange to bind the queue to")
            } else if !declare {
                problem(at, "\(key) is used when warren declares the exchange and binds the queue, and declare = false: "
                    + "bind the queue where the exchange is declared and remove \(key), or set declare = true")
            }
        }
        if values["consumer_priority"] != nil,
           let priority = integer(values["consumer_priority"], default: 0, range: Int(Int32.min)...Int(Int32.max)) {
            t.consumerPriority = Int32(priority)
        }
        t.exclusive = boolean(values["exclusive"], default: false)
        t.singleActiveConsumer = boolean(values["single_active_consumer"], default: false)
        if values["max_priority"] != nil {
            t.maxPriority = integer(values["max_priority"], default: 0, range: 1...255)
        }
        if values["max_length"] != nil {
            t.maxLength = integer(values["max_length"], default: 0, range: 1...1_000_000_000)
        }
        t.overflow = choice(values["overflow"], Overflow.self)
        if values["delivery_limit"] != nil {
            t.deliveryLimit = integer(values["delivery_limit"], default: 0, range: 1...1_000_000)
        }
        if let at = values["overflow"], values["max_length"] == nil {
            problem(at, "overflow needs max_length: it says what a full queue does")
        }
        if let at = values["max_priority"], queueType == .quorum {
            problem(at, "max_priority needs queue_type = classic: RabbitMQ's quorum queues take no x-max-priority")
        }
        if let at = values["delivery_limit"], queueType != .quorum {
            problem(at, "delivery_limit needs queue_type = quorum: classic queues do not count deliveries")
        }
        if let at = values["overflow"], queueType != .quorum, t.overflow == .rejectPublish {
            // Verified on RabbitMQ 3.10: a full classic queue drops the copy a
            // delay queue dead-letters back into it, with no trace.
            problem(at, "overflow = reject-publish on a classic queue silently drops retried messages when the queue "
                + "is full (the delay queue's copy is refused with no one told): use reject-publish-dlx, which "
                + "dead-letters them instead")
        }
        if let at = values["overflow"], queueType == .quorum, t.overflow == .rejectPublishDLX {
            problem(at, "quorum queues take overflow = drop-head or reject-publish, not reject-publish-dlx")
        }
        if !declare {
            for key in ["single_active_consumer", "max_priority", "max_length", "overflow", "delivery_limit"] {
                guard let at = values[key] else { continue }
                problem(at, "\(key) is a queue argument, sent only when warren declares the queue, and declare = false: "
                    + "set it where the queue is declared and remove it here, or set declare = true")
            }
        }
        return t
    }

    /// Refuses a consumer that could hold a message unacked past the
    /// broker's `consumer_timeout` (see `AckTimeoutRule`), at the line most
    /// likely to be changed: `timeout`, else `prefetch`, else the section.
    mutating func checkAckTimeout(_ consumer: ConsumerSettings, _ values: [String: Located], line: Int,
                                  shutdown: ShutdownSettings, broker: BrokerSettings) {
        let rule = AckTimeoutRule(consumer, shutdown: shutdown)
        guard let message = rule.problem(consumer, consumerTimeout: broker.consumerTimeout) else { return }
        let at = values["timeout"] ?? values["prefetch"] ?? values["concurrency"]
            ?? Located(value: "", file: file, line: line)
        problem(at, "[consumer.\(consumer.name)]: \(message)")
    }
}

import AMQP
import Logging

/// What one consumer needs on the broker: its queue (with the arguments the
/// config asks for), the exchange it is bound to, its delay queues and its
/// dead-letter queue. `declare = true` creates them; otherwise they are
/// checked, naming the one that is missing.
struct Topology: Sendable {
    let consumer: ConsumerSettings
    let policy: RetryPolicy

    init(_ consumer: ConsumerSettings) {
        self.consumer = consumer
        self.policy = RetryPolicy(consumer)
    }

    func retryQueue(level: Int) -> String { "\(consumer.queue).retry.\(level)" }

    /// Delay queue `level`: messages wait `delay(level)` there, then the
    /// broker dead-letters them back to the consumer's queue.
    func retryArguments(level: Int) -> FieldTable {
        FieldTable([
            ("x-message-ttl", .int64(policy.delay(level: level).milliseconds)),
            ("x-dead-letter-exchange", .string("")),
            ("x-dead-letter-routing-key", .string(consumer.queue)),
        ])
    }

    /// Whether the consumed queue gets a dead-letter route to the
    /// dead-letter queue: wherever the broker itself may discard a message.
    /// A quorum queue drops a message returned more than its delivery limit
    /// times (RabbitMQ 4 sets a limit of 20 on every quorum queue), and a
    /// queue with `max_length` drops or refuses what overflows; with the
    /// route the broker moves such a message to the dead-letter queue, with
    /// its reason in `x-death`, instead of losing it.
    var routesDeadLetters: Bool { consumer.queueType == .quorum || consumer.maxLength != nil }

    /// The consumed queue's arguments when warren declares it.
    var queueArguments: FieldTable {
        var arguments = FieldTable()
        if consumer.queueType == .quorum { arguments["x-queue-type"] = .string("quorum") }
        if routesDeadLetters {
            arguments["x-dead-letter-exchange"] = .string("")
            arguments["x-dead-letter-routing-key"] = .string(consumer.deadLetterQueue)
        }
        if consumer.singleActiveConsumer { arguments["x-single-active-consumer"] = .bool(true) }
        if let maxPriority = consumer.maxPriority { arguments["x-max-priority"] = .int64(Int64(maxPriority)) }
        if let maxLength = consumer.maxLength { arguments["x-max-length"] = .int64(Int64(maxLength)) }
        if let overflow = consumer.overflow { arguments["x-overflow"] = .string(overflow.rawValue) }
        if let limit = consumer.deliveryLimit { arguments["x-delivery-limit"] = .int64(Int64(limit)) }
        return arguments
    }

    /// The dead-letter queue's arguments when warren declares it: the
    /// consumer's queue type and, for a quorum queue on RabbitMQ 4, no
    /// delivery limit (see `BrokerVersion.deadLetterQueueArguments`).
    func deadLetterArguments(broker: BrokerVersion?) -> FieldTable {
        var arguments = FieldTable()
        let quorum = consumer.queueType == .quorum
        if quorum { arguments["x-queue-type"] = .string("quorum") }
        for (key, value) in BrokerVersion.deadLetterQueueArguments(quorum: quorum, broker: broker) {
            arguments[key] = value.map { .int64($0) }
        }
        return arguments
    }

    /// The consumer's `basic.consume` arguments.
    var consumeArguments: FieldTable {
        var arguments = FieldTable()
        if let priority = consumer.consumerPriority { arguments["x-priority"] = .int32(priority) }
        return arguments
    }

    /// One binding warren makes: the queue bound to an exchange with a key.
    struct Binding: Hashable, Sendable, CustomStringConvertible {
        let queue: String
        let exchange: String
        let routingKey: String

        var description: String { "queue '\(queue)' to exchange '\(exchange)' with key '\(routingKey)'" }
    }

    /// What a reload removes: bindings warren made for the previous config
    /// (its `declare = true` consumers) that no consumer of the new one asks
    /// for. Bindings of `declare = false` consumers were never warren's.
    static func retired(from previous: [ConsumerSettings], keeping current: [ConsumerSettings]) -> [Binding] {
        let kept = Set(current.flatMap { Topology($0).bindings })
        var seen = Set<Binding>()
        return previous.filter(\.declare).flatMap { Topology($0).bindings }
            .filter { !kept.contains($0) && seen.insert($0).inserted }
    }

    /// The bindings this consumer's config asks for, whether warren
    /// declares them (`declare = true`) or only relies on them.
    var bindings: [Binding] {
        guard let exchange = consumer.exchange else { return [] }
        return consumer.routingKeys.map { Binding(queue: consumer.queue, exchange: exchange, routingKey: $0) }
    }

    /// Declares the queues and the exchange, but binds nothing: a start or
    /// reload declares every consumer's first and binds only once all were
    /// accepted, so a refused one leaves no binding of the others behind
    /// (a refused reload must leave the broker as the running config has it).
    func declare(on connection: AMQPConnection, channel: UInt16, logger: Logger) async throws(AMQPError) {
        try await declareOne(consumer.queue, arguments: queueArguments, what: "the queue", connection, channel, logger)
        let deadLetterArguments = deadLetterArguments(broker: BrokerVersion(connection.serverVersion))
        try await besideTheQueue(connection, channel, logger) { () throws(AMQPError) in
            try await declareOne(consumer.deadLetterQueue, arguments: deadLetterArguments, what: "the dead-letter queue",
                                 connection, channel, logger)
        }
        for level in stride(from: 1, through: policy.levels, by: 1) {
            try await besideTheQueue(connection, channel, logger) { () throws(AMQPError) in
                try await declareOne(retryQueue(level: level), arguments: retryArguments(level: level),
                                     what: "delay queue \(level)", connection, channel, logger)
            }
        }
        if let exchange = consumer.exchange {
            try await declareExchange(exchange, connection, channel)
        }
    }

    /// Binds the queue with every routing key (after `declare`).
    func bind(on connection: AMQPConnection, channel: UInt16) async throws(AMQPError) {
        for binding in bindings {
            try await connection.bindQueue(binding.queue, to: binding.exchange, routingKey: binding.routingKey, on: channel)
        }
    }

    func check(on connection: AMQPConnection, channel: UInt16, logger: Logger) async throws(AMQPError) {
        var names = [(consumer.queue, "queue"), (consumer.deadLetterQueue, "dead-letter queue")]
        for level in stride(from: 1, through: policy.levels, by: 1) { names.append((retryQueue(level: level), "delay queue")) }
        for (index, (name, what)) in names.enumerated() {
            if index == 0 {
                try await checkOne(name, what: what, connection, channel)
            } else {
                try await besideTheQueue(connection, channel, logger) { () throws(AMQPError) in
                    try await checkOne(name, what: what, connection, channel)
                }
            }
        }
        if let exchange = consumer.exchange {
            do {
                try await connection.declareExchange(exchange, type: consumer.exchangeType.rawValue, on: channel, passive: true)
            } catch {
                throw missing(error, what: "exchange", name: exchange)
            }
        }
    }

    private func checkOne(_ name: String, what: String, _ connection: AMQPConnection, _ channel: UInt16) async throws(AMQPError) {
        do {
            try await connection.declareQueue(name, on: channel, passive: true)
        } catch {
            throw missing(error, what: what, name: name)
        }
    }

    /// A delay or dead-letter queue whose cluster node is down (a classic
    /// queue lives on one node) must not keep the consumer from its own
    /// queue, which may be a quorum queue served by the other nodes: its
    /// declare is skipped with a warning, the channel the broker closed for
    /// it is opened again, and a copy sent to it meanwhile is refused, so
    /// its original goes back to the queue (never acked, never lost).
    private func besideTheQueue(_ connection: AMQPConnection, _ channel: UInt16, _ logger: Logger,
                                _ body: () async throws(AMQPError) -> Void) async throws(AMQPError) {
        do {
            try await body()
        } catch {
            guard Self.isOnADownNode(error) else { throw error }
            logger.warning("a queue beside the consumer's is on a cluster node that is down: retries or dead letters to it are refused (their messages requeued) until the node is back; consuming meanwhile",
                           metadata: ["error": "\(error)"])
            try await connection.openChannel(channel, prefetch: consumer.prefetch)
        }
    }

    /// RabbitMQ's answer for a durable classic queue whose node is down:
    /// `404 NOT_FOUND - home node '...' of durable queue '...' is down or inaccessible`.
    static func isOnADownNode(_ error: AMQPError) -> Bool {
        error.replyCode == 404 && error.reason.contains("home node") && error.reason.contains("is down or inaccessible")
    }

    private func missing(_ error: AMQPError, what: String, name: String) -> AMQPError {
        guard error.replyCode == 404, !Self.isOnADownNode(error) else { return error }
        return AMQPError(.invalidArgument,
                         "\(what) '\(name)' of [consumer.\(consumer.name)] does not exist and declare = false: create it, or set declare = true",
                         replyCode: 404)
    }

    /// RabbitMQ's own exchanges (`amq.topic` ...) may not be declared, only
    /// checked: they always exist, with their type.
    private func declareExchange(_ name: String, _ connection: AMQPConnection, _ channel: UInt16) async throws(AMQPError) {
        do {
            try await connection.declareExchange(name, type: consumer.exchangeType.rawValue, on: channel,
                                                 passive: name.hasPrefix("amq."))
        } catch {
            // A mistyped amq.* name is checked, not declared: missing is a config error, not a wait.
            if name.hasPrefix("amq."), error.replyCode == 404, !Self.isOnADownNode(error) {
                throw AMQPError(.invalidArgument, "the exchange '\(name)' of [consumer.\(consumer.name)] does not exist, "
                                + "and names starting with amq. are RabbitMQ's own, which warren may not declare: check the name")
            }
            throw refusal(error, what: "the exchange", name: name)
        }
    }

    /// Declares one queue; an argument the broker holds with a value that
    /// means the same (see `EquivalentArgument`) is declared as the broker
    /// has it, with a warning, instead of refusing the start.
    private func declareOne(_ name: String, arguments: FieldTable, what: String,
                            _ connection: AMQPConnection, _ channel: UInt16, _ logger: Logger) async throws(AMQPError) {
        var arguments = arguments
        var settled: Set<String> = []
        while true {
            do {
                _ = try await connection.declareQueue(name, on: channel, durable: true, arguments: arguments)
                return
            } catch {
                // Each refusal names one argument; one settled already and refused again is a real difference.
                guard error.replyCode == 406, let refused = InequivalentArgument(replyText: error.reason),
                      !settled.contains(refused.argument),
                      let (settle, why) = EquivalentArgument.settling(refused, consumedQueue: what == "the queue",
                                                                      deadLetterQueue: what == "the dead-letter queue") else {
                    throw refusal(error, what: what, name: name)
                }
                settled.insert(refused.argument)
                logger.warning("\(what) '\(name)' exists with \(refused.argument) = \(refused.existing) where warren declares \(refused.argument) = \(refused.declared): \(why); declared as the broker has it")
                // The refusal closed the channel.
                try await connection.openChannel(channel, prefetch: consumer.prefetch)
                switch settle {
                case .adopt(let value): arguments[refused.argument] = value
                case .omit: arguments[refused.argument] = nil
                }
                if refused.argument == "x-dead-letter-exchange", !settled.contains("x-dead-letter-routing-key") {
                    // The queue's own route replaces warren's whole: a key of its
                    // own, if it has one, is the broker's to name next, in a
                    // refusal short enough to read (RabbitMQ cuts them at 255 bytes).
                    arguments["x-dead-letter-routing-key"] = nil
                }
            }
        }
    }

    /// A 406 from a declare: the queue or exchange exists with other
    /// arguments. RabbitMQ cannot change them in place, so the error names
    /// the argument, both values, the key that sets it, and the ways out.
    private func refusal(_ error: AMQPError, what: String, name: String) -> AMQPError {
        guard error.replyCode == 406 else { return error }
        let subject = "\(what) '\(name)' of [consumer.\(consumer.name)]"
        // Never advise deleting an exchange: others' bindings go with it,
        // and their messages become unroutable.
        let deleteIt = what == "the exchange"
            ? "declare it elsewhere as warren would (or ask whoever owns it)"
            : "delete the queue once it is empty (rabbitmqctl delete_queue \(name)) so warren declares it anew"
        guard let refused = InequivalentArgument(replyText: error.reason) else {
            return AMQPError(.inequivalentArguments,
                             "\(subject) exists with other arguments (\(error.reason)); RabbitMQ cannot change them in place: "
                                 + "\(deleteIt), or set declare = false", replyCode: 406)
        }
        return AMQPError(.inequivalentArguments,
                         "\(subject) exists with \(refused.argument) = \(refused.existing), but warren declares it with "
                             + "\(refused.argument) = \(refused.declared) (\(setBy(refused.argument, what: what))); "
                             + "RabbitMQ cannot change it in place: make the config match, or \(deleteIt), "
                             + "or set declare = false to use it as it is",
                         replyCode: 406)
    }

    /// The config key behind an argument warren sends.
    private func setBy(_ argument: String, what: String) -> String {
        switch argument {
        case "x-queue-type": return "queue_type"
        case "x-single-active-consumer": return "single_active_consumer"
        case "x-max-priority": return "max_priority"
        case "x-max-length": return "max_length"
        case "x-overflow": return "overflow"
        case "x-delivery-limit": return "delivery_limit"
        case "type": return "exchange_type"
        case "x-message-ttl": return "retry_delay and retry_delay_max"
        case "x-dead-letter-exchange", "x-dead-letter-routing-key":
            if what.hasPrefix("delay queue") { return "the route back to the queue" }
            return "the dead-letter route to dead_letter_queue that warren gives quorum queues and queues with max_length"
        default: return "warren does not set it: whoever declared the queue did"
        }
    }
}

import AMQP

/// The queues one consumer uses: its own, its delay queues and its
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

    func declare(on connection: AMQPConnection, channel: UInt16) async throws(AMQPError) {
        var queueArguments = FieldTable()
        if consumer.queueType == .quorum { queueArguments["x-queue-type"] = .string("quorum") }
        try await declareOne(consumer.queue, arguments: queueArguments, what: "the queue", connection, channel)
        try await declareOne(consumer.deadLetterQueue, arguments: queueArguments, what: "the dead-letter queue", connection, channel)
        for level in stride(from: 1, through: policy.levels, by: 1) {
            try await declareOne(retryQueue(level: level), arguments: retryArguments(level: level),
                                 what: "delay queue \(level)", connection, channel)
        }
    }

    func check(on connection: AMQPConnection, channel: UInt16) async throws(AMQPError) {
        var names = [(consumer.queue, "queue"), (consumer.deadLetterQueue, "dead-letter queue")]
        for level in stride(from: 1, through: policy.levels, by: 1) { names.append((retryQueue(level: level), "delay queue")) }
        for (name, what) in names {
            do {
                try await connection.declareQueue(name, on: channel, passive: true)
            } catch {
                guard error.replyCode == 404 else { throw error }
                throw AMQPError(.invalidArgument,
                                "\(what) '\(name)' of [consumer.\(consumer.name)] does not exist and declare = false: create it, or set declare = true",
                                replyCode: 404)
            }
        }
    }

    private func declareOne(_ name: String, arguments: FieldTable, what: String,
                            _ connection: AMQPConnection, _ channel: UInt16) async throws(AMQPError) {
        do {
            try await connection.declareQueue(name, on: channel, durable: true, arguments: arguments)
        } catch {
            guard error.replyCode == 406 else { throw error }
            throw AMQPError(.invalidArgument,
                            "\(what) '\(name)' of [consumer.\(consumer.name)] exists with other arguments (\(error.reason)); "
                                + "a changed queue_type, retry_delay or retry_delay_max needs it deleted once empty "
                                + "(rabbitmqctl delete_queue \(name)), or set declare = false",
                            replyCode: 406)
        }
    }
}

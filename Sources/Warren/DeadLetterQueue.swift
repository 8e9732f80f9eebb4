public import AMQP
public import Logging

/// A consumer's dead-letter queue, opened by an operator command (`warren
/// dlq`): read it, replay it, purge it.
///
/// Reading never consumes: each message is taken with `basic.get` and
/// held unacked on the reading channel, then given back (one `basic.nack`
/// with requeue and multiple, see `giveBack`) or acked. A command killed midway
/// loses nothing: the broker requeues whatever it held when the connection
/// drops. A classic queue puts a requeued message back where it was, so a
/// read leaves it in the same order; a quorum queue (RabbitMQ 3.10) returns
/// a burst of them in an order of its own (see `giveBack`). No consumer is
/// ever registered, so a running warren's view of the queue is untouched.
///
/// Replay takes one message at a time: get it, publish the copy on a
/// channel in confirm mode and wait for the broker's confirm, then ack the
/// dead letter. Killed before the confirm, the dead letter is requeued
/// (the copy may or may not have gone out); killed between the confirm
/// and the ack reaching the broker, the message is in both queues, its own
/// once. Never in neither.
public final class DeadLetterQueue: Sendable {
    public let name: String
    private let connection: AMQPConnection
    private let user: String
    private static let readChannel: UInt16 = 1
    private static let publishChannel: UInt16 = 2

    private init(name: String, connection: AMQPConnection, user: String) {
        self.name = name
        self.connection = connection
        self.user = user
    }

    /// Connects (each broker URL in turn) and checks that the queue exists.
    public static func open(_ name: String, broker: BrokerSettings, logger: Logger) async throws(AMQPError) -> DeadLetterQueue {
        var lastError = AMQPError(.connectFailed, "no broker URL")
        for var options in broker.endpoints {
            options.connectionName += " (dlq)"
            let connection: AMQPConnection
            do {
                connection = try await AMQPConnection.connect(options, logger: logger)
            } catch {
                lastError = error
                continue
            }
            do {
                try await connection.openChannel(readChannel)
                try await connection.declareQueue(name, on: readChannel, passive: true)
                try await connection.openChannel(publishChannel, confirms: true)
            } catch {
                await connection.close()
                if error.replyCode == 404 {
                    throw AMQPError(.invalidArgument, "the dead-letter queue '\(name)' does not exist on \(options.redactedURL) (warren declares it when it starts with declare = true; check the consumer's queue and dead_letter_queue)",
                                    replyCode: 404)
                }
                throw error
            }
            return DeadLetterQueue(name: name, connection: connection, user: options.user)
        }
        throw lastError
    }

    public func close() async { await connection.close() }

    /// The broker's version, as it announced it.
    public var brokerVersion: BrokerVersion? { BrokerVersion(connection.serverVersion) }

    /// Messages ready in the queue now.
    public func count() async throws(AMQPError) -> Int {
        Int(try await connection.declareQueue(name, on: Self.readChannel, passive: true).messageCount)
    }

    // MARK: Reading

    /// What a read found.
    public struct Reading: Sendable {
        /// The dead letters selected, in queue order.
        public var letters: [DeadLetter]
        /// Messages read and given back without being selected.
        public var passed: Int
        /// Messages left unread behind the last one read.
        public var unread: Int
    }

    /// Reads from the head: up to `limit` dead letters whose message id is
    /// `id` (every one without `id`), and gives every message back in order.
    /// Stops after the number of messages that were ready when it began,
    /// so messages dead-lettered meanwhile do not make it run forever.
    ///
    /// Keeps of each letter selected its properties, its body size and at
    /// most `keepingBody` bytes of its body, and of the others nothing: the
    /// broker holds them (unacked) until they are given back, so memory
    /// stays bounded by what is printed, whatever the queue holds.
    public func read(limit: Int, id: String? = nil, keepingBody: Int = 0) async throws(AMQPError) -> Reading {
        var reading = Reading(letters: [], passed: 0, unread: 0)
        let ready = try await count()
        var read = 0
        var lastTag: UInt64?
        while reading.letters.count < limit && read < ready {
            guard let (delivery, left) = try await connection.get(queue: name, on: Self.readChannel) else { break }
            read += 1
            lastTag = delivery.deliveryTag
            reading.unread = Int(left)
            if Self.selected(delivery, id: id) {
                reading.letters.append(DeadLetter(delivery: delivery, position: read, keepingBody: keepingBody))
            } else {
                reading.passed += 1
            }
        }
        try await giveBack(upTo: lastTag)
        return reading
    }

    private static func selected(_ delivery: Delivery, id: String?) -> Bool {
        id.map { DeadLetterReport.matches(delivery, id: $0) } ?? true
    }

    /// Requeues every message still held (read and neither acked nor
    /// dropped) with one `basic.nack` (multiple, requeue) on the last tag
    /// read, after the acks queued before it, then closes the reading
    /// channel and opens it again. A classic queue puts each back where it
    /// was, whether nacked one by one or together (the tests read, then
    /// consume, the same order). A quorum queue of RabbitMQ 3.10 does not
    /// keep the order of a burst of them, nacked one by one, together or
    /// left to the channel's close (seen in the tests with 60: rotated or
    /// shuffled).
    private func giveBack(upTo lastTag: UInt64?) async throws(AMQPError) {
        if let lastTag { try await connection.requeueAll(upTo: lastTag, on: Self.readChannel) }
        try await connection.closeChannel(Self.readChannel)
        try await connection.openChannel(Self.readChannel)
    }

    // MARK: Replay

    /// One message's replay, as it happened.
    public enum ReplayOutcome: Sendable {
        /// Confirmed in `queue` and acked in the dead-letter queue.
        case replayed(queue: String)
        /// The broker refused the copy (or did not confirm it in time): the
        /// dead letter stays where it was.
        case refused(queue: String, reason: String)
    }

    /// How long a copy waits for its confirm.
    static let confirmTimeout = SettleBounds.confirmTimeout

    /// Replays up to `limit` dead letters (those whose message id is `id`,
    /// or every one) to the queue each was consumed from (`fallbackQueue`
    /// when it does not say), reporting each. Only to one of `queues` (the
    /// config's consumers' queues): the header naming the queue comes from
    /// the dead-letter queue, so from anyone who may publish there, and a
    /// replay must not carry a message into any queue it names; one naming
    /// another is refused and stays dead-lettered. Reads at most the number of
    /// messages ready when it began: one that fails again and comes back
    /// meanwhile waits for the next replay. Messages not replayed (passed
    /// over, refused) go back to the queue in order when it ends. Throws
    /// when the connection is lost, after reporting what was done.
    public func replay(limit: Int, id: String? = nil, fallbackQueue: String, queues: Set<String>,
                       report: (DeadLetter, ReplayOutcome) -> Bool) async throws(AMQPError) -> (replayed: Int, refused: Int) {
        let ready = try await count()
        // Every message read and not acked is given back by one nack on the last tag read.
        var lastTag: UInt64?
        var position = 0
        var replayed = 0
        var refused = 0
        var goOn = true
        while goOn && replayed < limit && position < ready {
            guard let (delivery, _) = try await connection.get(queue: name, on: Self.readChannel) else { break }
            position += 1
            lastTag = delivery.deliveryTag
            guard Self.selected(delivery, id: id) else { continue }
            let letter = DeadLetter(delivery: delivery, position: position, keepingBody: 0)
            let queue = letter.replayQueue(fallback: fallbackQueue)
            guard queues.contains(queue) else {
                refused += 1
                goOn = report(letter, .refused(queue: queue, reason: "no consumer in the config that dead-letters to '\(name)' consumes '\(queue)' (the queue its x-warren-queue names): not replayed"))
                continue
            }
            let properties = Publisher.publishable(letter.replayProperties, by: user)
            if let (error, unanswered) = await publishConfirmed(delivery.payload, to: queue, properties: properties) {
                refused += 1
                goOn = report(letter, .refused(queue: queue, reason: error.reason))
                // Unanswered, the copy may still land (then the message is
                // in both queues), and a late return would be charged to
                // the next copy: nothing more goes out on this connection.
                if unanswered {
                    try? await giveBack(upTo: lastTag)
                    throw AMQPError(.publishRejected, "\(error.reason); replay stopped (a copy without an answer may still arrive in '\(queue)')")
                }
                if error.isConnectionFatal || connection.isGone { throw error }
                continue
            }
            connection.ack(delivery)
            replayed += 1
            // `report` false (nobody reads the output any more): stop here;
            // the ack just queued goes out before the others are given back.
            goOn = report(letter, .replayed(queue: queue))
        }
        try await giveBack(upTo: lastTag)
        return (replayed, refused)
    }

    /// Publishes (mandatory: a queue that is gone refuses it) and waits for
    /// the confirm, at most `confirmTimeout`. nil when confirmed; else the
    /// error, and whether the broker never answered (the wait timed out). A
    /// channel the broker closed over a copy is opened again for the next one.
    private func publishConfirmed(_ body: MessageBody, to queue: String,
                                  properties: MessageProperties) async -> (error: AMQPError, unanswered: Bool)? {
        // nil: no answer within `confirmTimeout`.
        let answer = OneShot<Result<Void, AMQPError>?>()
        connection.publishConfirmed(body, routingKey: queue, on: Self.publishChannel, properties: properties,
                                    mandatory: true) { answer.deliver($0) }
        let result = await withTaskGroup(of: Void.self) { group -> Result<Void, AMQPError>? in
            group.addTask {
                try? await Task.sleep(for: Self.confirmTimeout)
                answer.deliver(nil)
            }
            let result = await answer.value(onCancel: nil)
            group.cancelAll()
            return result
        }
        switch result {
        case .success?: return nil
        case .failure(let error)?: return (error, false)
        case nil: return (AMQPError(.publishRejected, "no confirm from the broker within \(Self.confirmTimeout)"), true)
        }
    }

    // MARK: Purge

    /// Drops every message (`queue.purge`); returns how many.
    public func purgeAll() async throws(AMQPError) -> Int {
        Int(try await connection.purgeQueue(name, on: Self.readChannel))
    }

    /// Drops up to `limit` dead letters whose message id is `id` (every
    /// one without `id`), from the head; the others go back in order.
    /// Returns how many it dropped (and keeps nothing else of them).
    public func purge(limit: Int, id: String?) async throws(AMQPError) -> Int {
        let ready = try await count()
        var lastTag: UInt64?
        var position = 0
        var dropped = 0
        while dropped < limit && position < ready {
            guard let (delivery, _) = try await connection.get(queue: name, on: Self.readChannel) else { break }
            position += 1
            lastTag = delivery.deliveryTag
            guard Self.selected(delivery, id: id) else { continue }
            connection.ack(delivery)
            dropped += 1
        }
        try await giveBack(upTo: lastTag)
        return dropped
    }
}

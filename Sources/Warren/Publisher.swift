import AMQP
import Logging
import Synchronization

/// The connection that retry and dead-letter copies, replies and output
/// messages go out on: one per runtime, shared by every consumer, apart
/// from the consuming connection. A second one, of role "direct replies",
/// takes only replies to direct reply-to addresses: RabbitMQ 3.10 closes
/// the connection a stale one is published on (see `DirectReplyTo`).
///
/// RabbitMQ blocks a connection that publishes while a memory or disk alarm
/// is on: it stops reading from it, so nothing sent on it (acks included)
/// gets through. On a connection of its own, a blocked publisher leaves acks
/// and deliveries flowing on the consuming one.
///
/// Each copy goes out on a channel of its own in confirm mode, and that
/// channel takes no other copy until the broker answered this one. A
/// `basic.return` names no publish, so this is what charges it to the right
/// copy. A copy gets its confirm within `confirmTimeout`, and never after
/// the watchdog's shutdown switch (grace period over): otherwise it counts
/// as refused, and the caller requeues the original.
final class Publisher: Sendable {
    /// How long a copy waits for its confirm before it counts as refused.
    /// Long enough for a persistent message on a busy broker; short enough
    /// that a blocked broker cannot hold a worker for long.
    static let confirmTimeout = SettleBounds.confirmTimeout
    /// Channels 1...this: the broker's default channel_max is 2047.
    static let maxChannels: UInt16 = 2000

    private struct State {
        var connection: AMQPConnection? = nil
        /// The user the connection logged in as.
        var user = ""
        /// Counts connections, so a late confirm of an old one frees nothing on the new one.
        var generation = 0
        /// Channels with no copy awaiting a confirm.
        var idle: [UInt16] = []
        var nextChannel: UInt16 = 1
        /// Why the broker blocked the connection, while it does.
        var blocked: String? = nil
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    /// Guards the connection of the moment, its idle channels, the blocked
    /// reason and the copies waiting for a connection.
    private let state = Mutex(State())
    private let broker: BrokerSettings
    private let logger: Logger
    private let stopped = TerminationSignal()
    /// nil for a publisher that does not report `warren_broker_blocked`.
    private let metrics: PublisherMetrics?
    /// What the connection is for, in its name and log lines: "publishing"
    /// (copies, replies, output) or "direct replies" (see `DirectReplyTo`).
    private let role: String

    init(broker: BrokerSettings, logger: Logger, role: String = "publishing") {
        self.broker = broker
        self.role = role
        var logger = logger
        logger[metadataKey: "connection"] = "\(role)"
        self.logger = logger
        // One gauge, for the connection the retry and dead-letter copies need.
        metrics = role == "publishing" ? PublisherMetrics() : nil
        metrics?.record(blocked: false)
    }

    /// Why the broker blocks publishing now (a resource alarm), or nil.
    var blockedReason: String? { state.withLock { $0.blocked } }

    // MARK: The connection

    /// Connects (with backoff, each broker URL in turn) and reconnects
    /// whenever the connection is lost, until `stop`.
    func run() async {
        let endpoints = broker.endpoints
        let backoff = Backoff(minimum: broker.reconnectMin, maximum: broker.reconnectMax)
        var endpointIndex = 0
        var failures = 0
        while !stopped.isFired && !Task.isCancelled {
            var options = endpoints[endpointIndex % endpoints.count]
            options.connectionName += " (\(role))"
            let generation = state.withLock { state -> Int in
                state.generation += 1
                return state.generation
            }
            do {
                let connection = try await AMQPConnection.connect(options, logger: logger) { [self] event in
                    handle(event, generation: generation)
                }
                let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                    state.connection = connection
                    state.user = options.user
                    state.idle = []
                    state.nextChannel = 1
                    defer { state.waiters = [:] }
                    return Array(state.waiters.values)
                }
                for waiter in waiters { waiter.resume() }
                logger.info("\(role) connection open", metadata: ["broker": "\(options.redactedURL)"])
                failures = 0
                if stopped.isFired { await close(connection) }
                await connection.closed()
                let wasBlocked = state.withLock { state -> Bool in
                    defer { state.blocked = nil }
                    state.connection = nil
                    return state.blocked != nil
                }
                // Only then: after a reload, the gauge may be the new runtime's by now.
                if wasBlocked { metrics?.record(blocked: false) }
            } catch {
                endpointIndex += 1
                logger.warning("cannot open the \(role) connection; retrying", metadata: [
                    "broker": "\(options.redactedURL)", "error": "\(error)"])
            }
            guard !stopped.isFired && !Task.isCancelled else { break }
            let delay = backoff.delay(failures, random: Double.random(in: 0..<1))
            failures += 1
            await stopped.sleep(for: delay)
        }
    }

    /// Closes the connection once every outcome is settled (the runtime is
    /// done). A blocked broker reads nothing, closing handshake included:
    /// then, or if the close takes over two seconds, the socket is dropped.
    func stop() async {
        stopped.fire()
        guard let connection = state.withLock({ $0.connection }) else { return }
        await close(connection)
    }

    private func close(_ connection: AMQPConnection) async {
        if blockedReason != nil { connection.abort() }
        _ = await finishes(within: .seconds(2), orElse: { connection.abort() }) { await connection.close() }
    }

    /// On the I/O thread: must not block.
    private func handle(_ event: AMQPEvent, generation: Int) {
        switch event {
        case .blocked(let reason):
            state.withLock { $0.blocked = reason }
            metrics?.record(blocked: true)
            logger.warning("the broker blocked the \(role) connection: retry and dead-letter copies are not sent, and their originals are requeued, until it unblocks",
                           metadata: ["reason": "\(reason)"])
        case .unblocked:
            state.withLock { $0.blocked = nil }
            metrics?.record(blocked: false)
            logger.notice("the broker unblocked the \(role) connection")
        case .channelClosed(let channel, let error):
            logger.error("the broker closed a \(role) channel; the message on it counts as refused, the channel reopens for the next one",
                         metadata: ["channel": "\(channel)", "error": "\(error)"])
        case .connectionLost(let error):
            guard !stopped.isFired else { return }
            logger.warning("\(role) connection lost; reconnecting", metadata: ["error": "\(error)"])
        case .delivery, .consumerCancelledByBroker, .returned:
            break
        }
    }

    // MARK: Copies

    /// Publishes a copy (mandatory, so an unroutable one is refused) and
    /// waits for the broker's confirm: at most `confirmTimeout`, and not
    /// after `shutdown` fires. nil when confirmed.
    ///
    /// A confirm that comes later still means the copy is in its queue,
    /// while the caller has requeued the original: a duplicate, the price
    /// of never acking an original whose copy may be lost.
    ///
    /// The caller's cancellation does not cut the wait short: a worker whose
    /// handler timed out settles in a cancelled task, and its copy may well
    /// be confirmed. So the wait runs in a task of its own, awaited here.
    func publishCopy(_ body: MessageBody, to queue: String, properties: MessageProperties,
                     shutdown: TerminationSignal) async -> AMQPError? {
        await publish(body, exchange: "", routingKey: queue, properties: properties, shutdown: shutdown)
    }

    /// `publishCopy` to any exchange: a reply (the default exchange, the
    /// request's `reply_to`) or a pipeline's output message. Confirmed the
    /// same way; nil when confirmed. `mandatory` (the default) makes an
    /// unroutable message a refusal.
    ///
    /// Direct reply-to (`amq.rabbitmq.reply-to.…`) works from any
    /// connection: the name encodes the requester's channel, and the
    /// broker delivers to it whichever connection publishes.
    func publish(_ body: MessageBody, exchange: String, routingKey: String, properties: MessageProperties,
                 mandatory: Bool = true, shutdown: TerminationSignal) async -> AMQPError? {
        await Task {
            await self.awaitConfirm(body, exchange: exchange, routingKey: routingKey, properties: properties,
                                    mandatory: mandatory, shutdown: shutdown)
        }.value
    }

    private func awaitConfirm(_ body: MessageBody, exchange: String, routingKey: String, properties: MessageProperties,
                              mandatory: Bool, shutdown: TerminationSignal) async -> AMQPError? {
        await withTaskGroup(of: AMQPError?.self) { group in
            group.addTask {
                await self.send(body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
            }
            group.addTask {
                try? await Task.sleep(for: Self.confirmTimeout)
                return AMQPError(.publishRejected, "no confirm from the broker within \(Self.confirmTimeout)"
                                 + (self.blockedReason.map { " (the broker blocks publishing: \($0))" } ?? ""))
            }
            group.addTask {
                _ = await shutdown.wait()
                return AMQPError(.publishRejected, "warren is stopping: no longer waiting for the confirm")
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }

    /// Sends on an idle channel and returns the broker's answer; returns at
    /// once, with an error, if the task is cancelled.
    private func send(_ body: MessageBody, exchange: String, routingKey: String,
                      properties: MessageProperties, mandatory: Bool) async -> AMQPError? {
        let gaveUp = AMQPError(.publishRejected, "gave up waiting")
        var taken: (connection: AMQPConnection, channel: UInt16, generation: Int, user: String)? = nil
        while taken == nil {
            switch takeChannel() {
            case .use(let connection, let channel, let generation, let user):
                taken = (connection, channel, generation, user)
            case .refuse(let error):
                return error
            case .waitForConnection:
                await waitForConnection()
                if Task.isCancelled { return gaveUp }
            }
        }
        guard let (connection, channel, generation, user) = taken else { return gaveUp }
        let answer = OneShot<Result<Void, AMQPError>>()
        let properties = Self.publishable(properties, by: user)
        connection.publishConfirmed(body, exchange: exchange, routingKey: routingKey, on: channel, properties: properties,
                                    mandatory: mandatory) { result in
            // The channel takes the next copy only once this one is answered.
            self.release(channel, generation: generation)
            answer.deliver(result)
        }
        switch await answer.value(onCancel: .failure(gaveUp)) {
        case .success: return nil
        case .failure(let error): return error
        }
    }

    /// RabbitMQ refuses a publish whose `user_id` names another user than
    /// the one publishing (unless that one is an `impersonator`), closing
    /// the channel: the copy of a message another user published would be
    /// refused at every attempt, and its original requeued and handled again
    /// forever. So such a copy goes without `user_id` and carries it in
    /// `x-warren-user-id`. That is a header, which any publisher can set:
    /// only the property is the broker's word on who published.
    static func publishable(_ properties: MessageProperties, by user: String) -> MessageProperties {
        guard let claimed = properties.userId, claimed != user else { return properties }
        var properties = properties
        var headers = properties.headers ?? FieldTable()
        headers["x-warren-user-id"] = .string(claimed)
        properties.headers = headers
        properties.userId = nil
        return properties
    }

    private enum Checkout {
        case use(AMQPConnection, UInt16, generation: Int, user: String)
        case waitForConnection
        case refuse(AMQPError)
    }

    private func takeChannel() -> Checkout {
        state.withLock { state in
            guard let connection = state.connection else { return .waitForConnection }
            // Sent now, the copy would get its confirm only after the alarm,
            // long after its original was requeued: a sure duplicate.
            if let reason = state.blocked {
                return .refuse(AMQPError(.publishRejected, "not sent: the broker blocks publishing (\(reason))"))
            }
            if let channel = state.idle.popLast() {
                return .use(connection, channel, generation: state.generation, user: state.user)
            }
            guard state.nextChannel <= Self.maxChannels else {
                return .refuse(AMQPError(.publishRejected, "every publishing channel still awaits a confirm"))
            }
            defer { state.nextChannel += 1 }
            return .use(connection, state.nextChannel, generation: state.generation, user: state.user)
        }
    }

    private func release(_ channel: UInt16, generation: Int) {
        state.withLock { state in
            if state.generation == generation && state.connection != nil { state.idle.append(channel) }
        }
    }

    /// Until a connection is there, or the task is cancelled.
    private func waitForConnection() async {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.connection != nil || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}

extension WarrenRuntime {
    /// Why the broker blocks warren's publishing connection (a memory or
    /// disk alarm), or nil: retries and dead letters cannot go out meanwhile.
    public var brokerBlocked: String? { publisher.blockedReason }
}

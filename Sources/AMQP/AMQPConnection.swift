import CRabbitMQ
public import Logging
import Synchronization

/// A connection to the broker, owned by its own I/O thread.
///
/// Every method may be called from any task: it hands a command to the I/O
/// thread and, where there is an answer, awaits it. Settlements (`ack`,
/// `nack`) do not wait; they are coalesced and on the wire within one turn
/// of the I/O loop. A connection is never reused after it is lost: make a
/// new one, and forget every delivery tag of the old one.
public final class AMQPConnection: Sendable {
    /// Deliveries and connection events, in wire order. Finishes when the
    /// connection ends, after `.connectionLost` if it was not closed by us.
    public let events: AsyncStream<AMQPEvent>
    private let queue: CommandQueue
    private let finished: Latch
    private let socket: SocketShutter
    /// Channels whose deliveries can no longer be settled (the broker closed
    /// the channel, or cancelled its consumer and it was closed).
    private let forgotten = Mutex<Set<UInt16>>([])
    /// The broker's `version` server property (`3.10.8`, `4.1.2`), read at
    /// login on the I/O thread; nil when the broker did not send one. What a
    /// broker accepts and how it counts returns differ between versions (see
    /// `BrokerVersion`).
    public let serverVersion: String?

    private init(queue: CommandQueue, events: AsyncStream<AMQPEvent>, finished: Latch, socket: SocketShutter,
                 serverVersion: String?) {
        self.serverVersion = serverVersion
        self.queue = queue
        self.events = events
        self.finished = finished
        self.socket = socket
    }

    deinit {
        queue.push(.close(done: {}))
    }

    /// Connects, logs in and starts the I/O thread. Events arrive on `events`.
    public static func connect(_ options: ConnectionOptions, logger: Logger = Logger(label: "warren.amqp")) async throws(AMQPError) -> AMQPConnection {
        let (events, continuation) = AsyncStream<AMQPEvent>.makeStream()
        let finished = Latch()
        let sink = EventSink(emit: { continuation.yield($0) }, finish: { continuation.finish(); finished.open() })
        return try await connect(options, logger: logger, events: events, sink: sink, finished: finished)
    }

    /// Connects, logs in and starts the I/O thread. Events are handed to
    /// `onEvent` on the I/O thread itself, in wire order, saving a hop per
    /// delivery; it must not block. `events` stays empty.
    ///
    /// `onBatchEnd`, if given, is called on the I/O thread after each batch
    /// of frames read from the socket. `executor`, if given, runs its jobs
    /// on this connection's I/O thread while the connection lives.
    public static func connect(_ options: ConnectionOptions, logger: Logger = Logger(label: "warren.amqp"),
                               executor: LoopExecutor? = nil, onBatchEnd: (@Sendable () -> Void)? = nil,
                               onEvent: @escaping @Sendable (AMQPEvent) -> Void) async throws(AMQPError) -> AMQPConnection {
        let (events, continuation) = AsyncStream<AMQPEvent>.makeStream()
        continuation.finish()
        let finished = Latch()
        let sink = EventSink(emit: onEvent, finish: { finished.open() }, batchEnd: onBatchEnd)
        return try await connect(options, logger: logger, events: events, sink: sink, executor: executor, finished: finished)
    }

    private static func connect(_ options: ConnectionOptions, logger: Logger, events: AsyncStream<AMQPEvent>,
                                sink: EventSink, executor: LoopExecutor? = nil, finished: Latch) async throws(AMQPError) -> AMQPConnection {
        let queue = try CommandQueue()
        let socket = SocketShutter()
        let continuation = sink
        // A stop signal must not wait for a TCP connect or a login that hangs:
        // cancelling the caller answers at once, and the I/O thread, once its
        // open returns, drops the connection unused.
        let cancelled = AMQPError(.closed, "connecting was cancelled (warren is stopping)")
        guard !Task.isCancelled else { throw cancelled }
        let answer = OneShot<Result<String?, AMQPError>>()
        do throws(IOThread.StartError) {
            try IOThread.tryStart(name: "warren-amqp-io") {
                let raw: RawConnection
                do throws(AMQPError) {
                    raw = try RawConnection.open(options)
                } catch {
                    continuation.finish()
                    answer.deliver(.failure(error))
                    return
                }
                let loop = IOLoop(connection: raw, queue: queue, events: continuation, executor: executor,
                                  socket: socket, logger: logger)
                loop.host()
                guard answer.deliver(.success(raw.serverVersion)) else {
                    // Nobody waits for this connection any more.
                    loop.abandon()
                    return
                }
                loop.run()
            }
        } catch {
            // No thread to be had is a failed connect (retried with backoff), not an abort.
            continuation.finish()
            throw AMQPError(.connectFailed, error.description)
        }
        let result = await answer.value(onCancel: .failure(cancelled))
        let version = try result.get()
        return AMQPConnection(queue: queue, events: events, finished: finished, socket: socket, serverVersion: version)
    }

    /// Whether the I/O loop went round within the last `milliseconds`. It
    /// goes round at least every quarter heartbeat (and every second), so a
    /// false answer means it is stuck.
    public func isResponsive(within milliseconds: Int64) -> Bool {
        monotonicMilliseconds() - queue.lastTurn.load(ordering: .relaxed) <= milliseconds
    }

    /// Returns once the connection is gone (lost, or closed) and its I/O thread is done.
    public func closed() async { await finished.wait() }

    /// Whether the connection is gone: its deliveries can no longer be
    /// acked, and the broker redelivers them.
    public var isGone: Bool { finished.isOpen }

    /// Marks a channel whose deliveries can no longer be settled: the broker
    /// redelivers them, so none of them may start any more.
    public func forget(channel: UInt16) { _ = forgotten.withLock { $0.insert(channel) } }

    /// Whether `delivery` may still start: its connection and its channel
    /// are alive, so its outcome will reach the broker.
    public func canSettle(_ delivery: Delivery) -> Bool {
        !isGone && !forgotten.withLock { $0.contains(delivery.channel) }
    }

    /// Runs `body` on the I/O thread and returns its result.
    func call<T: Sendable>(_ body: @escaping @Sendable (IOLoop) throws(AMQPError) -> T) async throws(AMQPError) -> T {
        let result: Result<T, AMQPError> = await withCheckedContinuation { continuation in
            queue.push(.call { loop in
                do throws(AMQPError) {
                    continuation.resume(returning: .success(try body(loop)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            })
        }
        return try result.get()
    }

    // MARK: Channels and topology

    /// Opens a channel and sets its prefetch (`basic.qos`, per consumer).
    /// With `confirms`, puts it in confirm mode in the same step, so no
    /// publish can use it before.
    public func openChannel(_ channel: UInt16, prefetch: UInt16 = 0, confirms: Bool = false) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            try loop.openChannel(channel, confirms: confirms)
            if prefetch > 0 {
                _ = try loop.rpc(channel: channel, "setting prefetch") { amqp_basic_qos($0, channel, 0, prefetch, 0) }
                loop.batchAcks(on: channel, prefetch: prefetch)
            }
        }
    }

    /// `basic.qos` again on an open channel: RabbitMQ applies a per-consumer
    /// prefetch to the consumers started after it, so call it before
    /// `consume` (a half-open circuit breaker consumes with 1).
    public func setPrefetch(_ prefetch: UInt16, on channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            try loop.requireOpen(channel, doing: "setting prefetch")
            _ = try loop.rpc(channel: channel, "setting prefetch") { amqp_basic_qos($0, channel, 0, prefetch, 0) }
            loop.batchAcks(on: channel, prefetch: prefetch)
        }
    }

    /// Puts a channel in confirm mode: every publish then waits for the
    /// broker's ack. A publish made between the open and this call is not
    /// confirmed: open with `confirms: true` where that matters.
    public func enableConfirms(on channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in try loop.enableConfirms(channel) }
    }

    public func closeChannel(_ channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in try loop.closeChannel(channel) }
    }

    public struct QueueInfo: Sendable, Equatable {
        public var name: String
        public var messageCount: UInt32
        public var consumerCount: UInt32
    }

    /// `queue.declare`. `passive` only checks that the queue exists (404 if not).
    @discardableResult
    public func declareQueue(_ name: String, on channel: UInt16, passive: Bool = false, durable: Bool = true,
                             exclusive: Bool = false, autoDelete: Bool = false,
                             arguments: FieldTable = FieldTable()) async throws(AMQPError) -> QueueInfo {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            let ok = try loop.rpc(channel: channel, "declaring queue '\(name)'") {
                amqp_queue_declare($0, channel, arena.bytes(name), passive ? 1 : 0, durable ? 1 : 0,
                                   exclusive ? 1 : 0, autoDelete ? 1 : 0, arena.table(arguments))
            }
            return QueueInfo(name: ok.pointee.queue.string, messageCount: ok.pointee.message_count,
                             consumerCount: ok.pointee.consumer_count)
        }
    }

    /// `exchange.declare`, durable. `passive` only checks that it exists (404 if not).
    public func declareExchange(_ name: String, type: String, on channel: UInt16, passive: Bool = false,
                                durable: Bool = true) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            _ = try loop.rpc(channel: channel, "declaring exchange '\(name)'") {
                amqp_exchange_declare($0, channel, arena.bytes(name), arena.bytes(type), passive ? 1 : 0, durable ? 1 : 0,
                                      0, 0, amqp_empty_table)
            }
        }
    }

    /// `exchange.delete`.
    public func deleteExchange(_ name: String, on channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            _ = try loop.rpc(channel: channel, "deleting exchange '\(name)'") {
                amqp_exchange_delete($0, channel, arena.bytes(name), 0)
            }
        }
    }

    /// `queue.bind`: messages `exchange` routes with `routingKey` go to `queue`.
    public func bindQueue(_ queue: String, to exchange: String, routingKey: String, on channel: UInt16,
                          arguments: FieldTable = FieldTable()) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            _ = try loop.rpc(channel: channel, "binding queue '\(queue)' to exchange '\(exchange)' with key '\(routingKey)'") {
                amqp_queue_bind($0, channel, arena.bytes(queue), arena.bytes(exchange), arena.bytes(routingKey),
                                arena.table(arguments))
            }
        }
    }

    /// `queue.unbind`: undoes a `bindQueue` with the same arguments (the broker answers ok when no such binding exists).
    public func unbindQueue(_ queue: String, from exchange: String, routingKey: String, on channel: UInt16,
                            arguments: FieldTable = FieldTable()) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            _ = try loop.rpc(channel: channel, "unbinding queue '\(queue)' from exchange '\(exchange)' with key '\(routingKey)'") {
                amqp_queue_unbind($0, channel, arena.bytes(queue), arena.bytes(exchange), arena.bytes(routingKey),
                                  arena.table(arguments))
            }
        }
    }

    /// `queue.delete`; returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String, on channel: UInt16) async throws(AMQPError) -> UInt32 {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            return try loop.rpc(channel: channel, "deleting queue '\(name)'") {
                amqp_queue_delete($0, channel, arena.bytes(name), 0, 0)
            }.pointee.message_count
        }
    }

    /// `queue.purge`; returns how many messages it dropped.
    @discardableResult
    public func purgeQueue(_ name: String, on channel: UInt16) async throws(AMQPError) -> UInt32 {
        try await call { loop throws(AMQPError) in
            let arena = CArena()
            return try loop.rpc(channel: channel, "purging queue '\(name)'") {
                amqp_queue_purge($0, channel, arena.bytes(name))
            }.pointee.message_count
        }
    }

    // MARK: Consuming

    /// `basic.consume` with manual acks; returns the consumer tag.
    /// `noAck`: the broker counts a message settled once sent (direct
    /// reply-to, `amq.rabbitmq.reply-to`, takes only such consumers); its
    /// deliveries must not be settled. `exclusive`: no other consumer may
    /// consume from the queue meanwhile. `arguments`: RabbitMQ's consumer
    /// arguments (`x-priority`).
    public func consume(queue name: String, on channel: UInt16, consumerTag: String = "", noAck: Bool = false,
                        exclusive: Bool = false, arguments: FieldTable = FieldTable()) async throws(AMQPError) -> String {
        try await call { loop throws(AMQPError) in
            try loop.requireOpen(channel, doing: "consuming from '\(name)'")
            let arena = CArena()
            return try loop.rpc(channel: channel, "consuming from '\(name)'") {
                amqp_basic_consume($0, channel, arena.bytes(name), arena.bytes(consumerTag), 0, noAck ? 1 : 0, exclusive ? 1 : 0,
                                   arena.table(arguments))
            }.pointee.consumer_tag.string
        }
    }

    /// `basic.cancel`, waiting for cancel-ok. Deliveries the broker sent
    /// before the cancel-ok still arrive on `events` afterwards: the caller
    /// must settle them (drain nacks them with requeue).
    public func cancel(consumerTag: String, on channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in
            try loop.requireOpen(channel, doing: "cancelling consumer '\(consumerTag)'")
            let arena = CArena()
            _ = try loop.rpc(channel: channel, "cancelling consumer '\(consumerTag)'") {
                amqp_basic_cancel($0, channel, arena.bytes(consumerTag))
            }
        }
    }

    /// `basic.get` with manual acks: the first message ready in `queue`
    /// and how many more were ready then, or nil when it is empty. Settle
    /// it like a delivery; unsettled, it goes back to the queue when the
    /// channel or the connection closes. For reading a queue a message at
    /// a time (the dead-letter commands), not for consuming.
    public func get(queue name: String, on channel: UInt16) async throws(AMQPError) -> (delivery: Delivery, messageCount: UInt32)? {
        try await call { loop throws(AMQPError) in try loop.get(queue: name, channel: channel) }
    }

    /// Settles a delivery. Does not wait; coalesced with its neighbours.
    /// If the connection is gone the settlement is dropped: the broker
    /// redelivers the message, which is the only safe outcome.
    public func settle(_ delivery: Delivery, _ settlement: Settlement) {
        queue.push(.settle(channel: delivery.channel, tag: delivery.deliveryTag, settlement))
    }

    public func ack(_ delivery: Delivery) { settle(delivery, .ack) }

    public func nack(_ delivery: Delivery, requeue: Bool) { settle(delivery, .nack(requeue: requeue)) }

    /// Gives back every unsettled delivery of `channel` up to `tag` with one
    /// `basic.nack` (multiple, requeue), after the settlements already
    /// queued for the channel. A reader of a queue by `basic.get` (the
    /// dead-letter commands) then needs to keep only the last tag it holds.
    /// The channel's own settlement bookkeeping does not learn of it: close
    /// the channel afterwards.
    public func requeueAll(upTo tag: UInt64, on channel: UInt16) async throws(AMQPError) {
        try await call { loop throws(AMQPError) in try loop.requeueAll(upTo: tag, channel: channel) }
    }

    /// Unsettled deliveries on the channel, as the I/O thread sees them.
    public func outstanding(on channel: UInt16) async throws(AMQPError) -> Int {
        try await call { loop in loop.outstanding(on: channel) }
    }

    // MARK: Publishing

    /// Publishes a message. On a channel with confirms enabled, returns only
    /// once the broker has confirmed it, and throws if it refused.
    /// - Parameter requireConfirm: throw, rather than return at once, if the
    ///   channel is not in confirm mode.
    public func publish(_ body: [UInt8], exchange: String = "", routingKey: String, on channel: UInt16,
                        properties: MessageProperties = MessageProperties(), mandatory: Bool = false,
                        requireConfirm: Bool = false) async throws(AMQPError) {
        try await publish(MessageBody(body), exchange: exchange, routingKey: routingKey, on: channel,
                          properties: properties, mandatory: mandatory, requireConfirm: requireConfirm)
    }

    /// Publishes a body held in place (a delivery's `payload`), without copying it.
    public func publish(_ body: MessageBody, exchange: String = "", routingKey: String, on channel: UInt16,
                        properties: MessageProperties = MessageProperties(), mandatory: Bool = false,
                        requireConfirm: Bool = false) async throws(AMQPError) {
        let result: Result<Void, AMQPError> = await withCheckedContinuation { continuation in
            queue.push(.call { loop in
                loop.publish(channel: channel, exchange: exchange, routingKey: routingKey, mandatory: mandatory,
                             properties: properties, body: body, requireConfirm: requireConfirm) { continuation.resume(returning: $0) }
            })
        }
        try result.get()
    }

    /// Publishes a message that must be confirmed, without waiting:
    /// `confirmed` runs on the I/O thread with the broker's answer (and
    /// must not block). A channel that is not open is opened in confirm
    /// mode first, in the same step; one that is open without confirms
    /// fails the publish. While the broker blocks the connection, a channel
    /// is not opened (its reply would never come): the publish fails.
    public func publishConfirmed(_ body: [UInt8], exchange: String = "", routingKey: String, on channel: UInt16,
                                 properties: MessageProperties = MessageProperties(), mandatory: Bool = false,
                                 confirmed: @escaping @Sendable (Result<Void, AMQPError>) -> Void) {
        publishConfirmed(MessageBody(body), exchange: exchange, routingKey: routingKey, on: channel,
                         properties: properties, mandatory: mandatory, confirmed: confirmed)
    }

    /// `publishConfirmed` of a body held in place (a delivery's `payload`,
    /// for retry and dead-letter copies), without copying it.
    public func publishConfirmed(_ body: MessageBody, exchange: String = "", routingKey: String, on channel: UInt16,
                                 properties: MessageProperties = MessageProperties(), mandatory: Bool = false,
                                 confirmed: @escaping @Sendable (Result<Void, AMQPError>) -> Void) {
        queue.push(.call { loop in
            loop.publish(channel: channel, exchange: exchange, routingKey: routingKey, mandatory: mandatory,
                         properties: properties, body: body, requireConfirm: true, open: true, confirmed: confirmed)
        })
    }

    // MARK: Closing

    /// Drops the socket without the closing handshake, from any thread, even
    /// while the I/O thread waits in a synchronous call: for a broker that
    /// stopped reading (blocked). The connection ends as lost; unsettled
    /// deliveries go back to their queues and unconfirmed publishes fail.
    public func abort() {
        socket.shutDown()
    }

    /// Starts a close without waiting for it (for cancellation handlers).
    public func closeNow() {
        queue.push(.close(done: {}))
    }

    /// Sends every queued settlement, closes each channel, then the
    /// connection, and waits for the I/O thread to finish.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.push(.close { continuation.resume() })
        }
    }
}

import AMQP
import Glibc
import Logging
import Synchronization
import Tracing

/// One `[consumer.NAME]`: its buffer and `concurrency` workers in one task
/// group. Workers outlive connections: each delivery is settled on the
/// connection it came from, so a reconnect never kills a running handler.
final class Consumer: Sendable {
    let settings: ConsumerSettings
    let index: Int
    /// Retry and dead-letter copies go out here, with publisher confirms.
    let publisher: Publisher
    /// Replies to direct reply-to addresses go out here: a stale address
    /// makes RabbitMQ 3.10 close the connection it came on (see
    /// `DirectReplyTo`), which must not cost the copies on `publisher`.
    let directReplies: Publisher
    let topology: Topology
    let handler: any MessageHandler
    /// `mode = persistent`: the workers that take the messages instead of `handler`.
    let workers: PersistentWorkers?
    let buffer = DeliveryBuffer()
    let shortage = ResourceShortage()
    /// Messages a worker has taken and not yet settled (handler running,
    /// or its retry or dead-letter copy awaiting the broker's confirm):
    /// with the buffer's count, what this consumer has in flight.
    let busy = Atomic<Int>(0)
    /// The control loop holds this consumer (paused, breaker open, no
    /// worker can start): a delivery a persistent slot kept for a worker
    /// still starting goes back instead of running once it is ready.
    let consumingStopped = Atomic<Bool>(false)
    let metrics: ConsumerMetrics
    /// `pause_after_failures`; nil when off. Guards the breaker's state,
    /// changed by every worker's outcome and by the control loop's timer.
    let breaker: Mutex<CircuitBreaker?>
    /// Who stops and starts consuming when the breaker opens or closes,
    /// told of every change (it reads `breakerHolds` itself, so the order
    /// in which two workers' pokes arrive never matters).
    /// `pause_after_failures` is set: the hot path asks no lock otherwise.
    let hasBreaker: Bool
    let breakerPoke = Mutex<(@Sendable () -> Void)?>(nil)
    /// Whether this runtime speaks for the process on `warren_breaker_open`
    /// (see `exportBreaker`); written under `breaker`'s lock.
    let exportsBreaker: Atomic<Bool>
    let logger: Logger
    /// `log_outcomes` and `logger.logLevel <= .info`, read once: asking the
    /// logger copies its handler, and a success asks for every message.
    let outcomeLogging: Bool
    /// A span per delivery; nil when warren traces nothing.
    let tracing: DeliveryTracing?
    /// `handler` runs in this process (an embedder's): it runs with its
    /// span's context as `ServiceContext.current`. A command handler gets
    /// `TRACEPARENT` instead (and the daemon never pushes a task-local:
    /// see `Message.processWatch`).
    let inProcessHandler: Bool

    init(settings: ConsumerSettings, index: Int, handler: any MessageHandler, workers: PersistentWorkers? = nil,
         publisher: Publisher, directReplies: Publisher? = nil, exportsBreaker: Bool = true,
         tracing: DeliveryTracing? = nil, logger: Logger) {
        self.settings = settings
        self.index = index
        self.publisher = publisher
        self.directReplies = directReplies ?? publisher
        self.topology = Topology(settings)
        self.metrics = ConsumerMetrics(settings)
        self.handler = handler
        self.workers = workers
        self.tracing = tracing
        inProcessHandler = workers == nil && !(handler is ExecHandler)
        breaker = Mutex(settings.pauseAfterFailures > 0
            ? CircuitBreaker(threshold: settings.pauseAfterFailures, retryDelay: settings.retryDelay,
                             retryDelayMax: settings.retryDelayMax)
            : nil)
        hasBreaker = settings.pauseAfterFailures > 0
        self.exportsBreaker = Atomic(exportsBreaker)
        // A reload's candidate leaves the series to the runtime it replaces until it takes over.
        if exportsBreaker { metrics.breakerOpen.record(0) }
        var logger = logger
        logger[metadataKey: "consumer"] = "\(settings.name)"
        self.logger = logger
        outcomeLogging = settings.logOutcomes && logger.logLevel <= .info
    }

    func consumerTag(channel: UInt16) -> String { "warren.\(settings.name).\(channel)" }

    enum WorkerEnd: Sendable { case bufferClosed, cancelled }

    /// The workers: `concurrency` slots in one task group. Returns when the
    /// buffer is closed and every worker is idle: for a drain, the moment
    /// this consumer's last handler was settled.
    ///
    /// Each slot runs a worker task that handles message after message
    /// inline. The watchdog ends a handler by cancelling that task; a
    /// cancelled task stays cancelled, so after settling its message the
    /// worker ends and the slot starts a fresh one. The worker task is
    /// awaited by its slot and cancelled with it: structured in all but name.
    ///
    /// Workers prefer `executor`: they run on the I/O thread of the current
    /// connection, where their deliveries arrive (see `LoopExecutor`).
    func runWorkers(watchdog: Watchdog, executor: LoopExecutor) async {
        await withTaskGroup(of: Void.self) { group in
            for slot in 0..<max(1, settings.concurrency) {
                if let workers {
                    group.addTask(executorPreference: executor) {
                        await self.runPersistentSlot(slot, workers: workers, watchdog: watchdog, executor: executor)
                    }
                    continue
                }
                group.addTask(executorPreference: executor) {
                    while !Task.isCancelled {
                        let handle = WorkerHandle()
                        let task = Task(executorPreference: executor) {
                            await self.work(watchdog: watchdog, handle: handle)
                        }
                        handle.set(task)
                        let end = await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
                        if end == .bufferClosed { return }
                    }
                }
            }
        }
    }

    private func work(watchdog: Watchdog, handle: WorkerHandle) async -> WorkerEnd {
        while true {
            var next = buffer.tryNext()
            if next == nil { next = await buffer.next() }
            guard let received = next else { break }
            // Its connection or channel died while it waited: the broker
            // redelivers it, and running it here too would be a duplicate.
            guard received.connection.canSettle(received.delivery) else {
                logGoneUnstarted(received.delivery)
                continue
            }
            // Handed to this waiting worker just before consuming stopped
            // (paused, breaker open, no worker can start): unstarted, like
            // the ones the control loop took back from the buffer.
            if consumingStopped.load(ordering: .relaxed) {
                received.connection.nack(received.delivery, requeue: true)
                metrics.requeued.increment()
                logUnstarted(received.delivery, "message released: consuming stopped before it started")
                continue
            }
            // The circuit breaker is open: back to the queue unstarted.
            guard let ticket = admit(received) else { continue }
            busy.add(1, ordering: .relaxed)
            let stopped = await process(received, ticket: ticket, watchdog: watchdog, handle: handle)
            busy.subtract(1, ordering: .relaxed)
            // The watchdog has cancelled this task, or is about to: its next
            // message belongs to a fresh worker, never to a cancelled one.
            if stopped || Task.isCancelled { return .cancelled }
        }
        return Task.isCancelled ? .cancelled : .bufferClosed
    }

    /// Handles and settles one delivery; true when the watchdog stopped its handler.
    private func process(_ received: Received, ticket: CircuitBreaker.Ticket, watchdog: Watchdog, handle: WorkerHandle) async -> Bool {
        let delivery = received.delivery
        let connection = received.connection
        // One clock reading serves the watchdog, the duration metric and the outcome line.
        let started = monotonicNanoseconds()
        var message = Message(delivery: delivery, consumer: settings.name, queue: settings.queue,
                              attempt: Message.attempt(of: delivery))
        message.started = started
        tracing?.start(&message)
        if settings.deliveryLimit != nil { warnIfLastDelivery(message) }
        if delivery.payload.count > settings.maxBody {
            // Never an attempt: no handler ran.
            breakerAbandoned(ticket)
            await refuseOversized(message, connection: connection, watchdog: watchdog)
            return false
        }
        guard let id = watchdog.start(timeout: settings.timeout, consumer: settings.name, delivery: delivery,
                                      attempt: message.attempt, handle: handle, now: started / 1_000_000) else {
            // Terminating: nothing new starts, and the message goes back unstarted.
            breakerAbandoned(ticket)
            connection.nack(delivery, requeue: true)
            metrics.requeued.increment()
            logOutcome(.released, message, "message released: warren is stopping, no handler started")
            return false
        }
        var watched = message
        watched.processWatch = ProcessWatch(watchdog: watchdog, id: id)
        let publishes = settings.publishesOutput(of: delivery.properties)
        let outcome: Outcome
        var output: MessageBody? = nil
        message.trace?.event("handler started")
        if publishes {
            watched.outputLimit = settings.outputLimit
            let result = await run(watched) { await self.handler.handleWithOutput(watched) }
            outcome = result.outcome
            output = result.output
        } else if message.trace != nil {
            outcome = await run(watched) { await self.handler.handle(watched) }
        } else {
            outcome = await handler.handle(watched)
        }
        message.trace?.event("handler finished")
        metrics.handlerDuration.recordNanoseconds(monotonicNanoseconds() - started)
        let stop = watchdog.finish(id)
        if await breakerSpares(message, outcome: outcome, stop: stop, ticket: ticket, connection: connection,
                               watchdog: watchdog) {
            return stop != nil
        }
        if stop == nil, case .ack = outcome {
            if publishes {
                await publishOutput(message, output: output, connection: connection, watchdog: watchdog)
            } else {
                // The hot path, without a suspension point.
                ack(message, on: connection)
            }
        } else {
            await settle(message, outcome: outcome, stop: stop, connection: connection, watchdog: watchdog)
        }
        return stop != nil
    }

    /// This consumer's logger, with the message's id and attempt.
    func logger(for message: Message) -> Logger {
        var log = logger
        log[metadataKey: "message_id"] = "\(message.logID)"
        log[metadataKey: "attempt"] = "\(message.attempt)"
        return log
    }

    /// Runs an in-process handler with the span's context as the current one.
    private func run<T>(_ message: Message, _ body: () async -> T) async -> T {
        guard inProcessHandler, let context = message.traceContext else { return await body() }
        return await ServiceContext.withValue(context) { await body() }
    }

    /// Settles a message as its outcome says. Retry and dead-letter copies
    /// are published and confirmed by the broker *before* the original is
    /// acked; if the broker refuses the copy, the original is requeued
    /// instead (after a pause, so a broken topology does not spin).
    ///
    /// A plain success does not come here: `work` acks it without a
    /// suspension point.
    func settle(_ message: Message, outcome: Outcome, stop: Watchdog.Reason?, connection: AMQPConnection,
                        watchdog: Watchdog) async {
        let log = logger(for: message)
        // Its connection or channel is gone (the broker closed the channel
        // for an ack timeout, say): the broker redelivers the message, so a
        // retry or dead-letter copy now would make it two.
        if !connection.canSettle(message.delivery) {
            dropped(message)
            return
        }
        // A reason goes into the copy's headers, which must fit in a frame:
        // a copy that cannot be sent would requeue the message, for ever.
        var outcome = outcome.withReasonCapped(at: Failure.reasonLimit)
        switch stop {
        case .shutdown?:
            connection.nack(message.delivery, requeue: true)
            metrics.requeued.increment()
            logOutcome(.requeued, message, level: .warning, "handler terminated at shutdown; message requeued",
                       reason: outcome.failure?.reason)
            return
        case .timeout?:
            let limit = settings.timeout.map { "\($0)" } ?? "-"
            log.warning("handler timed out", metadata: ["timeout": "\(limit)"])
            // The reason says so, in the outcome line and the copy's
            // headers: "killed by signal 15" alone would not.
            switch outcome {
            case .ack:
                outcome = .retry(Failure(reason: "timed out after \(limit)", timedOut: true))
            case .retry(var failure):
                failure.timedOut = true
                failure.reason = "timed out after \(limit): \(failure.reason)"
                outcome = .retry(failure)
            case .deadLetter:
                break
            }
        case nil:
            break
        }
        if case .retry(let failure) = outcome, failure.resourceShortage {
            await requeueForShortage(message, failure: failure, connection: connection, log: log, watchdog: watchdog)
            return
        }
        switch topology.policy.decide(outcome, attempt: message.attempt) {
        case .ack:
            ack(message, on: connection)
        case .retry(let level, let nextAttempt):
            let failure = outcome.failure
            if let delay = await retryCopy(message, level: level, attempt: nextAttempt, reason: failure?.reason ?? "",
                                           connection: connection, log: log, watchdog: watchdog) {
                logOutcome(.retry, message, level: .warning, "handler failed; retrying later", reason: failure?.reason ?? "-",
                           metadata: ["retry_in": "\(delay)", "next_attempt": "\(nextAttempt)"])
                metrics.retried.increment()
            }
        case .deadLetter(let reason):
            await deadLetter(message, reason: reason, failure: outcome.failure, connection: connection, log: log,
                             watchdog: watchdog)
        }
    }

    /// Publishes the message to delay queue `level`, to come back as
    /// attempt number `attempt`, and acks the original once the broker
    /// confirmed the copy; returns the delay, or nil when the copy was
    /// refused (the original requeued instead).
    private func retryCopy(_ message: Message, level: Int, attempt: Int, reason: String, connection: AMQPConnection,
                           log: Logger, watchdog: Watchdog) async -> Duration? {
        let delay = RetryPolicy.jittered(topology.policy.delay(level: level), random: Double.random(in: 0..<1))
        var properties = message.delivery.properties
        // Persistent whatever the original was: a copy waits in a classic
        // delay queue, which keeps only persistent messages over a restart.
        properties.deliveryMode = 2
        var headers = Self.withOrigin(properties.headers, message)
        headers["x-warren-attempt"] = .int64(Int64(attempt))
        headers["x-warren-last-failure"] = .string(reason)
        // A new message to the broker: a quorum queue counts its deliveries
        // afresh, and a stale count would read as one near `delivery_limit`.
        headers["x-delivery-count"] = nil
        properties.headers = headers
        properties.expiration = "\(delay.milliseconds)"
        let target = topology.retryQueue(level: level)
        guard await publishCopy(message, to: target, properties: properties, connection: connection, log: log,
                                watchdog: watchdog) else { return nil }
        connection.ack(message.delivery)
        metrics.retryPublishes.increment()
        return delay
    }

    /// The circuit breaker spares a failed attempt (see `CircuitBreaker`):
    /// the message goes back without the attempt counted, behind the
    /// others, so the one message a half-open breaker lets through is
    /// seldom the same again. A copy with its attempt number unchanged, the
    /// original acked once the broker confirmed it: through the first delay
    /// queue, or, for a consumer without delay queues (`max_attempts = 1`),
    /// straight to the tail of its own queue. A `basic.nack` with requeue
    /// would put it back at the head: it would be the next message let
    /// through too, and one that always fails would keep every message
    /// behind it waiting for ever.
    func retryUncounted(_ message: Message, reason: String, connection: AMQPConnection, watchdog: Watchdog) async {
        if !connection.canSettle(message.delivery) {
            dropped(message)
            return
        }
        let log = logger(for: message)
        let capped = Failure(capping: Failure(reason: reason), at: Failure.reasonLimit).reason
        guard topology.policy.levels > 0 else {
            if await requeueAtTail(message, reason: capped, connection: connection, log: log, watchdog: watchdog) {
                logOutcome(.requeued, message, level: .warning,
                           "handler failed while the circuit breaker is open; requeued at the tail of the queue, the attempt not counted",
                           reason: reason, failed: true)
                metrics.requeued.increment()
            }
            return
        }
        if let delay = await retryCopy(message, level: 1, attempt: message.attempt, reason: capped, connection: connection,
                                       log: log, watchdog: watchdog) {
            logOutcome(.retry, message, level: .warning,
                       "handler failed while the circuit breaker is open; back in the queue after a delay, the attempt not counted",
                       reason: reason, metadata: ["retry_in": "\(delay)", "next_attempt": "\(message.attempt)"])
            metrics.retried.increment()
        }
    }

    /// Publishes a copy to the tail of the consumer's own queue (the
    /// default exchange), its attempt number unchanged, and acks the
    /// original once the broker confirmed it; false when the copy was
    /// refused (the original requeued instead, see `publishCopy`).
    private func requeueAtTail(_ message: Message, reason: String, connection: AMQPConnection, log: Logger,
                               watchdog: Watchdog) async -> Bool {
        var properties = message.delivery.properties
        properties.deliveryMode = 2
        var headers = Self.withOrigin(properties.headers, message)
        headers["x-warren-attempt"] = .int64(Int64(message.attempt))
        headers["x-warren-last-failure"] = .string(reason)
        // A new message to the broker: a quorum queue counts its deliveries afresh.
        headers["x-delivery-count"] = nil
        properties.headers = headers
        guard await publishCopy(message, to: settings.queue, properties: properties, connection: connection, log: log,
                                watchdog: watchdog) else { return false }
        connection.ack(message.delivery)
        return true
    }

    /// The handler succeeded and its output is published: the reply to
    /// `reply_to` (with `replies`), the message to `output_exchange`, or
    /// both, each confirmed by the broker before the request is acked.
    /// Output over `max_body`, or a publish the broker refused (unroutable:
    /// no queue by that name; an exchange that does not exist), did not
    /// confirm in time, or would not take during a stop, makes the attempt
    /// a failure: retried or dead-lettered by the usual rules, never acked.
    /// When the reply went out and the output message did not, the retry
    /// answers again: a duplicate reply, never a missing one.
    ///
    /// A confirm that comes after its wait gave up means the reply went
    /// out while the request is retried: a duplicate reply, the price of
    /// never acking a request without its reply. Requesters match replies
    /// by `correlation_id` and drop ones they no longer wait for.
    func publishOutput(_ message: Message, output: MessageBody?, connection: AMQPConnection, watchdog: Watchdog) async {
        // The request's connection or channel is gone: the broker redelivers
        // it, and its next run answers; a reply now would be a second one.
        if !connection.canSettle(message.delivery) {
            dropped(message)
            return
        }
        let body = output ?? MessageBody([])
        let properties = message.delivery.properties
        var problem: String? = nil
        if body.count > settings.outputLimit {
            problem = "the handler's output (\(body.count) bytes) is larger than max_body (\(settings.outputLimit) bytes; 128 MiB at most for output)"
        }
        if problem == nil, settings.replies, let replyTo = properties.replyTo, !replyTo.isEmpty {
            let direct = DirectReplyTo.isDirect(replyTo)
            // Published, it would bring down the connection (see
            // `DirectReplyTo`); and no later attempt can deliver it.
            if direct, let malformed = DirectReplyTo.problem(replyTo) {
                await deadLetterUndeliverable(message, reason: malformed + "; no reply can be sent, the request is dead-lettered without retries",
                                              connection: connection, watchdog: watchdog)
                return
            }
            let reply = HandlerOutput.replyProperties(for: properties, contentType: settings.replyContentType,
                                                      carrying: message.trace?.carried ?? [])
            if let error = await (direct ? directReplies : publisher).publish(
                body, exchange: "", routingKey: replyTo, properties: reply,
                mandatory: !direct, shutdown: watchdog.shutdown) {
                metrics.refusedPublishes.increment()
                // The broker closed the connection on this reply: a stale
                // address does that (the requester's node or channel is
                // gone), and would again at every retry.
                if direct && error.isConnectionFatal {
                    await deadLetterUndeliverable(message, reason: "the broker closed the direct reply-to connection when the reply to '\(replyTo.prefix(120))' was published (\(error.reason)): a stale or bad address, which RabbitMQ 3.10 cannot route; the request is dead-lettered without retries",
                                                  connection: connection, watchdog: watchdog)
                    return
                }
                problem = "the reply to '\(replyTo)' could not be delivered: \(error.reason)"
            } else {
                metrics.replies.increment()
            }
        }
        if problem == nil, let exchange = settings.outputExchange {
            let next = HandlerOutput.outputProperties(for: properties, contentType: settings.replyContentType,
                                                      carrying: message.trace?.carried ?? [])
            let target = exchange == "amq.default" ? "" : exchange
            if let error = await publisher.publish(body, exchange: target, routingKey: settings.outputRoutingKey,
                                                   properties: next, shutdown: watchdog.shutdown) {
                problem = "the output to exchange '\(exchange)' (routing key '\(settings.outputRoutingKey)') could not be delivered: \(error.reason)"
                metrics.refusedPublishes.increment()
            } else {
                metrics.outputPublishes.increment()
            }
        }
        guard let problem else {
            ack(message, on: connection)
            return
        }
        logger.warning("the handler succeeded but its output was not delivered; the attempt counts as failed",
                       metadata: ["message_id": "\(message.logID)", "attempt": "\(message.attempt)", "problem": "\(problem)"])
        await settle(message, outcome: .retry(Failure(reason: problem)), stop: nil, connection: connection, watchdog: watchdog)
    }

    /// A request whose reply can never be delivered: dead-lettered at once,
    /// whatever attempts are left, since every one would fail the same way.
    private func deadLetterUndeliverable(_ message: Message, reason: String, connection: AMQPConnection,
                                         watchdog: Watchdog) async {
        if !connection.canSettle(message.delivery) {
            dropped(message)
            return
        }
        let log = logger(for: message)
        await deadLetter(message, reason: Failure(capping: Failure(reason: reason), at: Failure.reasonLimit).reason,
                         failure: nil, connection: connection,
                         log: log, watchdog: watchdog)
    }

    /// `max_body`: a body this large never reaches a handler (a command
    /// would get it on stdin, an in-process handler in memory); it goes to
    /// the dead-letter queue whole, its size in `x-warren-body-size`.
    func refuseOversized(_ message: Message, connection: AMQPConnection, watchdog: Watchdog) async {
        var log = logger(for: message)
        log[metadataKey: "body_size"] = "\(message.payload.count)"
        log[metadataKey: "max_body"] = "\(settings.maxBody)"
        await deadLetter(message, reason: "body too large", failure: nil,
                         extraHeaders: ["x-warren-body-size": .int64(Int64(message.payload.count))],
                         connection: connection, log: log, watchdog: watchdog)
    }

    /// Publishes the dead-letter copy, then acks the original once the broker confirmed it.
    private func deadLetter(_ message: Message, reason: String, failure: Failure?, extraHeaders: [String: FieldValue] = [:],
                            connection: AMQPConnection, log: Logger, watchdog: Watchdog) async {
        var properties = message.delivery.properties
        properties.deliveryMode = 2  // kept over a restart, like the retry copy
        var headers = Self.withOrigin(properties.headers, message)
        headers["x-warren-reason"] = .string(reason)
        if let code = failure?.exitCode { headers["x-warren-exit-code"] = .int32(code) }
        if let signal = failure?.signal { headers["x-warren-signal"] = .int32(signal) }
        headers["x-warren-timed-out"] = .bool(failure?.timedOut ?? false)
        headers["x-warren-attempts"] = .int64(Int64(message.attempt))
        if let line = failure?.lastErrorLine { headers["x-warren-last-stderr"] = .string(line) }
        headers["x-warren-consumer"] = .string(settings.name)
        headers["x-warren-queue"] = .string(settings.queue)
        headers["x-warren-dead-lettered-at"] = .timestamp(UInt64(currentUnixTime()))
        for (key, value) in extraHeaders { headers[key] = value }
        // A dead letter waits for an operator: the producer's TTL would
        // let it expire unseen in the dead-letter queue.
        if let expiration = properties.expiration {
            headers["x-warren-original-expiration"] = .string(expiration)
            properties.expiration = nil
        }
        properties.headers = headers
        if await publishCopy(message, to: settings.deadLetterQueue, properties: properties, connection: connection,
                             log: log, watchdog: watchdog) {
            connection.ack(message.delivery)
            logOutcome(.deadLetter, message, level: .error, "message dead-lettered", reason: reason,
                       metadata: ["dead_letter_queue": "\(settings.deadLetterQueue)"])
            metrics.deadLetterPublishes.increment()
            metrics.deadLettered.increment()
        }
    }

    /// warren could not start the handler for want of its own resources:
    /// not an attempt. Back to the queue after a pause (see `ResourceShortage`).
    private func requeueForShortage(_ message: Message, failure: Failure, connection: AMQPConnection, log: Logger,
                                    watchdog: Watchdog) async {
        let decision = shortage.failed(now: monotonicMilliseconds())
        if decision.report {
            log.warning("cannot start handlers: warren is out of descriptors, processes or memory; messages are requeued after a pause without counting an attempt (raise LimitNOFILE/TasksMax or lower concurrency)",
                        metadata: ["error": "\(failure.reason)", "requeued_since_last_report": "\(decision.unreported)"])
        }
        await pause(ResourceShortage.backoff.delay(decision.streak, random: Double.random(in: 0..<1)), unless: watchdog)
        connection.nack(message.delivery, requeue: true)
        metrics.requeued.increment()
        logOutcome(.requeued, message, "message requeued: warren is short of descriptors, processes or memory; no attempt counted",
                   reason: failure.reason)
    }

    /// Its connection or channel went before the outcome was settled (the
    /// broker closed the channel for an ack timeout, say): the broker
    /// redelivers it. Said at notice whatever `log_outcomes` says, as before.
    private func dropped(_ message: Message) {
        logOutcome(.dropped, message, level: .notice,
                   "connection lost before the outcome was settled; the broker redelivers the message")
    }

    /// A quorum queue's message the broker delivers for the last time: if
    /// it goes back to the queue once more (warren stopped or killed
    /// mid-message, the connection lost), RabbitMQ dead-letters it, and
    /// only its `x-death` header says why. Said here too, so the log shows
    /// the message that is about to leave that way.
    func warnIfLastDelivery(_ message: Message) {
        guard let limit = settings.deliveryLimit,
              let count = message.delivery.properties.headers?["x-delivery-count"]?.integerValue, count >= limit
        else { return }
        logger.warning("the broker's last delivery of this message (delivery_limit): returned once more, RabbitMQ moves it to the dead-letter queue with x-first-death-reason = delivery_limit",
                       metadata: ["message_id": "\(message.logID)", "delivery_count": "\(count)",
                                  "delivery_limit": "\(limit)", "dead_letter_queue": "\(settings.deadLetterQueue)"])
    }

    /// Success: its outcome line unless `log_outcomes = false`, and then no metadata built.
    func ack(_ message: Message, on connection: AMQPConnection) {
        connection.ack(message.delivery)
        metrics.acked.increment()
        if outcomeLogging {
            logOutcome(.ack, message, "message acked")
        } else {
            message.trace?.end(.ack, reason: nil, failed: false)
        }
    }

    /// Publishes a copy and waits for the broker's confirm (bounded: see
    /// `Publisher`). On refusal, or no confirm in time, requeues the
    /// original and returns false: an original is never acked without a
    /// confirmed copy.
    private func publishCopy(_ message: Message, to queue: String, properties: MessageProperties, connection: AMQPConnection,
                             log: Logger, watchdog: Watchdog) async -> Bool {
        let result = await publisher.publishCopy(message.payload, to: queue, properties: properties, shutdown: watchdog.shutdown)
        guard let result else {
            if !connection.canSettle(message.delivery) {
                log.warning("the channel was lost while the copy was confirmed: the broker redelivers the original too",
                            metadata: ["target_queue": "\(queue)"])
            }
            return true
        }
        log.error("the broker refused the copy; the message is requeued instead, not acked (after a pause)",
                  metadata: ["target_queue": "\(queue)", "error": "\(result)"])
        await pause(settings.retryDelay, unless: watchdog)
        connection.nack(message.delivery, requeue: true)
        metrics.refusedPublishes.increment()
        metrics.requeued.increment()
        logOutcome(.requeued, message, level: .warning, "message requeued: its copy was refused",
                   reason: "\(result)", metadata: ["target_queue": "\(queue)"], failed: true)
        return false
    }

    /// Waits before a message goes back to the queue after a refused copy or a shortage, at most `SettleBounds.refusalPauseCap`.
    private func pause(_ duration: Duration, unless watchdog: Watchdog) async {
        await watchdog.shutdown.sleep(for: min(duration, SettleBounds.refusalPauseCap))
    }

    /// Keeps where the message first came from, since copies travel through other queues.
    static func withOrigin(_ headers: FieldTable?, _ message: Message) -> FieldTable {
        var headers = headers ?? FieldTable()
        if headers["x-warren-exchange"] == nil {
            headers["x-warren-exchange"] = .string(message.delivery.exchange)
            headers["x-warren-routing-key"] = .string(message.delivery.routingKey)
        }
        return headers
    }
}

extension Outcome {
    var failure: Failure? {
        switch self {
        case .ack: nil
        case .retry(let failure), .deadLetter(let failure): failure
        }
    }
}

func currentUnixTime() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec
}

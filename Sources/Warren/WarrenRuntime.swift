import AMQP
public import Logging
import Synchronization

/// The running daemon: its consumers, the connection of the moment, and the
/// lifecycle state machine that decides what happens to every delivery,
/// signal and lost connection.
///
/// Everything that can change the lifecycle arrives as an event on one
/// stream and is handled by one loop, in order: the state machine, the
/// current connection and the channel map are local to that loop.
public final class WarrenRuntime: Sendable {
    enum Event: Sendable {
        /// A new connection; `generation` tells its events from older ones'.
        case connected(AMQPConnection, generation: Int)
        case amqp(AMQPEvent, generation: Int)
        case resubscribe(Resubscribe)
        /// `failFast`: the first round of connects failed.
        case cannotConnect(AMQPError)
        /// The router's counters moved: deliveries dispatched, handlers finished.
        case counted
        case stop
        case quit
        case graceExpired
    }

    /// Called on every lifecycle state change (systemd notify, metrics, logs).
    public typealias Observer = @Sendable (Lifecycle.State) -> Void

    public let settings: WarrenSettings
    private let handlers: [String: any MessageHandler]
    private let logger: Logger
    private let observer: Observer?
    private let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    /// Times handlers out, and ends every running one (grace over, second signal, quit).
    private let watchdog: Watchdog?
    /// Why there is no watchdog (no descriptor or thread to spare): `run` returns 1.
    private let watchdogProblem: String
    /// Thrown when draining begins: starts the grace timer, stops reconnecting.
    private let drainStarted = TerminationSignal()
    /// Re-subscribe requests for consumers the broker cancelled, served with backoff.
    private let resubscribeRequests: AsyncStream<Resubscribe>
    private let resubscribeSink: AsyncStream<Resubscribe>.Continuation

    /// A consumer to subscribe again after a backoff, on the connection of
    /// `generation` only: a request outliving its connection is dropped, so
    /// reconnects never pile up chains of retries.
    struct Resubscribe: Sendable {
        var consumer: Int
        var attempt: Int
        var generation: Int
    }
    /// Set once a connection got every consumer consuming, so the next loss
    /// starts its backoff from the beginning.
    private let healthy = Mutex(false)
    private let metrics = RuntimeMetrics()
    /// Cleared when a reload replaced this runtime: it keeps counting its
    /// messages, but its states no longer reach the process's metrics.
    private let current = Atomic<Bool>(true)
    /// A reload's new consumers: the old ones still serve, so a failure to
    /// start ends this runtime instead of being retried.
    private let failFast: Bool
    /// The lifecycle state last reported, for readiness checks.
    private let lastState = Mutex<Lifecycle.State>(.starting(inFlight: 0))
    /// The connection the control loop uses now, for liveness checks.
    private let liveConnection = Mutex<AMQPConnection?>(nil)
    /// Retry and dead-letter copies go out on this connection of their own.
    let publisher: Publisher

    /// - Parameter handlers: in-process handlers by consumer name; consumers
    ///   without one run their `command` through `ExecHandler`.
    /// - Parameter supervisor: the process supervisor for command handlers;
    ///   share one between runtimes that replace each other (reloads).
    /// - Parameter failFast: for a reload's new consumers: if the first round
    ///   of connects fails, or the set-up is refused, `run` returns 1 instead
    ///   of retrying.
    public init(settings: WarrenSettings, handlers: [String: any MessageHandler] = [:], logger: Logger,
                supervisor: ProcessSupervisor? = nil, failFast: Bool = false, observer: Observer? = nil) {
        self.settings = settings
        self.failFast = failFast
        do throws(Watchdog.StartError) {
            watchdog = try Watchdog()
            watchdogProblem = ""
        } catch {
            watchdog = nil
            watchdogProblem = error.description
        }
        var resolved = handlers
        let needsProcesses = settings.consumers.contains { handlers[$0.name] == nil }
        if needsProcesses {
            // A daemon passes its own (and stops if it cannot have one); an
            // embedder that lacks one gets every message requeued with a warning.
            var available = supervisor
            var unavailable = ""
            if available == nil {
                ProcessSupervisor.prepareProcess()
                do { available = try ProcessSupervisor() } catch { unavailable = error.description }
            }
            for consumer in settings.consumers where handlers[consumer.name] == nil {
                guard let supervisor = available else {
                    let reason = unavailable
                    resolved[consumer.name] = ClosureHandler { _ in .retry(Failure(reason: reason, resourceShortage: true)) }
                    continue
                }
                resolved[consumer.name] = ExecHandler(
                    argv: consumer.command, killAfter: settings.shutdown.killAfter, exitAck: consumer.exitAck,
                    exitRetry: consumer.exitRetry, exitDeadLetter: consumer.exitDeadLetter, supervisor: supervisor,
                    logger: logger)
            }
        }
        self.handlers = resolved
        self.logger = logger
        publisher = Publisher(broker: settings.broker, logger: logger)
        self.observer = observer
        (events, eventSink) = AsyncStream<Event>.makeStream()
        (resubscribeRequests, resubscribeSink) = AsyncStream<Resubscribe>.makeStream()
    }

    /// For the systemd watchdog: false when the I/O loop of the current
    /// connection has not gone round within `milliseconds`. Between
    /// connections there is no loop to be stuck, and warren is alive.
    public func isResponsive(within milliseconds: Int64) -> Bool {
        guard let connection = liveConnection.withLock({ $0 }) else { return true }
        return connection.isResponsive(within: milliseconds)
    }

    /// A newer runtime took over (a reload): this one drains, and its states
    /// are no longer the process's.
    public func retire() {
        current.store(false, ordering: .relaxed)
        stop()
    }

    /// Ready for `/readyz`: every consumer is consuming.
    public var isReady: Bool {
        if case .running = lastState.withLock({ $0 }) { return true }
        return false
    }

    /// SIGUSR1: writes every running handler to the log (consumer, message
    /// id, attempt, pid, age), oldest first.
    public func logInFlight() {
        let running = watchdog?.report() ?? []
        logger.notice("handlers running now", metadata: ["count": "\(running.count)"])
        for handler in running {
            logger.notice("in flight", metadata: [
                "consumer": "\(handler.consumer)", "message_id": "\(handler.messageID)", "attempt": "\(handler.attempt)",
                "pid": "\(handler.pid.map(String.init) ?? "-")", "age": "\(handler.age)"])
        }
    }

    /// SIGTERM / SIGINT: drain; a second call skips the rest of the grace period.
    public func stop() { eventSink.yield(.stop) }

    /// SIGQUIT: terminate handlers now, requeue everything, close.
    public func quit() { eventSink.yield(.quit) }

    /// How long a stop waits for the broker to answer `basic.cancel` and
    /// the closing handshake before it drops the socket (a silent broker,
    /// a blocked one): part of the few seconds a stop may take beyond
    /// `grace_period + kill_after`.
    static let brokerAnswerBound: Duration = .seconds(5)

    /// Connects (retrying with backoff), consumes, and runs until stopped.
    /// Returns the exit code.
    public func run() async -> Int32 {
        let consumers = settings.consumers.enumerated().map { index, consumer in
            Consumer(settings: consumer, index: index, handler: handlers[consumer.name]!, publisher: publisher, logger: logger)
        }
        let sink = eventSink
        let router = DeliveryRouter(consumers: consumers) { sink.yield(.counted) }
        let executor: LoopExecutor
        do throws(IOThread.StartError) {
            executor = try LoopExecutor(logger: logger)
        } catch {
            logger.critical("cannot start the consumers: \(error.description)")
            watchdog?.close()
            return 1
        }
        defer { executor.stop() }
        guard let watchdog else {
            logger.critical("cannot start the consumers: \(watchdogProblem); free descriptors or raise the task limit")
            return 1
        }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.superviseConnections(router: router, executor: executor) }
            group.addTask { await self.serveResubscribes() }
            group.addTask { await self.publisher.run() }
            for consumer in consumers {
                group.addTask {
                    await consumer.runWorkers(watchdog: watchdog, executor: executor) { router.finished() }
                }
            }
            // Keeps the in-flight gauge current while running; once draining,
            // the router reports every change itself.
            group.addTask {
                while !self.drainStarted.isFired {
                    try? await Task.sleep(for: .seconds(1))
                    if Task.isCancelled { return }
                    sink.yield(.counted)
                }
            }
            let grace = settings.shutdown.gracePeriod
            group.addTask {
                guard await self.drainStarted.wait() else { return }
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { sink.yield(.graceExpired) }
            }
            var loop = ControlLoop(runtime: self, watchdog: watchdog, consumers: consumers, router: router)
            let code = await loop.run()
            // Nothing is in flight any more: let idle workers go, stop timers and reconnects.
            for consumer in consumers { _ = consumer.buffer.close() }
            watchdog.fire()
            drainStarted.fire()
            resubscribeSink.finish()
            group.cancelAll()
            if let connection = loop.current {
                _ = await finishes(within: Self.brokerAnswerBound, orElse: { connection.abort() }) { await connection.close() }
            }
            // After the last outcome: no copy is published any more.
            await publisher.stop()
            watchdog.close()
            return code
        }
    }

    // MARK: Connections

    /// Makes connections, one after the other, for as long as warren runs:
    /// connect with backoff (trying each broker URL in turn), hand the
    /// connection to the control loop, forward its events, and when it is
    /// lost, start again. Stops once draining begins.
    private func superviseConnections(router: DeliveryRouter, executor: LoopExecutor) async {
        let endpoints = settings.broker.endpoints
        let backoff = Backoff(minimum: settings.broker.reconnectMin, maximum: settings.broker.reconnectMax)
        var endpointIndex = 0
        var failures = 0
        var generation = 0
        var connectedOnce = false
        let sink = eventSink
        while !drainStarted.isFired && !Task.isCancelled {
            let endpoint = endpoints[endpointIndex % endpoints.count]
            do {
                generation += 1
                let tag = generation
                // Deliveries go from the I/O thread straight into consumers'
                // buffers; other events into the control loop's stream.
                let batch = router.makeBatch()
                let connection = try await AMQPConnection.connect(endpoint, logger: logger, executor: executor, onBatchEnd: {
                    router.flush(batch)
                }) { event in
                    if case .delivery(let delivery) = event {
                        router.dispatch(delivery, generation: tag, batch: batch)
                    } else {
                        // Deliveries before this event reach their buffers first.
                        router.flush(batch)
                        sink.yield(.amqp(event, generation: tag))
                    }
                }
                logger.info("connected", metadata: ["broker": "\(endpoint.redactedURL)"])
                connectedOnce = true
                healthy.withLock { $0 = false }
                eventSink.yield(.connected(connection, generation: tag))
                await withTaskCancellationHandler {
                    await connection.closed()
                } onCancel: {
                    connection.closeNow()
                }
                if healthy.withLock({ $0 }) { failures = 0 }
            } catch {
                endpointIndex += 1
                // A full round over every URL failed: back off before the next.
                if endpointIndex % endpoints.count != 0 {
                    logger.warning("cannot connect; trying the next broker URL", metadata: [
                        "broker": "\(endpoint.redactedURL)", "error": "\(error)"])
                    continue
                }
                if failFast && !connectedOnce {
                    eventSink.yield(.cannotConnect(error))
                    return
                }
                let delay = backoff.delay(failures, random: Double.random(in: 0..<1))
                failures += 1
                logger.warning("cannot connect to the broker; retrying", metadata: [
                    "broker": "\(endpoint.redactedURL)", "error": "\(error)", "attempt": "\(failures)", "retry_in": "\(delay)"])
                await drainStarted.sleep(for: delay)
                continue
            }
            guard !drainStarted.isFired && !Task.isCancelled else { break }
            let delay = backoff.delay(failures, random: Double.random(in: 0..<1))
            failures += 1
            logger.warning("reconnecting", metadata: ["retry_in": "\(delay)", "attempt": "\(failures)"])
            await drainStarted.sleep(for: delay)
        }
    }

    private func serveResubscribes() async {
        let backoff = Backoff(minimum: settings.broker.reconnectMin, maximum: settings.broker.reconnectMax)
        await withTaskGroup(of: Void.self) { group in
            for await request in resubscribeRequests {
                group.addTask {
                    await self.drainStarted.sleep(for: backoff.delay(request.attempt, random: Double.random(in: 0..<1)))
                    self.eventSink.yield(.resubscribe(request))
                }
            }
            group.cancelAll()
        }
    }

    // MARK: The control loop

    /// The one loop that owns the lifecycle, the current connection and the
    /// channel of each consumer on it.
    private struct ControlLoop {
        let runtime: WarrenRuntime
        let watchdog: Watchdog
        let consumers: [Consumer]
        let router: DeliveryRouter
        var machine = Lifecycle()
        var reported = Lifecycle().state
        var current: AMQPConnection? = nil
        var currentGeneration = 0
        /// Consuming channel by consumer index, on `current`.
        var channelOf: [Int: UInt16] = [:]
        /// Consuming channel numbers of `current`.
        var channels = ChannelNumbers()
        var logger: Logger { runtime.logger }

        init(runtime: WarrenRuntime, watchdog: Watchdog, consumers: [Consumer], router: DeliveryRouter) {
            self.runtime = runtime
            self.watchdog = watchdog
            self.consumers = consumers
            self.router = router
        }

        mutating func run() async -> Int32 {
            for await event in runtime.events {
                var action = await handle(event)
                report()
                while action != .none {
                    if case .exit(let code) = action { return code }
                    action = await perform(action)
                    report()
                }
            }
            return 1
        }

        /// Tells the observer of every state passed through, closing included.
        private mutating func report() {
            guard machine.state != reported else { return }
            reported = machine.state
            runtime.lastState.withLock { $0 = machine.state }
            if runtime.current.load(ordering: .relaxed) { runtime.metrics.record(machine.state) }
            runtime.observer?(machine.state)
        }

        private mutating func handle(_ event: Event) async -> Lifecycle.Action {
            switch event {
            case .connected(let connection, let generation):
                return await connected(connection, generation: generation)
            case .amqp(let event, let generation):
                // A straggler from a connection already given up: its deliveries are void,
                // and the broker has them back.
                guard generation == currentGeneration, let connection = current else { return .none }
                return await handle(event, on: connection)
            case .resubscribe(let request):
                let index = request.consumer, attempt = request.attempt
                guard request.generation == currentGeneration else { return .none }
                // Also before every consumer consumes (starting, reconnecting): the others do meanwhile.
                switch machine.state {
                case .starting, .reconnecting, .running: break
                case .draining, .closing, .stopped: return .none
                }
                guard let connection = current else { return .none }
                return await subscribe(consumers[index], on: connection, attempt: attempt)
            case .cannotConnect(let error):
                logger.error("the new config cannot connect to the broker", metadata: ["error": "\(error)"])
                guard machine.state == .starting(inFlight: 0) else { return .none }
                return machine.failed()
            case .counted:
                return absorbCounts()
            case .stop:
                absorbCountsBeforeDraining()
                return machine.stopRequested()
            case .quit:
                absorbCountsBeforeDraining()
                return machine.quitRequested()
            case .graceExpired:
                return machine.graceExpired()
            }
        }

        /// Takes in the router's counters: finishes first read, dispatches
        /// second, so every finish is matched by a dispatch already counted.
        private mutating func absorbCounts() -> Lifecycle.Action {
            let finished = router.finishedCount.exchange(0, ordering: .acquiringAndReleasing)
            let dispatched = router.dispatchedCount.exchange(0, ordering: .acquiringAndReleasing)
            switch machine.state {
            case .closing, .stopped:
                return .none
            default:
                _ = machine.dispatched(dispatched)
                return machine.released(finished)
            }
        }

        /// While running, counts are taken in only once a second; the drain
        /// (and the STATUS it reports) starts from exact ones. Outside the
        /// drain, taking them in never calls for an action.
        private mutating func absorbCountsBeforeDraining() {
            switch machine.state {
            case .starting, .running, .reconnecting: _ = absorbCounts()
            case .draining, .closing, .stopped: break
            }
        }

        private mutating func handle(_ event: AMQPEvent, on connection: AMQPConnection) async -> Lifecycle.Action {
            switch event {
            case .delivery(let delivery):
                // Deliveries go through the router; one here came another way.
                connection.nack(delivery, requeue: true)
                return .none
            case .consumerCancelledByBroker(let channel, let tag):
                guard let index = stopConsuming(on: channel) else { return .none }
                let consumer = consumers[index]
                consumer.logger.warning("the broker cancelled the consumer (queue deleted, or a node failed over); subscribing again",
                                        metadata: ["queue": "\(consumer.settings.queue)", "consumer_tag": "\(tag)"])
                try? await connection.closeChannel(channel)
                runtime.resubscribeSink.yield(Resubscribe(consumer: index, attempt: 0, generation: currentGeneration))
                return .none
            case .channelClosed(let channel, let error):
                if let index = stopConsuming(on: channel) {
                    consumers[index].logger.error("the broker closed the consumer's channel; subscribing again",
                                                  metadata: ["error": "\(error)"])
                    runtime.resubscribeSink.yield(Resubscribe(consumer: index, attempt: 0, generation: currentGeneration))
                }
                return .none
            case .blocked(let reason):
                logger.warning("the broker blocked the consuming connection", metadata: ["reason": "\(reason)"])
                return .none
            case .unblocked:
                logger.notice("the broker unblocked the consuming connection")
                return .none
            case .returned:
                return .none
            case .connectionLost(let error):
                logger.error("connection to the broker lost", metadata: ["error": "\(error)"])
                return lost()
            }
        }

        /// A new connection: subscribe every consumer, unless warren is stopping.
        private mutating func connected(_ connection: AMQPConnection, generation: Int) async -> Lifecycle.Action {
            switch machine.state {
            case .starting, .reconnecting:
                break
            case .running, .draining, .closing, .stopped:
                // Nothing was done on it: nothing to flush, no broker to wait for.
                connection.abort()
                return .none
            }
            current = connection
            runtime.liveConnection.withLock { $0 = connection }
            currentGeneration = generation
            router.use(connection, generation: generation)
            channelOf = [:]
            channels = ChannelNumbers(limit: runtime.settings.channelLimit)
            let firstStart = machine.state == .starting(inFlight: 0)
            // Every queue is declared (or checked) before any consumer
            // consumes, so a refused topology fails a start before a handler
            // runs. After that, each consumer on its own: one whose queue is
            // broken re-subscribes with backoff while the others consume.
            var prepared: [(Consumer, UInt16)] = []
            for consumer in consumers {
                do {
                    prepared.append((consumer, try await prepare(consumer, on: connection)))
                } catch {
                    if let action = await setUpFailed(consumer, error, firstStart: firstStart, on: connection) { return action }
                }
            }
            // Once one consumes, handlers may run: a refusal now never fails
            // the start (that would end them mid-message); the consumer
            // subscribes again later, and a reload not consuming in time is
            // abandoned with a drain.
            for (consumer, channel) in prepared {
                do {
                    try await consume(consumer, on: channel, connection)
                } catch {
                    if let action = await setUpFailed(consumer, error, firstStart: false, on: connection) { return action }
                }
            }
            return startedOnceAllConsume()
        }

        /// What a consumer's failed set-up means: a start that cannot be (a
        /// refused topology at first start, or anything for a reload's new
        /// consumers, which must not pretend to be ready), a connection to
        /// give up, or a re-subscribe later for this consumer alone.
        private mutating func setUpFailed(_ consumer: Consumer, _ error: AMQPError, firstStart: Bool,
                                          on connection: AMQPConnection) async -> Lifecycle.Action? {
            if firstStart && (error.code == .invalidArgument || (runtime.failFast && !error.isConnectionFatal)) {
                if runtime.failFast {
                    logger.error("the new config cannot start: \(error.reason)")
                } else {
                    logger.critical("warren cannot start: \(error.reason)")
                }
                return machine.failed()
            }
            if error.isConnectionFatal {
                logger.error("setting up the consumers failed; reconnecting", metadata: ["error": "\(error)"])
                return await abandon(connection)
            }
            consumer.logger.error("setting up the consumer failed; the others go on, this one subscribes again later",
                                  metadata: ["error": "\(error)"])
            runtime.resubscribeSink.yield(Resubscribe(consumer: consumer.index, attempt: 1, generation: currentGeneration))
            return nil
        }

        /// Running (systemd `READY=1`, `/readyz`, a reload's promotion) means
        /// every consumer consumes, not merely that a connection is up.
        private mutating func startedOnceAllConsume() -> Lifecycle.Action {
            guard channelOf.count == consumers.count else { return .none }
            runtime.healthy.withLock { $0 = true }
            return machine.started()
        }

        /// Gives up on a connection that still works but cannot serve (a
        /// channel that will not reopen, channel numbers used up): closes it
        /// and goes through a reconnect as if the broker had dropped it, so
        /// what its consumers buffered is dropped and a new one is made.
        private mutating func abandon(_ connection: AMQPConnection) async -> Lifecycle.Action {
            await connection.close()
            guard connection === current else { return .none }
            return lost()
        }

        /// The current connection is gone. Reconnecting already (a consumer
        /// was still being set up on it): its leftovers go all the same.
        private mutating func lost() -> Lifecycle.Action {
            let action = machine.connectionLost()
            if action == .none, case .reconnecting = machine.state { return .reconnect }
            return action
        }

        /// Opens a channel for the consumer and declares (or checks) its
        /// queues on it; returns the channel, not yet consuming.
        private mutating func prepare(_ consumer: Consumer, on connection: AMQPConnection) async throws(AMQPError) -> UInt16 {
            let s = consumer.settings
            guard let channel = channels.allocate() else {
                throw AMQPError(.closed, "every consuming channel number of this connection has been used; a new connection is needed")
            }
            do throws(AMQPError) {
                try await connection.openChannel(channel, prefetch: s.prefetch)
                if s.declare {
                    try await consumer.topology.declare(on: connection, channel: channel)
                } else {
                    try await consumer.topology.check(on: connection, channel: channel)
                }
                return channel
            } catch {
                await release(channel, on: connection, after: error)
                throw error
            }
        }

        private mutating func consume(_ consumer: Consumer, on channel: UInt16, _ connection: AMQPConnection) async throws(AMQPError) {
            let s = consumer.settings
            // Routed before consuming, so the first delivery finds its buffer.
            router.route(channel: channel, to: consumer.index)
            do throws(AMQPError) {
                _ = try await connection.consume(queue: s.queue, on: channel, consumerTag: consumer.consumerTag(channel: channel))
            } catch {
                router.route(channel: channel, to: nil)
                await release(channel, on: connection, after: error)
                throw error
            }
            channelOf[consumer.index] = channel
            consumer.logger.info("consuming", metadata: ["queue": "\(s.queue)", "prefetch": "\(s.prefetch)",
                                                         "concurrency": "\(s.concurrency)", "channel": "\(channel)"])
        }

        /// A channel whose set-up failed received nothing: once closed, its number may serve again.
        private mutating func release(_ channel: UInt16, on connection: AMQPConnection, after error: AMQPError) async {
            guard !error.isConnectionFatal else { return }
            try? await connection.closeChannel(channel)
            channels.releaseUnused(channel)
        }

        /// Forgets the consumer on `channel` (and unroutes it); returns its index, if one was there.
        private mutating func stopConsuming(on channel: UInt16) -> Int? {
            guard let index = channelOf.first(where: { $0.value == channel })?.key else { return nil }
            channelOf[index] = nil
            channels.retire(channel)
            router.route(channel: channel, to: nil)
            return index
        }

        /// Subscribing again after the broker cancelled a consumer, or after
        /// its set-up failed, on a channel number its old channel never had.
        private mutating func subscribe(_ consumer: Consumer, on connection: AMQPConnection, attempt: Int) async -> Lifecycle.Action {
            guard channelOf[consumer.index] == nil else { return .none }
            do {
                let channel = try await prepare(consumer, on: connection)
                try await consume(consumer, on: channel, connection)
                return startedOnceAllConsume()
            } catch {
                if error.isConnectionFatal {
                    consumer.logger.warning("subscribing again failed; reconnecting", metadata: ["error": "\(error)"])
                    return await abandon(connection)
                }
                consumer.logger.warning("subscribing again failed; will retry", metadata: [
                    "error": "\(error)", "attempt": "\(attempt + 1)"])
                runtime.resubscribeSink.yield(Resubscribe(consumer: consumer.index, attempt: attempt + 1, generation: currentGeneration))
                return .none
            }
        }

        /// Performs one action; returns the follow-up action, if any.
        private mutating func perform(_ action: Lifecycle.Action) async -> Lifecycle.Action {
            switch action {
            case .none, .exit:
                return .none
            case .notifyReady:
                logger.notice("running", metadata: ["consumers": "\(consumers.count)"])
                return .none
            case .reconnect:
                runtime.metrics.reconnects.increment()
                var dropped = 0
                router.use(nil, generation: currentGeneration)
                if let lost = current {
                    for consumer in consumers { dropped += consumer.buffer.removeAll(from: lost) }
                }
                _ = machine.dispatched(router.dispatchedCount.exchange(0, ordering: .acquiringAndReleasing))
                current = nil
                runtime.liveConnection.withLock { $0 = nil }
                channelOf = [:]
                    logger.warning("reconnecting; running handlers go on, their outcomes will be dropped and the broker redelivers",
                               metadata: ["in_flight": "\(machine.inFlight - dropped)", "dropped_unstarted": "\(dropped)"])
                return machine.released(dropped)
            case .beginDrain, .beginDrainAndTerminate:
                logger.notice("stop requested: draining", metadata: [
                    "in_flight": "\(machine.inFlight)", "grace_period": "\(runtime.settings.shutdown.gracePeriod)"])
                runtime.drainStarted.fire()
                router.reportEveryChange()
                var released = 0
                for consumer in consumers {
                    for received in consumer.buffer.close() {
                        received.connection.nack(received.delivery, requeue: true)
                        released += 1
                    }
                }
                // Count every dispatch made before the buffers closed.
                _ = machine.dispatched(router.dispatchedCount.exchange(0, ordering: .acquiringAndReleasing))
                if action == .beginDrainAndTerminate {
                    logger.notice("quit: terminating every running handler now")
                    watchdog.fire()
                }
                if let connection = current {
                    let cancels = channelOf.sorted(by: { $0.key < $1.key }).map { (consumers[$0.key], $0.value) }
                    let answered = await finishes(within: WarrenRuntime.brokerAnswerBound, orElse: { connection.abort() }) {
                        for (consumer, channel) in cancels {
                            do {
                                try await connection.cancel(consumerTag: consumer.consumerTag(channel: channel), on: channel)
                            } catch {
                                consumer.logger.warning("basic.cancel failed", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                    if !answered {
                        // A wait without a bound would hold the stop; the broker requeues what is unacked.
                        logger.error("the broker did not answer basic.cancel within \(WarrenRuntime.brokerAnswerBound); dropped the connection")
                    }
                }
                if released > 0 { logger.info("released deliveries that had not started", metadata: ["count": "\(released)"]) }
                return machine.released(released)
            case .terminateHandlers:
                logger.warning("terminating running handlers; their messages will be requeued", metadata: [
                    "in_flight": "\(machine.inFlight)", "kill_after": "\(runtime.settings.shutdown.killAfter)"])
                watchdog.fire()
                return .none
            case .close:
                logger.info("all handlers done: flushing acks, closing channels and connection")
                // Settlements reach the socket first; only the handshake can wait on the broker.
                if let connection = current,
                   !(await finishes(within: WarrenRuntime.brokerAnswerBound, orElse: { connection.abort() }) { await connection.close() }) {
                    logger.error("the broker did not answer the close within \(WarrenRuntime.brokerAnswerBound); dropped the connection")
                }
                return machine.closed()
            }
        }
    }
}

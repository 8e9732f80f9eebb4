import AMQP
public import Logging
public import Tracing

/// The running daemon: its consumers, the connection of the moment, and the
/// lifecycle state machine that decides what happens to every delivery,
/// signal and lost connection.
///
/// The parts, each in its own file: `ConnectionSupervisor` makes
/// connections; `ControlLoop` owns the `Lifecycle`, the current connection
/// and the `Subscriptions` on it, and performs each action; `Consumer` runs
/// the workers; `RuntimeStatus` is the snapshot others read. This type is
/// the public face: it builds the parts (`init`, shared by the `warren`
/// executable, embedders and tests), runs them, and forwards signals.
public final class WarrenRuntime: Sendable {
    /// Called on every lifecycle state change (systemd notify, metrics, logs).
    public typealias Observer = @Sendable (Lifecycle.State) -> Void

    public let settings: WarrenSettings
    private let consumers: [Consumer]
    private let logger: Logger
    private let observer: Observer?
    private let events: AsyncStream<ControlLoop.Event>
    private let eventSink: AsyncStream<ControlLoop.Event>.Continuation
    /// Times handlers out, and ends every running one (grace over, second signal, quit).
    private let watchdog: Watchdog?
    /// Why there is no watchdog (no descriptor or thread to spare): `runUntilStopped` returns 1.
    private let watchdogProblem: String
    /// Thrown when draining begins: starts the grace timer, stops reconnecting.
    private let drainStarted: TerminationSignal
    private let resubscribes: ResubscribeTimer
    private let breakerTimer: BreakerTimer
    private let status = RuntimeStatus()
    private let metrics = RuntimeMetrics()
    /// A reload's new consumers: the old ones still serve, so a failure to
    /// start ends this runtime instead of being retried.
    private let failFast: Bool
    /// See `ControlLoop.unbind`.
    private let retiredBindings: [Topology.Binding]
    /// A reload's: the consumers of the config it replaces (see `takeOver`).
    private let replacedConsumers: [String]
    /// Retry and dead-letter copies, replies to queues and output messages
    /// go out on this connection of their own (direct replies on `directReplies`).
    let publisher: Publisher
    /// Direct replies' own connection (see `DirectReplyTo`), run only if a
    /// consumer has `replies = true`.
    let directReplies: Publisher
    /// The process supervisor this runtime made for itself (none was
    /// passed): shut down when the runtime is done, so no thread or
    /// descriptor outlives it. One that was passed belongs to the caller.
    private let ownSupervisor: ProcessSupervisor?

    /// - Parameter handlers: in-process handlers by consumer name; consumers
    ///   without one run their `command` through `ExecHandler`.
    /// - Parameter supervisor: the process supervisor for command handlers;
    ///   share one between runtimes that replace each other (reloads).
    /// - Parameter failFast: for a reload's new consumers: if the first round
    ///   of connects fails, or the set-up is refused, `runUntilStopped` returns 1 instead
    ///   of retrying.
    /// - Parameter previous: a reload's running config: bindings it made
    ///   that this one does not are removed once `removeRetiredBindings()`
    ///   is called (when the runtime running it drains).
    /// - Parameter tracer: a span per delivery (see `DeliveryTracing`);
    ///   pass `InstrumentationSystem.tracer` to use the bootstrapped one.
    /// - Parameter paused: start paused, as if `pause()` came first (a
    ///   reload while paused): the consumers are set up, consume nothing,
    ///   and count as running, until `resume()`.
    public init(settings: WarrenSettings, handlers: [String: any MessageHandler] = [:], logger: Logger,
                supervisor: ProcessSupervisor? = nil, failFast: Bool = false, replacing previous: WarrenSettings? = nil,
                paused: Bool = false, tracer: (any Tracer)? = nil,
                observer: Observer? = nil) {
        self.settings = settings
        retiredBindings = previous.map { Topology.retired(from: $0.consumers, keeping: settings.consumers) } ?? []
        replacedConsumers = previous?.consumers.map(\.name) ?? []
        self.failFast = failFast
        do throws(Watchdog.StartError) {
            watchdog = try Watchdog()
            watchdogProblem = ""
        } catch {
            watchdog = nil
            watchdogProblem = error.description
        }
        let (resolved, workers, owned) = Self.resolve(handlers, for: settings, supervisor: supervisor, logger: logger)
        ownSupervisor = owned
        self.logger = logger
        let publisher = Publisher(broker: settings.broker, logger: logger)
        self.publisher = publisher
        let directReplies = Publisher(broker: settings.broker, logger: logger, role: "direct replies")
        self.directReplies = directReplies
        let tracing = DeliveryTracing.resolve(tracer)
        consumers = settings.consumers.enumerated().map { index, consumer in
            Consumer(settings: consumer, index: index, handler: resolved[consumer.name]!, workers: workers[consumer.name],
                     publisher: publisher, directReplies: directReplies, exportsBreaker: previous == nil,
                     tracing: tracing, logger: logger)
        }
        self.observer = observer
        (events, eventSink) = AsyncStream<ControlLoop.Event>.makeStream()
        let sink = eventSink
        for consumer in consumers {
            let index = consumer.index
            consumer.workers?.onHold { sink.yield(.hold(consumer: index)) }
            consumer.onBreaker { sink.yield(.breaker(consumer: index)) }
        }
        let drainStarted = TerminationSignal()
        self.drainStarted = drainStarted
        resubscribes = ResubscribeTimer(broker: settings.broker, drainStarted: drainStarted)
        breakerTimer = BreakerTimer(drainStarted: drainStarted)
        // The first event the loop handles, before any connection.
        if paused { pause() }
        metrics.paused.record(paused ? 1 : 0)
    }

    /// Every consumer's handler: the in-process one given, or its `command`
    /// (run per message, or by persistent workers); and the supervisor made
    /// for them when none was given (the runtime's own).
    private static func resolve(_ handlers: [String: any MessageHandler], for settings: WarrenSettings,
                                supervisor: ProcessSupervisor?, logger: Logger)
        -> (handlers: [String: any MessageHandler], workers: [String: PersistentWorkers], owned: ProcessSupervisor?) {
        var resolved = handlers
        var workers: [String: PersistentWorkers] = [:]
        guard settings.consumers.contains(where: { handlers[$0.name] == nil }) else { return (resolved, workers, nil) }
        // A daemon passes its own (and stops if it cannot have one); an
        // embedder that lacks one gets every message requeued with a warning.
        var available = supervisor
        var owned: ProcessSupervisor? = nil
        var unavailable = ""
        if available == nil {
            // An embedder that passes none gets what the daemon does for itself.
            ProcessSupervisor.prepareProcess()
            do { owned = try ProcessSupervisor() } catch { unavailable = error.description }
            available = owned
        }
        for consumer in settings.consumers where handlers[consumer.name] == nil {
            guard let supervisor = available else {
                let reason = unavailable
                resolved[consumer.name] = ClosureHandler { _ in .retry(Failure(reason: reason, resourceShortage: true)) }
                continue
            }
            if consumer.mode == .persistent {
                workers[consumer.name] = PersistentWorkers(
                    argv: consumer.command, killAfter: settings.shutdown.killAfter, supervisor: supervisor,
                    backoff: Backoff(minimum: settings.broker.reconnectMin, maximum: settings.broker.reconnectMax),
                    slots: consumer.concurrency)
                // Never called: the workers take this consumer's messages.
                resolved[consumer.name] = ClosureHandler { _ in .retry(Failure(reason: "persistent workers handle this consumer")) }
                continue
            }
            resolved[consumer.name] = ExecHandler(
                argv: consumer.command, killAfter: settings.shutdown.killAfter, exitAck: consumer.exitAck,
                exitRetry: consumer.exitRetry, exitDeadLetter: consumer.exitDeadLetter, input: consumer.input,
                supervisor: supervisor,
                logger: logger)
        }
        return (resolved, workers, owned)
    }

    /// For the systemd watchdog: false when the I/O loop of the current
    /// connection has not gone round within `milliseconds`. Between
    /// connections there is no loop to be stuck, and warren is alive.
    public func isResponsive(within milliseconds: Int64) -> Bool {
        guard let connection = status.connection else { return true }
        return connection.isResponsive(within: milliseconds)
    }

    /// A newer runtime took over (a reload): this one drains, and its states
    /// are no longer the process's.
    public func retire() {
        status.retire()
        for consumer in consumers { consumer.exportBreaker(false) }
        stop()
    }

    /// A reload's candidate now speaks for the process (after the runtime it replaces retired): its consumers' `warren_breaker_open` say how their
    /// breakers stand, and a consumer the new config removed reads 0.
    public func takeOver() {
        eventSink.yield(.tookOver)
        for consumer in consumers { consumer.exportBreaker(true) }
        let kept = Set(consumers.map(\.settings.name))
        for name in replacedConsumers where !kept.contains(name) {
            ConsumerMetrics.breakerOpen(name).record(0)
        }
    }

    /// Ready for `/readyz`: every consumer is consuming.
    public var isReady: Bool { state == .running }

    /// Why a consumer takes no messages although it consumes: its
    /// persistent workers fail to start (and are restarted with backoff).
    /// nil when none; `/readyz` answers 503 with it.
    public var workerProblem: String? {
        let problems = consumers.compactMap { consumer in
            consumer.workers?.problem.map { "consumer \(consumer.settings.name): \($0)" }
        }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// The lifecycle state the control loop last reported.
    public var state: Lifecycle.State { status.state }

    /// Messages in flight now: waiting in a consumer's buffer for a free
    /// worker, or taken by a worker and not yet settled (its handler
    /// running, or its retry or dead-letter copy awaiting a confirm).
    /// Asked on demand, for a gauge: nothing waits on this number, the
    /// drain ends when the workers return.
    public var inFlight: Int {
        consumers.reduce(0) { $0 + $1.buffer.count + $1.busy.load(ordering: .relaxed) }
    }

    /// Why `/readyz` answers 503, nil while ready: not consuming (starting,
    /// reconnecting, draining), persistent workers failing to start, or the
    /// broker blocking publishing (failed messages could be neither retried
    /// nor dead-lettered, so they would go round and round). One rule for
    /// the endpoint and the `warren_ready` gauge, so an alert on the gauge
    /// says what a load balancer sees.
    public var notReadyReason: String? {
        guard isReady else { return "not consuming (starting, reconnecting or draining)" }
        if isPaused { return "paused (SIGTSTP): not consuming; SIGCONT resumes" }
        if let problem = workerProblem { return problem }
        if let reason = brokerBlocked { return "broker blocked: \(reason)" }
        return nil
    }

    /// Brings the gauges computed on demand up to date, `warren_in_flight`
    /// and `warren_ready`: a metrics endpoint calls this before each scrape.
    /// A retired runtime leaves them to its successor.
    public func recordScrapedGauges() {
        guard !status.isRetired else { return }
        metrics.inFlight.record(inFlight)
        metrics.ready.record(notReadyReason == nil ? 1 : 0)
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

    /// The runtime this one replaced (`replacing:`) stopped consuming (it
    /// drains, or has stopped): the bindings only its config made are
    /// removed now, on this runtime's connection (or its next one). Before,
    /// a reconnect of the old runtime would bind them again.
    public func removeRetiredBindings() { eventSink.yield(.removeRetiredBindings) }

    /// SIGQUIT: terminate handlers now, requeue everything, close.
    public func quit() { eventSink.yield(.quit) }

    /// SIGTSTP: stop consuming (`basic.cancel`; deliveries not started go
    /// back to the queue), let running handlers finish and be acked, stay
    /// connected. `/readyz` answers 503 while paused. A stop while paused
    /// is an ordinary drain.
    public func pause() {
        status.setPaused(true)
        if !status.isRetired { metrics.paused.record(1) }
        eventSink.yield(.pause)
    }

    /// SIGCONT: consume again (a consumer whose breaker is open, or whose
    /// workers cannot start, waits for that too).
    public func resume() {
        status.setPaused(false)
        if !status.isRetired { metrics.paused.record(0) }
        eventSink.yield(.resume)
    }

    /// Whether `pause()` came and no `resume()` since.
    public var isPaused: Bool { status.isPaused }

    /// How long a stop waits for the broker to answer `basic.cancel` and
    /// the closing handshake before it drops the socket (a silent broker,
    /// a blocked one): part of the few seconds a stop may take beyond
    /// `grace_period + kill_after`.
    static let brokerAnswerBound: Duration = .seconds(5)

    /// Connects (retrying with backoff), consumes, and runs until stopped.
    /// Returns the exit code. Call it once.
    public func runUntilStopped() async -> Int32 {
        let sink = eventSink
        let router = DeliveryRouter(consumers: consumers)
        let executor: LoopExecutor
        do throws(IOThread.StartError) {
            executor = try LoopExecutor(logger: logger)
        } catch {
            logger.critical("cannot start the consumers: \(error.description)")
            watchdog?.close()
            await ownSupervisor?.shutdown()
            return 1
        }
        defer { executor.stop() }
        guard let watchdog else {
            logger.critical("cannot start the consumers: \(watchdogProblem); free descriptors or raise the task limit")
            await ownSupervisor?.shutdown()
            return 1
        }
        let connections = ConnectionSupervisor(broker: settings.broker, failFast: failFast, router: router, executor: executor,
                                               status: status, drainStarted: drainStarted, events: sink, logger: logger)
        let consumers = consumers
        return await withTaskGroup(of: Void.self) { group in
            group.addTask { await connections.run() }
            group.addTask { await self.resubscribes.run { sink.yield(.resubscribe($0)) } }
            group.addTask { await self.breakerTimer.run { sink.yield(.breakerDue(consumer: $0)) } }
            group.addTask { await self.publisher.run() }
            if settings.consumers.contains(where: \.replies) {
                group.addTask { await self.directReplies.run() }
            }
            // The drain is done when every consumer's workers have returned:
            // their buffers are closed and the last handler settled.
            group.addTask {
                await withTaskGroup(of: Void.self) { workers in
                    for consumer in consumers {
                        workers.addTask { await consumer.runWorkers(watchdog: watchdog, executor: executor) }
                    }
                }
                sink.yield(.workersDone)
            }
            let grace = settings.shutdown.gracePeriod
            group.addTask {
                guard await self.drainStarted.wait() else { return }
                try? await Task.sleep(for: grace)
                if !Task.isCancelled { sink.yield(.graceExpired) }
            }
            var loop = ControlLoop(settings: settings, failFast: failFast, consumers: consumers, router: router,
                                   watchdog: watchdog, resubscribes: resubscribes, breakerTimer: breakerTimer, drainStarted: drainStarted,
                                   status: status, metrics: metrics, observer: observer,
                                   inFlight: { self.inFlight }, logger: logger, retiredBindings: retiredBindings)
            let code = await loop.run(events)
            // Nothing is in flight any more: let idle workers go, stop timers and reconnects.
            for consumer in consumers { _ = consumer.buffer.close() }
            watchdog.fire()
            drainStarted.fire()
            resubscribes.finish()
            breakerTimer.finish()
            group.cancelAll()
            if let connection = loop.current {
                _ = await finishes(within: Self.brokerAnswerBound, orElse: { connection.abort() }) { await connection.close() }
            }
            // After the last outcome: no copy is published any more.
            await publisher.stop()
            await directReplies.stop()
            watchdog.close()
            await ownSupervisor?.shutdown()
            return code
        }
    }
}

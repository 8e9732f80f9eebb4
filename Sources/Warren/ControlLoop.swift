import AMQP
import Logging
import Synchronization

/// The one loop that owns the lifecycle, the current connection and the
/// subscriptions on it. Everything that can change the lifecycle arrives as
/// an event on one stream and is handled here, in order; `perform` carries
/// out each action the state machine returns.
struct ControlLoop {
    enum Event: Sendable {
        /// A new connection; `generation` tells its events from older ones'.
        case connected(AMQPConnection, generation: Int)
        case amqp(AMQPEvent, generation: Int)
        case resubscribe(Resubscribe)
        /// `failFast`: the first round of connects failed.
        case cannotConnect(AMQPError)
        /// Every consumer's workers have returned: the drain is done.
        case workersDone
        /// Whether a consumer can run anything may have changed (every
        /// persistent worker fails to start, or one is ready again): the
        /// loop reads `PersistentWorkers.isHolding` and acts on it.
        case hold(consumer: Int)
        /// SIGTSTP: every consumer stops consuming (`HoldReasons.paused`);
        /// running handlers finish and are acked; the connection stays.
        case pause
        /// SIGCONT: consuming again, where nothing else holds a consumer.
        case resume
        /// A consumer's circuit breaker changed: the loop reads
        /// `Consumer.breakerHolds` and acts on it.
        case breaker(consumer: Int)
        /// The time an open breaker set for letting one message through.
        case breakerDue(consumer: Int)
        /// The runtime this one replaced stopped consuming (it drains): no
        /// connection of its binds again what the previous config bound
        /// (see `unbind`).
        case removeRetiredBindings
        /// This runtime now serves in place of the one it replaced.
        case tookOver
        case stop
        case quit
        case graceExpired
    }

    let settings: WarrenSettings
    let failFast: Bool
    let consumers: [Consumer]
    let router: DeliveryRouter
    let watchdog: Watchdog
    let resubscribes: ResubscribeTimer
    let breakerTimer: BreakerTimer
    let drainStarted: TerminationSignal
    let status: RuntimeStatus
    let metrics: RuntimeMetrics
    let observer: WarrenRuntime.Observer?
    let inFlight: @Sendable () -> Int
    let logger: Logger
    private(set) var machine = Lifecycle()
    private var reported = Lifecycle().state
    private(set) var current: AMQPConnection? = nil
    private var subscriptions: Subscriptions
    /// The workers ended before any drain began (see `workersDone`).
    private var workersEnded = false
    /// A reload's: what the previous config bound and this one does not (see `unbind`).
    private var retiredBindings: [Topology.Binding]
    /// `removeRetiredBindings` came: unbind them on this connection or the next.
    private var unbindDue = false
    /// `tookOver` came: bindings still retired at the end are reported.
    private var promoted = false
    /// SIGTSTP came and no SIGCONT since.
    private var paused = false
    /// Channels of the current connection whose prefetch is 1 for a
    /// half-open circuit breaker (see `consume`).
    private var narrowed: Set<UInt16> = []

    init(settings: WarrenSettings, failFast: Bool, consumers: [Consumer], router: DeliveryRouter, watchdog: Watchdog,
         resubscribes: ResubscribeTimer, breakerTimer: BreakerTimer, drainStarted: TerminationSignal, status: RuntimeStatus,
         metrics: RuntimeMetrics,
         observer: WarrenRuntime.Observer?, inFlight: @escaping @Sendable () -> Int, logger: Logger,
         retiredBindings: [Topology.Binding] = []) {
        self.settings = settings
        self.retiredBindings = retiredBindings
        self.failFast = failFast
        self.consumers = consumers
        self.router = router
        self.watchdog = watchdog
        self.resubscribes = resubscribes
        self.breakerTimer = breakerTimer
        self.drainStarted = drainStarted
        self.status = status
        self.metrics = metrics
        self.observer = observer
        self.inFlight = inFlight
        self.logger = logger
        subscriptions = Subscriptions(consumers: consumers.count, channelLimit: settings.channelLimit)
    }

    /// Handles events until the lifecycle exits; returns the exit code.
    mutating func run(_ events: AsyncStream<Event>) async -> Int32 {
        for await event in events {
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
        if status.publish(machine.state) { metrics.record(machine.state, inFlight: inFlight()) }
        observer?(machine.state)
    }

    // MARK: Events

    private mutating func handle(_ event: Event) async -> Lifecycle.Action {
        switch event {
        case .connected(let connection, let generation):
            return await connected(connection, generation: generation)
        case .amqp(let event, let generation):
            // A straggler from a connection already given up: its deliveries are void,
            // and the broker has them back.
            guard generation == subscriptions.generation, let connection = current else { return .none }
            return await handle(event, on: connection)
        case .resubscribe(let request):
            // Also before every consumer consumes (starting, reconnecting): the others do meanwhile.
            switch machine.state {
            case .starting, .reconnecting, .running: break
            case .draining, .closing, .stopped: return .none
            }
            guard subscriptions.wants(request), let connection = current else { return .none }
            return await subscribe(consumers[request.consumer], on: connection, attempt: request.attempt)
        case .cannotConnect(let error):
            logger.error("the new config cannot connect to the broker", metadata: ["error": "\(error)"])
            guard machine.state == .starting else { return .none }
            return machine.failed()
        case .workersDone:
            // Before a drain, only a runtime with no consumer at all, or one
            // whose run was cancelled, sees its workers end: the drain that
            // follows then has nothing to wait for.
            guard case .draining = machine.state else {
                workersEnded = true
                return .none
            }
            return machine.workersDone()
        case .hold(let index):
            return await hold(consumers[index], for: .workersFailing, consumers[index].workers?.isHolding ?? false)
        case .removeRetiredBindings:
            unbindDue = true
            await unbindRetired()
            return .none
        case .tookOver:
            promoted = true
            return .none
        case .pause, .resume:
            let pause: Bool
            if case .pause = event { pause = true } else { pause = false }
            guard pause != paused else { return .none }
            paused = pause
            switch machine.state {
            case .starting, .reconnecting, .running: break
            case .draining, .closing, .stopped: return .none
            }
            logger.notice(pause ? "paused (SIGTSTP): consumers stop consuming; running handlers finish; SIGCONT resumes"
                                : "resumed (SIGCONT): consuming again")
            var action = Lifecycle.Action.none
            for consumer in consumers {
                guard action == .none || action == .notifyReady else {
                    // The connection failed under a consumer before it (a reconnect
                    // is on its way): the others are set up on the next one, as
                    // the pause says.
                    if pause { _ = subscriptions.hold(consumer.index, for: .paused) } else {
                        _ = subscriptions.release(consumer.index, from: .paused)
                    }
                    consumer.consumingStopped.store(subscriptions.holds[consumer.index] != nil, ordering: .relaxed)
                    continue
                }
                let next = await hold(consumer, for: .paused, pause)
                if next != .none { action = next }
            }
            return action
        case .breaker(let index):
            let consumer = consumers[index]
            let (holds, reopensAt) = consumer.breakerHolds
            if let reopensAt { breakerTimer.request(consumer: index, at: reopensAt) }
            // Closed while consuming with the half-open prefetch of 1 (a
            // message started before it opened succeeded): RabbitMQ takes a
            // new prefetch only for a new consumer, so consume afresh.
            if !holds, !consumer.breakerWantsOne, let channel = subscriptions.channel(of: index), narrowed.contains(channel) {
                let action = await hold(consumer, for: .breakerOpen, true)
                guard action == .none else { return action }
            }
            return await hold(consumer, for: .breakerOpen, holds)
        case .breakerDue(let index):
            // The breaker pokes the loop if this lets one message through.
            consumers[index].breakerDue(now: monotonicMilliseconds())
            return .none
        case .stop:
            return machine.stopRequested()
        case .quit:
            return machine.quitRequested()
        case .graceExpired:
            return machine.graceExpired()
        }
    }

    private mutating func handle(_ event: AMQPEvent, on connection: AMQPConnection) async -> Lifecycle.Action {
        switch event {
        case .delivery(let delivery):
            // Deliveries go through the router; one here came another way.
            connection.nack(delivery, requeue: true)
            return .none
        case .consumerCancelledByBroker(let channel, let tag):
            // The channel is closed below: what it delivered is the broker's again.
            connection.forget(channel: channel)
            let ours = subscriptions.owns(channel)
            guard let request = stopConsuming(on: channel) else {
                // A held consumer's channel (no re-subscribe while held): closed all the same.
                if ours { try? await connection.closeChannel(channel) }
                return .none
            }
            let consumer = consumers[request.consumer]
            consumer.logger.warning("the broker cancelled the consumer (queue deleted, or a node failed over); subscribing again",
                                    metadata: ["queue": "\(consumer.settings.queue)", "consumer_tag": "\(tag)"])
            try? await connection.closeChannel(channel)
            resubscribes.request(request)
            return .none
        case .channelClosed(let channel, let error):
            connection.forget(channel: channel)
            if let request = stopConsuming(on: channel) {
                let consumer = consumers[request.consumer]
                if AckTimeoutRule.isBrokerTimeout(error) {
                    consumer.logger.error("\(AckTimeoutRule.explain(error, consumer.settings, shutdown: settings.shutdown))")
                } else {
                    consumer.logger.error("the broker closed the consumer's channel; subscribing again",
                                          metadata: ["error": "\(error)"])
                }
                resubscribes.request(request)
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

    // MARK: Subscribing

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
        status.use(connection)
        router.use(connection, generation: generation)
        subscriptions.connected(generation: generation)
        narrowed = []
        let firstStart = machine.state == .starting
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
        // Bound only once every queue and exchange was accepted: a refused
        // one fails the start (or the reload) with no binding of the others
        // made, so the broker routes as the running config has it.
        var bound: [(Consumer, UInt16)] = []
        for (consumer, channel) in prepared {
            do {
                try await bind(consumer, on: channel, connection)
            } catch {
                if let action = await setUpFailed(consumer, error, firstStart: firstStart, on: connection) { return action }
                continue
            }
            if subscriptions.held.contains(consumer.index) {
                // Declared (a broken topology still fails the start), not
                // consumed: it consumes there once released.
                subscriptions.keep(consumer.index, channel)
            } else {
                bound.append((consumer, channel))
            }
        }
        // Once one consumes, handlers may run: a refusal now never fails
        // the start (that would end them mid-message); the consumer
        // subscribes again later, and a reload not consuming in time is
        // abandoned with a drain.
        for (consumer, channel) in bound {
            do {
                try await consume(consumer, on: channel, connection)
            } catch {
                if let action = await setUpFailed(consumer, error, firstStart: false, on: connection) { return action }
            }
        }
        return await startedOnceAllConsume()
    }

    /// Carries out what a consumer's failed set-up means (see `Subscriptions.setUpFailed`).
    private mutating func setUpFailed(_ consumer: Consumer, _ error: AMQPError, firstStart: Bool,
                                      on connection: AMQPConnection) async -> Lifecycle.Action? {
        switch subscriptions.setUpFailed(consumer: consumer.index, error, firstStart: firstStart, failFast: failFast) {
        case .cannotStart:
            if failFast {
                logger.error("the new config cannot start: \(error.reason)")
            } else {
                logger.critical("warren cannot start: \(error.reason)")
            }
            // Arguments that differ are the config's to fix, like any other config error.
            return machine.failed(exitCode: error.code == .inequivalentArguments ? 78 : 1)
        case .reconnect:
            logger.error("setting up the consumers failed; reconnecting", metadata: ["error": "\(error)"])
            return await abandon(connection)
        case .resubscribe(let request):
            consumer.logger.error("setting up the consumer failed; the others go on, this one subscribes again later",
                                  metadata: ["error": "\(error)"])
            resubscribes.request(request)
            return nil
        }
    }

    /// Subscribing again after the broker cancelled a consumer, or after
    /// its set-up failed, on a channel number its old channel never had.
    private mutating func subscribe(_ consumer: Consumer, on connection: AMQPConnection, attempt: Int) async -> Lifecycle.Action {
        do {
            let channel = try await prepare(consumer, on: connection)
            try await bind(consumer, on: channel, connection)
            try await consume(consumer, on: channel, connection)
            return await startedOnceAllConsume()
        } catch {
            switch subscriptions.resubscribeFailed(consumer: consumer.index, attempt: attempt, error) {
            case .reconnect, .cannotStart:
                consumer.logger.warning("subscribing again failed; reconnecting", metadata: ["error": "\(error)"])
                return await abandon(connection)
            case .resubscribe(let request):
                consumer.logger.warning("subscribing again failed; will retry", metadata: [
                    "error": "\(error)", "attempt": "\(request.attempt)"])
                resubscribes.request(request)
                return .none
            }
        }
    }

    /// Stops or starts a consumer for one cause (`HoldReasons`): its
    /// workers cannot start (or can again), SIGTSTP / SIGCONT, its circuit
    /// breaker. It consumes again only once no cause is left. Stopping:
    /// every delivery waiting in its buffer is unstarted; `basic.cancel`
    /// and a `basic.nack` (requeue) of each gives them back to the broker,
    /// for consumers that can run them. Running handlers finish and settle
    /// on the channel, which stays open.
    private mutating func hold(_ consumer: Consumer, for reason: HoldReasons, _ holding: Bool) async -> Lifecycle.Action {
        switch machine.state {
        case .starting, .reconnecting, .running: break
        case .draining, .closing, .stopped: return .none
        }
        if holding {
            guard !(subscriptions.holds[consumer.index]?.contains(reason) ?? false) else { return .none }
            if reason == .workersFailing {
                // A reload's new consumers whose workers cannot start must not
                // replace running ones (a bad deploy): the reload fails at once.
                if failFast, machine.state == .starting {
                    consumer.logger.error("the new workers cannot start (see above): the reload is given up")
                    return machine.failed()
                }
                consumer.logger.error("no worker can start: stopped consuming until one is ready; its deliveries go back to the queue",
                                      metadata: ["queue": "\(consumer.settings.queue)"])
            }
            // basic.cancel only: the channel stays open, so a delivery a
            // slot already holds stays valid (it runs, or goes back, and its
            // settlement gets through); no channel number is spent.
            let channel = subscriptions.hold(consumer.index, for: reason)
            consumer.consumingStopped.store(true, ordering: .relaxed)
            if let channel, let connection = current {
                // Unrouted first: a delivery the broker sent before its
                // cancel-ok (queued by rabbitmq-c during the call) is
                // requeued on arrival, never buffered for nobody.
                router.route(channel: channel, to: nil)
                // Bounded like a drain's cancels: a broker that stopped
                // answering must not hold up the loop (and a stop) for long.
                let tag = consumer.consumerTag(channel: channel)
                _ = await finishes(within: WarrenRuntime.brokerAnswerBound, orElse: { connection.abort() }) {
                    try? await connection.cancel(consumerTag: tag, on: channel)
                }
                // After cancel-ok no delivery of it is on the way: what is
                // buffered is every unstarted one.
                var released = 0
                for received in consumer.buffer.takeAll(from: connection) {
                    connection.nack(received.delivery, requeue: true)
                    consumer.metrics.requeued.increment()
                    released += 1
                }
                consumer.logger.info("stopped consuming", metadata: [
                    "queue": "\(consumer.settings.queue)", "why": "\(Self.describe(reason))", "released": "\(released)"])
            }
            return await startedOnceAllConsume()
        }
        let again = reason == .workersFailing ? "a worker is ready: consuming again" : "consuming again"
        let release = subscriptions.release(consumer.index, from: reason)
        consumer.consumingStopped.store(subscriptions.holds[consumer.index] != nil, ordering: .relaxed)
        switch release {
        case .nothing:
            // Not held: perhaps its first worker is ready, which a reload waits for.
            return await startedOnceAllConsume()
        case .consume(let channel):
            consumer.logger.notice("\(again)", metadata: ["queue": "\(consumer.settings.queue)"])
            guard let connection = current else { return .none }
            do {
                try await consume(consumer, on: channel, connection, reusable: false)
                return await startedOnceAllConsume()
            } catch {
                return await setUpFailed(consumer, error, firstStart: false, on: connection) ?? .none
            }
        case .subscribe:
            consumer.logger.notice("\(again)", metadata: ["queue": "\(consumer.settings.queue)"])
            guard let connection = current else { return .none }
            return await subscribe(consumer, on: connection, attempt: 0)
        }
    }

    private static func describe(_ reason: HoldReasons) -> String {
        switch reason {
        case .workersFailing: "no worker can start"
        case .paused: "paused"
        case .breakerOpen: "circuit breaker open"
        default: "\(reason.rawValue)"
        }
    }

    /// Running (systemd `READY=1`, `/readyz`, a reload's promotion) means
    /// every consumer consumes, not merely that a connection is up.
    private mutating func startedOnceAllConsume() async -> Lifecycle.Action {
        // Held consumers count as consuming, but never without a connection.
        guard current != nil, subscriptions.allConsume else { return .none }
        // A reload's new persistent consumers take over only once a worker of
        // each is ready: a deploy whose workers never start must not replace
        // running ones (they fail the reload instead; see `hold`).
        if failFast, consumers.contains(where: { !($0.workers?.hasBeenReady ?? true) }) { return .none }
        status.served(subscriptions.generation)
        let action = machine.started()
        await unbindRetired()
        return action
    }

    /// Removes the retired bindings once they are due and there is a
    /// connection; unanswered (the connection dropped), the next connection
    /// tries again (unbinding what is gone is no error).
    private mutating func unbindRetired() async {
        guard unbindDue, !retiredBindings.isEmpty, let connection = current else { return }
        if await unbind(retiredBindings, on: connection) { retiredBindings = [] }
    }

    /// Opens a channel for the consumer and declares (or checks) its
    /// queues on it; returns the channel, not yet consuming.
    private mutating func prepare(_ consumer: Consumer, on connection: AMQPConnection) async throws(AMQPError) -> UInt16 {
        let s = consumer.settings
        guard let channel = subscriptions.allocate() else {
            throw AMQPError(.closed, "every consuming channel number of this connection has been used; a new connection is needed")
        }
        do throws(AMQPError) {
            try await connection.openChannel(channel, prefetch: s.prefetch)
            if s.declare {
                try await consumer.topology.declare(on: connection, channel: channel, logger: consumer.logger)
            } else {
                try await consumer.topology.check(on: connection, channel: channel, logger: consumer.logger)
            }
            return channel
        } catch {
            await release(channel, on: connection, after: error)
            throw error
        }
    }

    /// Binds a prepared consumer's queue to its exchange (`declare = true`
    /// only: otherwise the bindings are whoever declared the queue's).
    private mutating func bind(_ consumer: Consumer, on channel: UInt16, _ connection: AMQPConnection) async throws(AMQPError) {
        guard consumer.settings.declare else { return }
        do {
            try await consumer.topology.bind(on: connection, channel: channel)
        } catch {
            await release(channel, on: connection, after: error)
            throw error
        }
    }

    /// A reload's bindings that the previous config made and this one does
    /// not: removed once the runtime this one replaced stopped consuming
    /// (before, a reconnect of it would bind them again), so a routing key taken out
    /// of the config stops routing. A refused reload never gets here and
    /// leaves them. A refusal is logged, never fatal: the consumers are
    /// fine, an operator can unbind by hand.
    /// False when the broker did not answer in time (the connection
    /// dropped), or the connection was lost on the way: the next one tries again.
    private mutating func unbind(_ bindings: [Topology.Binding], on connection: AMQPConnection) async -> Bool {
        guard let channel = subscriptions.allocate() else {
            logger.warning("no channel number to spare to remove the bindings the previous config made; remove them by hand",
                           metadata: ["bindings": "\(bindings.map(\.description))"])
            return true
        }
        // Bounded like a drain's cancel: a broker that never answers must
        // not keep the reload from finishing (with heartbeats off, for ever).
        let logger = self.logger
        let lost = Mutex(false)
        let answered = await finishes(within: WarrenRuntime.brokerAnswerBound, orElse: { connection.abort() }) {
            let complete = await Self.unbind(bindings, on: channel, connection, logger: logger)
            lost.withLock { $0 = !complete }
        }
        if !answered {
            logger.error("the broker did not answer queue.unbind within \(WarrenRuntime.brokerAnswerBound); dropped the connection: warren connects again and removes them then",
                         metadata: ["bindings": "\(bindings.map(\.description))"])
        }
        subscriptions.releaseUnused(channel)
        return answered && !lost.withLock { $0 }
    }

    /// False when the connection was lost before every binding was tried.
    private static func unbind(_ bindings: [Topology.Binding], on channel: UInt16, _ connection: AMQPConnection,
                               logger: Logger) async -> Bool {
        var open = false
        for binding in bindings {
            do throws(AMQPError) {
                if !open { try await connection.openChannel(channel) }
                open = true
                try await connection.unbindQueue(binding.queue, from: binding.exchange, routingKey: binding.routingKey, on: channel)
                logger.notice("removed a binding the previous config made and this one does not", metadata: [
                    "queue": "\(binding.queue)", "exchange": "\(binding.exchange)", "routing_key": "\(binding.routingKey)"])
            } catch {
                // The broker closes the channel on a refusal; the next one opens it again.
                open = false
                logger.warning("could not remove a binding the previous config made and this one does not; remove it by hand", metadata: [
                    "queue": "\(binding.queue)", "exchange": "\(binding.exchange)", "routing_key": "\(binding.routingKey)",
                    "error": "\(error)"])
                if error.isConnectionFatal { return false }
            }
        }
        if open { try? await connection.closeChannel(channel) }
        return true
    }

    /// `reusable: false`: the channel consumed before (a held consumer's):
    /// if consuming fails, its deliveries are void and its number retired.
    private mutating func consume(_ consumer: Consumer, on channel: UInt16, _ connection: AMQPConnection,
                                  reusable: Bool = true) async throws(AMQPError) {
        let s = consumer.settings
        // Routed before consuming, so the first delivery finds its buffer.
        router.route(channel: channel, to: consumer.index)
        do throws(AMQPError) {
            // Half-open, the breaker runs one message: with the configured
            // prefetch the broker would send more, each of which would go
            // back to the head of the queue unstarted, again at every
            // opening (and a quorum queue counts each return toward
            // `delivery_limit`). The prefetch is set back once it closed.
            let one = consumer.breakerWantsOne && s.prefetch != 1
            if one != narrowed.contains(channel) {
                try await connection.setPrefetch(one ? 1 : s.prefetch, on: channel)
                if one { narrowed.insert(channel) } else { narrowed.remove(channel) }
            }
            _ = try await connection.consume(queue: s.queue, on: channel, consumerTag: consumer.consumerTag(channel: channel),
                                             exclusive: s.exclusive, arguments: consumer.topology.consumeArguments)
        } catch {
            router.route(channel: channel, to: nil)
            if reusable {
                await release(channel, on: connection, after: error)
            } else {
                connection.forget(channel: channel)
                subscriptions.retire(channel)
                if !error.isConnectionFatal { try? await connection.closeChannel(channel) }
            }
            throw error
        }
        subscriptions.consumes(consumer.index, on: channel)
        consumer.logger.info("consuming", metadata: ["queue": "\(s.queue)", "prefetch": "\(narrowed.contains(channel) ? 1 : s.prefetch)",
                                                     "concurrency": "\(s.concurrency)", "channel": "\(channel)"])
    }

    /// A channel whose set-up failed received nothing: once closed, its number may serve again.
    private mutating func release(_ channel: UInt16, on connection: AMQPConnection, after error: AMQPError) async {
        guard !error.isConnectionFatal else { return }
        try? await connection.closeChannel(channel)
        subscriptions.releaseUnused(channel)
    }

    /// Forgets the consumer on `channel` (and unroutes it); returns its re-subscribe, if one was there.
    private mutating func stopConsuming(on channel: UInt16) -> Resubscribe? {
        guard let request = subscriptions.consumerGone(on: channel) else { return nil }
        router.route(channel: channel, to: nil)
        return request
    }

    // MARK: Connections

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

    // MARK: Actions

    /// Performs one action; returns the follow-up action, if any.
    private mutating func perform(_ action: Lifecycle.Action) async -> Lifecycle.Action {
        switch action {
        case .none, .exit:
            return .none
        case .notifyReady:
            logger.notice("running", metadata: ["consumers": "\(consumers.count)"])
            return .none
        case .reconnect:
            reconnect()
            return .none
        case .beginDrain:
            await beginDrain(terminate: false)
            return workersEnded ? machine.workersDone() : .none
        case .beginDrainAndTerminate:
            await beginDrain(terminate: true)
            return workersEnded ? machine.workersDone() : .none
        case .terminateHandlers:
            logger.warning("terminating running handlers; their messages will be requeued", metadata: [
                "in_flight": "\(inFlight())", "kill_after": "\(settings.shutdown.killAfter)"])
            watchdog.fire()
            return .none
        case .close:
            return await close()
        }
    }

    /// The connection is gone: its waiting deliveries are dropped (the
    /// broker redelivers them), running handlers go on, a new connection
    /// is being made.
    private mutating func reconnect() {
        metrics.reconnects.increment()
        var dropped = 0
        router.use(nil, generation: subscriptions.generation)
        if let lost = current {
            for consumer in consumers { dropped += consumer.buffer.removeAll(from: lost) }
        }
        current = nil
        status.use(nil)
        subscriptions.lost()
        logger.warning("reconnecting; running handlers go on, their outcomes will be dropped and the broker redelivers",
                       metadata: ["in_flight": "\(inFlight())", "dropped_unstarted": "\(dropped)"])
    }

    /// Nothing new starts: the buffers close (what they held goes back to
    /// the broker), every consumer is cancelled, the grace timer starts.
    /// The workers then end as their handlers finish (`workersDone`).
    private mutating func beginDrain(terminate: Bool) async {
        drainStarted.fire()
        var released = 0
        for consumer in consumers {
            for received in consumer.buffer.close() {
                received.connection.nack(received.delivery, requeue: true)
                released += 1
            }
        }
        // Counted here, not line by line: a full prefetch of lines would
        // bury the ones about the handlers still running.
        logger.notice("stop requested: draining; messages no handler had started went back to the queue", metadata: [
            "released_unstarted": "\(released)", "in_flight": "\(inFlight())",
            "grace_period": "\(settings.shutdown.gracePeriod)"])
        if terminate {
            logger.notice("quit: terminating every running handler now")
            watchdog.fire()
        }
        if let connection = current {
            let cancels = subscriptions.subscribed.map { (consumers[$0.consumer], $0.channel) }
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
    }

    private mutating func close() async -> Lifecycle.Action {
        if promoted, !retiredBindings.isEmpty {
            logger.warning("stopping before the bindings only the previous config made were removed (the replaced consumers were still draining): remove them by hand",
                           metadata: ["bindings": "\(retiredBindings.map(\.description))"])
        }
        logger.info("all handlers done: flushing acks, closing channels and connection")
        // Settlements reach the socket first; only the handshake can wait on the broker.
        if let connection = current,
           !(await finishes(within: WarrenRuntime.brokerAnswerBound, orElse: { connection.abort() }) { await connection.close() }) {
            logger.error("the broker did not answer the close within \(WarrenRuntime.brokerAnswerBound); dropped the connection")
        }
        return machine.closed()
    }
}

import AMQP
public import Logging

/// The running daemon: one connection, its consumers, and the lifecycle
/// state machine that decides what happens to every delivery and signal.
///
/// Everything that can change the lifecycle arrives as an event on one
/// stream and is handled by one loop, in order: the state machine stays a
/// local value that no other task touches.
public final class WarrenRuntime: Sendable {
    enum Event: Sendable {
        case amqp(AMQPEvent)
        case started
        case handlerFinished
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
    private let termination = TerminationSignal()
    /// Thrown when draining begins; starts the grace timer.
    private let drainStarted = TerminationSignal()

    /// - Parameter handlers: in-process handlers by consumer name; consumers
    ///   without one run their `command` through `ExecHandler`.
    public init(settings: WarrenSettings, handlers: [String: any MessageHandler] = [:], logger: Logger,
                observer: Observer? = nil) {
        self.settings = settings
        var resolved = handlers
        let needsProcesses = settings.consumers.contains { handlers[$0.name] == nil }
        if needsProcesses {
            let supervisor = ProcessSupervisor()
            for consumer in settings.consumers where handlers[consumer.name] == nil {
                resolved[consumer.name] = ExecHandler(
                    argv: consumer.command, killAfter: settings.shutdown.killAfter, exitAck: consumer.exitAck,
                    exitRetry: consumer.exitRetry, exitDeadLetter: consumer.exitDeadLetter, supervisor: supervisor,
                    logger: logger)
            }
        }
        self.handlers = resolved
        self.logger = logger
        self.observer = observer
        (events, eventSink) = AsyncStream<Event>.makeStream()
    }

    /// SIGTERM / SIGINT: drain; a second call skips the rest of the grace period.
    public func stop() { eventSink.yield(.stop) }

    /// SIGQUIT: terminate handlers now, requeue everything, close.
    public func quit() { eventSink.yield(.quit) }

    /// Connects, consumes, and runs until stopped. Returns the exit code.
    public func run() async throws -> Int32 {
        guard let endpoint = settings.broker.endpoints.first else {
            throw AMQPError(.invalidArgument, "no broker URL configured")
        }
        let connection = try await AMQPConnection.connect(endpoint, logger: logger)
        logger.info("connected", metadata: ["broker": "\(endpoint.redactedURL)"])
        let consumers = settings.consumers.enumerated().map { index, consumer in
            Consumer(settings: consumer, channel: UInt16(index + 1), handler: handlers[consumer.name]!, logger: logger)
        }
        let sink = eventSink
        do {
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await event in connection.events { sink.yield(.amqp(event)) }
                }
                for consumer in consumers {
                    group.addTask {
                        await consumer.runWorkers(connection: connection, termination: self.termination) {
                            sink.yield(.handlerFinished)
                        }
                    }
                }
                let grace = settings.shutdown.gracePeriod
                group.addTask {
                    guard await self.drainStarted.wait() else { return }
                    try? await Task.sleep(for: grace)
                    if !Task.isCancelled { sink.yield(.graceExpired) }
                }
                try await setUp(consumers, on: connection)
                sink.yield(.started)
                let code = await controlLoop(consumers: consumers, connection: connection)
                // Nothing is in flight any more: let idle workers go, stop timers.
                for consumer in consumers { _ = consumer.buffer.close() }
                termination.fire()
                drainStarted.fire()
                group.cancelAll()
                await connection.close()
                return code
            }
        } catch {
            termination.fire()
            await connection.close()
            throw error
        }
    }

    private func setUp(_ consumers: [Consumer], on connection: AMQPConnection) async throws {
        for consumer in consumers {
            let s = consumer.settings
            try await connection.openChannel(consumer.channel, prefetch: s.prefetch)
            if s.declare {
                try await consumer.topology.declare(on: connection, channel: consumer.channel)
            } else {
                try await consumer.topology.check(on: connection, channel: consumer.channel)
            }
            try await connection.openChannel(consumer.publisherChannel)
            try await connection.enableConfirms(on: consumer.publisherChannel)
            _ = try await connection.consume(queue: s.queue, on: consumer.channel, consumerTag: consumer.consumerTag)
            consumer.logger.info("consuming", metadata: ["queue": "\(s.queue)", "prefetch": "\(s.prefetch)",
                                                         "concurrency": "\(s.concurrency)"])
        }
    }

    private func controlLoop(consumers: [Consumer], connection: AMQPConnection) async -> Int32 {
        var machine = Lifecycle()
        let byChannel = Dictionary(uniqueKeysWithValues: consumers.map { ($0.channel, $0) })
        for await event in events {
            let before = machine.state
            var action: Lifecycle.Action
            switch event {
            case .amqp(.delivery(let delivery)):
                action = machine.delivery()
                if action == .dispatch {
                    if byChannel[delivery.channel]?.buffer.push(delivery) != true {
                        connection.nack(delivery, requeue: true)
                        action = machine.handlerFinished()
                    } else {
                        action = .none
                    }
                } else if action == .release {
                    connection.nack(delivery, requeue: true)
                    action = .none
                }
            case .amqp(.consumerCancelledByBroker(let channel, let tag)):
                logger.error("the broker cancelled a consumer (was its queue deleted?); stopping so it can be restarted",
                             metadata: ["channel": "\(channel)", "consumer_tag": "\(tag)"])
                action = machine.connectionLost()
            case .amqp(.channelClosed(let channel, let error)):
                logger.error("the broker closed a channel", metadata: ["channel": "\(channel)", "error": "\(error)"])
                action = machine.connectionLost()
            case .amqp(.returned):
                action = .none
            case .amqp(.connectionLost(let error)):
                logger.error("connection to the broker lost", metadata: ["error": "\(error)"])
                action = machine.connectionLost()
            case .started:
                action = machine.started()
            case .handlerFinished:
                action = machine.handlerFinished()
            case .stop:
                action = machine.stopRequested()
            case .quit:
                action = machine.quitRequested()
            case .graceExpired:
                action = machine.graceExpired()
            }
            while action != .none {
                if case .exit(let code) = action {
                    report(before, machine.state)
                    return code
                }
                action = await perform(action, machine: &machine, consumers: consumers, connection: connection)
            }
            report(before, machine.state)
        }
        return 1
    }

    private func report(_ before: Lifecycle.State, _ after: Lifecycle.State) {
        guard before != after, let observer else { return }
        observer(after)
    }

    /// Performs one action; returns the follow-up action, if any.
    private func perform(_ action: Lifecycle.Action, machine: inout Lifecycle, consumers: [Consumer],
                         connection: AMQPConnection) async -> Lifecycle.Action {
        switch action {
        case .none, .dispatch, .release, .exit:
            return .none
        case .notifyReady:
            logger.notice("running", metadata: ["consumers": "\(consumers.count)"])
            return .none
        case .beginDrain, .beginDrainAndTerminate:
            logger.notice("stop requested: draining", metadata: [
                "in_flight": "\(machine.inFlight)", "grace_period": "\(settings.shutdown.gracePeriod)"])
            var released = 0
            for consumer in consumers {
                for delivery in consumer.buffer.close() {
                    connection.nack(delivery, requeue: true)
                    released += 1
                }
            }
            if action == .beginDrainAndTerminate {
                logger.notice("quit: terminating every running handler now")
                termination.fire()
            }
            for consumer in consumers {
                do {
                    try await connection.cancel(consumerTag: consumer.consumerTag, on: consumer.channel)
                } catch {
                    consumer.logger.warning("basic.cancel failed", metadata: ["error": "\(error)"])
                }
            }
            drainStarted.fire()
            if released > 0 { logger.info("released deliveries that had not started", metadata: ["count": "\(released)"]) }
            return machine.released(released)
        case .terminateHandlers:
            logger.warning("terminating running handlers; their messages will be requeued",
                           metadata: ["in_flight": "\(machine.inFlight)", "kill_after": "\(settings.shutdown.killAfter)"])
            termination.fire()
            return .none
        case .close:
            logger.info("all handlers done: flushing acks, closing channels and connection")
            await connection.close()
            return machine.closed()
        }
    }
}

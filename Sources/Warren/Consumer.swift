import AMQP
import Logging

/// One `[consumer.NAME]`: its channel, its buffer, and `concurrency` workers
/// in one task group.
final class Consumer: Sendable {
    let settings: ConsumerSettings
    let channel: UInt16
    let handler: any MessageHandler
    let buffer = DeliveryBuffer()
    let logger: Logger

    init(settings: ConsumerSettings, channel: UInt16, handler: any MessageHandler, logger: Logger) {
        self.settings = settings
        self.channel = channel
        self.handler = handler
        var logger = logger
        logger[metadataKey: "consumer"] = "\(settings.name)"
        self.logger = logger
    }

    var consumerTag: String { "warren.\(settings.name).\(channel)" }

    /// The workers. Returns when the buffer is closed and every worker is idle.
    func runWorkers(connection: AMQPConnection, termination: TerminationSignal,
                    finished: @escaping @Sendable () -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<max(1, settings.concurrency) {
                group.addTask {
                    while let delivery = await self.buffer.next() {
                        let message = Message(delivery: delivery, consumer: self.settings.name, queue: self.settings.queue,
                                              attempt: Message.attempt(of: delivery))
                        let (outcome, stop) = await self.runWatched(message, termination: termination)
                        self.settle(message, outcome: outcome, stop: stop, connection: connection)
                        finished()
                    }
                }
            }
        }
    }

    enum WatchdogStop: Sendable { case timeout, shutdown }

    private enum Race: Sendable {
        case finished(Outcome)
        case stopped(WatchdogStop)
        case cancelled
    }

    /// Runs the handler against the watchdog: its timeout, and the shared
    /// termination signal. Whichever fires cancels the handler, which then
    /// ends its work (ExecHandler: SIGTERM, SIGKILL after `kill_after`);
    /// this returns only when the handler has returned.
    private func runWatched(_ message: Message, termination: TerminationSignal) async -> (Outcome, WatchdogStop?) {
        let handler = self.handler
        let timeout = settings.timeout
        return await withTaskGroup(of: Race.self) { group in
            group.addTask { .finished(await handler.handle(message)) }
            group.addTask { await termination.wait() ? .stopped(.shutdown) : .cancelled }
            if let timeout {
                group.addTask {
                    do {
                        try await Task.sleep(for: timeout)
                        return .stopped(.timeout)
                    } catch {
                        return .cancelled
                    }
                }
            }
            var outcome: Outcome = .retry(Failure(reason: "handler did not report an outcome"))
            var stop: WatchdogStop? = nil
            for await result in group {
                switch result {
                case .finished(let value):
                    outcome = value
                    group.cancelAll()
                case .stopped(let reason):
                    if stop == nil { stop = reason }
                    group.cancelAll()
                case .cancelled:
                    break
                }
            }
            return (outcome, stop)
        }
    }

    private func settle(_ message: Message, outcome: Outcome, stop: WatchdogStop?, connection: AMQPConnection) {
        var log = logger
        log[metadataKey: "message_id"] = "\(message.logID)"
        log[metadataKey: "attempt"] = "\(message.attempt)"
        switch (stop, outcome) {
        case (.shutdown?, _):
            log.warning("handler terminated at shutdown; message requeued")
            connection.nack(message.delivery, requeue: true)
        case (.timeout?, _):
            log.warning("handler timed out; message requeued", metadata: ["timeout": "\(settings.timeout.map { "\($0)" } ?? "-")"])
            connection.nack(message.delivery, requeue: true)
        case (nil, .ack):
            log.debug("handler succeeded; message acked")
            connection.ack(message.delivery)
        case (nil, .retry(let failure)):
            log.warning("handler failed; message requeued", metadata: ["reason": "\(failure.reason)"])
            connection.nack(message.delivery, requeue: true)
        case (nil, .deadLetter(let failure)):
            log.warning("handler rejected the message; requeued until dead-lettering is configured",
                        metadata: ["reason": "\(failure.reason)"])
            connection.nack(message.delivery, requeue: true)
        }
    }
}

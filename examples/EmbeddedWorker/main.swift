// warren's consumers inside a program of your own, beside another service,
// with one graceful shutdown: SIGTERM or SIGINT drains the consumers (what
// has not started goes back to the queue, running handlers finish and are
// acked), then the other service stops.
//
//   swift run EmbeddedWorker amqp://guest:guest@127.0.0.1:5672/%2f QUEUE
import AMQP
import Glibc
import Logging
import ServiceLifecycle
import Warren

/// Stands in for your HTTP server: says what the consumers do until the
/// group shuts down.
struct StatusReporter: Service {
    let runtime: WarrenRuntime
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            logger.info("consumers", metadata: ["state": "\(runtime.state)", "in_flight": "\(runtime.inFlight)"])
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) }
        }
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    print("usage: EmbeddedWorker AMQP_URL QUEUE")
    exit(2)
}
LoggingSystem.bootstrap(StreamLogHandler.standardError)
let logger = Logger(label: "embedded-worker")
let settings = WarrenSettings(
    broker: BrokerSettings(endpoints: [try ConnectionOptions(url: arguments[1])]),
    shutdown: ShutdownSettings(gracePeriod: .seconds(30), killAfter: .seconds(5)),
    consumers: [ConsumerSettings(name: "orders", queue: arguments[2], prefetch: 8, concurrency: 4)])
// An in-process handler: no process per message. Return `.retry` or
// `.deadLetter` to use warren's retry queues and dead-letter queue.
let orders = ClosureHandler { message in
    logger.info("handling", metadata: ["message_id": "\(message.logID)", "bytes": "\(message.body.count)"])
    try? await Task.sleep(for: .milliseconds(200))
    return .ack
}
let runtime = WarrenRuntime(settings: settings, handlers: ["orders": orders], logger: logger)
// Services shut down in reverse order: the consumers drain first, while
// the reporter (your HTTP server) still answers.
let group = ServiceGroup(configuration: .init(
    services: [StatusReporter(runtime: runtime, logger: logger), runtime],
    gracefulShutdownSignals: [.sigterm, .sigint],
    logger: logger))
do {
    try await group.run()
} catch {
    logger.critical("stopped: \(error)")
    exit(1)
}

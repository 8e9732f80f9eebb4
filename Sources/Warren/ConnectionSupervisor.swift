import AMQP
import Logging

/// Makes consuming connections, one after the other, for as long as warren
/// runs: connect with backoff (trying each broker URL in turn), hand the
/// connection to the control loop, forward its events, and when it is
/// lost, start again. Stops once draining begins.
///
/// Each connection has a generation, so the control loop tells its events
/// from an older connection's. Deliveries skip the loop: the router puts
/// them into the consumers' buffers on the I/O thread.
struct ConnectionSupervisor: Sendable {
    let broker: BrokerSettings
    /// A reload's new consumers: if the first round of connects fails, say
    /// so (`cannotConnect`) instead of retrying.
    let failFast: Bool
    let router: DeliveryRouter
    let executor: LoopExecutor
    let status: RuntimeStatus
    let drainStarted: TerminationSignal
    let events: AsyncStream<ControlLoop.Event>.Continuation
    let logger: Logger

    func run() async {
        let endpoints = broker.endpoints
        let backoff = Backoff(minimum: broker.reconnectMin, maximum: broker.reconnectMax)
        var endpointIndex = 0
        var failures = 0
        var generation = 0
        var connectedOnce = false
        while !drainStarted.isFired && !Task.isCancelled {
            let endpoint = endpoints[endpointIndex % endpoints.count]
            do {
                generation += 1
                let connection = try await connect(endpoint, generation: generation)
                logger.info("connected", metadata: ["broker": "\(endpoint.redactedURL)"])
                connectedOnce = true
                events.yield(.connected(connection, generation: generation))
                await withTaskCancellationHandler {
                    await connection.closed()
                } onCancel: {
                    connection.closeNow()
                }
                // A connection that served starts the next backoff from the beginning.
                if status.wasServed(generation) { failures = 0 }
            } catch {
                endpointIndex += 1
                // A full round over every URL failed: back off before the next.
                if endpointIndex % endpoints.count != 0 {
                    logger.warning("cannot connect; trying the next broker URL", metadata: [
                        "broker": "\(endpoint.redactedURL)", "error": "\(error)"])
                    continue
                }
                if failFast && !connectedOnce {
                    events.yield(.cannotConnect(error))
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

    /// Deliveries go from the I/O thread straight into consumers' buffers;
    /// other events into the control loop's stream.
    private func connect(_ endpoint: ConnectionOptions, generation: Int) async throws(AMQPError) -> AMQPConnection {
        let batch = router.makeBatch()
        let router = router, events = events
        return try await AMQPConnection.connect(endpoint, logger: logger, executor: executor, onBatchEnd: {
            router.flush(batch)
        }) { event in
            if case .delivery(let delivery) = event {
                router.dispatch(delivery, generation: generation, batch: batch)
            } else {
                // Deliveries before this event reach their buffers first.
                router.flush(batch)
                events.yield(.amqp(event, generation: generation))
            }
        }
    }
}

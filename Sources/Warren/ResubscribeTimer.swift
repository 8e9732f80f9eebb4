/// Re-subscribe requests for consumers the broker cancelled (or whose
/// set-up failed), each handed back to the control loop after its backoff.
/// Waits end early once draining begins; a request that arrives after its
/// connection is gone is dropped by the loop (`Subscriptions.wants`).
final class ResubscribeTimer: Sendable {
    private let requests: AsyncStream<Resubscribe>
    private let sink: AsyncStream<Resubscribe>.Continuation
    private let backoff: Backoff
    private let drainStarted: TerminationSignal

    init(broker: BrokerSettings, drainStarted: TerminationSignal) {
        (requests, sink) = AsyncStream<Resubscribe>.makeStream()
        backoff = Backoff(minimum: broker.reconnectMin, maximum: broker.reconnectMax)
        self.drainStarted = drainStarted
    }

    func request(_ resubscribe: Resubscribe) { sink.yield(resubscribe) }

    /// No more requests: `run` returns once the waits under way end.
    func finish() { sink.finish() }

    /// Serves requests until `finish`; `due` gets each once its backoff is over.
    func run(due: @escaping @Sendable (Resubscribe) -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            for await request in requests {
                group.addTask {
                    await self.drainStarted.sleep(for: self.backoff.delay(request.attempt, random: Double.random(in: 0..<1)))
                    due(request)
                }
            }
            group.cancelAll()
        }
    }
}

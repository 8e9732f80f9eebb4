import AMQP

/// The times open circuit breakers let one message through, each handed
/// back to the control loop when it comes (`ControlLoop.Event.breakerDue`).
/// Waits end early once draining begins. A breaker that opened again
/// meanwhile ignores an older time (`CircuitBreaker.due`).
final class BreakerTimer: Sendable {
    private let requests: AsyncStream<(consumer: Int, at: Int64)>
    private let sink: AsyncStream<(consumer: Int, at: Int64)>.Continuation
    private let drainStarted: TerminationSignal

    init(drainStarted: TerminationSignal) {
        (requests, sink) = AsyncStream<(consumer: Int, at: Int64)>.makeStream()
        self.drainStarted = drainStarted
    }

    /// `at`: monotonic milliseconds.
    func request(consumer: Int, at: Int64) { sink.yield((consumer, at)) }

    /// No more requests: `run` returns once the waits under way end.
    func finish() { sink.finish() }

    /// Serves requests until `finish`; `due` gets each consumer at its time.
    func run(due: @escaping @Sendable (Int) -> Void) async {
        await withDiscardingTaskGroup { group in
            for await request in requests {
                group.addTask {
                    let wait = max(0, request.at - monotonicMilliseconds())
                    await self.drainStarted.sleep(for: .milliseconds(wait))
                    if !self.drainStarted.isFired { due(request.consumer) }
                }
            }
            group.cancelAll()
        }
    }
}

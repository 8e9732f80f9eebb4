import AMQP
import Synchronization

/// The circuit breaker's side in the workers (see `CircuitBreaker`): each
/// delivery is admitted or released, each outcome reported; a change is
/// exported (`warren_breaker_open`, under the lock), logged and poked to the control loop,
/// which stops or starts consuming (`HoldReasons.breakerOpen`).
extension Consumer {
    /// Tells `poke` of every change of the breaker.
    func onBreaker(_ poke: @escaping @Sendable () -> Void) {
        breakerPoke.withLock { $0 = poke }
    }

    /// Whether the breaker keeps this consumer from consuming now, and when
    /// it lets one message through: read by the control loop after a poke.
    var breakerHolds: (holds: Bool, reopensAt: Int64?) {
        guard hasBreaker else { return (false, nil) }
        return breaker.withLock { ($0?.holds ?? false, $0?.reopensAt) }
    }

    /// Changes the breaker and, under the same lock, `warren_breaker_open`:
    /// 1 while the breaker keeps the consumer from consuming (open, or its
    /// one message running), 0 while it consumes (closed, half-open). Set
    /// where the state changes, in the order the changes are made, so two
    /// workers' outcomes can never leave it saying what the breaker is not.
    /// A runtime that does not speak for the process (a reload's candidate
    /// before it takes over, a retired one) leaves the gauge alone.
    private func changeBreaker<R>(_ body: (inout CircuitBreaker) -> R) -> R? {
        breaker.withLock { breaker in
            guard var changed = breaker else { return nil }
            let held = changed.holds
            let result = body(&changed)
            breaker = changed
            if changed.holds != held, exportsBreaker.load(ordering: .relaxed) {
                metrics.breakerOpen.record(changed.holds ? 1 : 0)
            }
            return result
        }
    }

    /// The runtime speaks for the process from now (`true`: records the
    /// gauge as the breaker stands) or no longer (`false`: a reload retired
    /// it). Under the breaker's lock: once this returns, no change of the
    /// retired runtime's breaker records anything any more.
    func exportBreaker(_ exports: Bool) {
        breaker.withLock { breaker in
            exportsBreaker.store(exports, ordering: .relaxed)
            if exports { metrics.breakerOpen.record(breaker?.holds ?? false ? 1 : 0) }
        }
    }

    /// The breaker is half-open: the consumer consumes with prefetch 1, so
    /// the broker sends the one message it lets through and no others
    /// (each would go back to the queue unstarted, and a quorum queue
    /// counts every return toward `delivery_limit`).
    var breakerWantsOne: Bool {
        guard hasBreaker else { return false }
        return breaker.withLock { if case .halfOpen? = $0?.state { true } else { false } }
    }

    /// The control loop's timer for `reopensAt` went off.
    func breakerDue(now: Int64) {
        guard hasBreaker else { return }
        report(changeBreaker { $0.due(now: now) } ?? .none)
    }

    /// How a worker may run `received`; nil: the breaker is open, and the
    /// delivery went back to the queue unstarted (no attempt spent).
    func admit(_ received: Received) -> CircuitBreaker.Ticket? {
        guard hasBreaker else { return .counted }
        let (ticket, change) = changeBreaker { $0.admit() } ?? (.counted, .none)
        report(change)
        guard let ticket else {
            received.connection.nack(received.delivery, requeue: true)
            metrics.requeued.increment()
            logUnstarted(received.delivery, "message released: the circuit breaker is open")
            return nil
        }
        return ticket
    }

    /// The admitted message never reached a handler: not an attempt.
    func breakerAbandoned(_ ticket: CircuitBreaker.Ticket) {
        guard hasBreaker else { return }
        report(changeBreaker { $0.abandoned(ticket) } ?? .none)
    }

    /// Reports a handler's outcome to the breaker. A retry, a timeout and a
    /// crash are failures; a rejection (dead letter), warren's own
    /// shortages and a stop count for nothing.
    /// Returns true when the breaker spared the failure: the message went
    /// back with its attempt not counted (see `retryUncounted`), because
    /// the breaker tripped on it, was open, or let it through half-open.
    func breakerSpares(_ message: Message, outcome: Outcome, stop: Watchdog.Reason?, ticket: CircuitBreaker.Ticket,
                       connection: AMQPConnection, watchdog: Watchdog) async -> Bool {
        guard hasBreaker else { return false }
        if case .shutdown? = stop {
            breakerAbandoned(ticket)
            return false
        }
        if case .retry(let failure) = outcome, failure.resourceShortage {
            breakerAbandoned(ticket)
            return false
        }
        // The handler rejected this message (bad input): a verdict, not a
        // failing handler. It counts for nothing, and the message goes to
        // the dead-letter queue as asked: counted, a run of bad messages
        // would trip the breaker, and each one it spared would come back,
        // rejected again, for ever.
        if stop == nil, case .deadLetter = outcome {
            breakerAbandoned(ticket)
            return false
        }
        if stop == nil, case .ack = outcome {
            report(changeBreaker { $0.succeeded() } ?? .none)
            return false
        }
        let now = monotonicMilliseconds()
        let (verdict, change) = changeBreaker { $0.failed(ticket, now: now) } ?? (.settle, .none)
        report(change)
        guard verdict == .uncounted else { return false }
        let reason = outcome.failure?.reason ?? (stop == nil ? "failed" : "timed out")
        await retryUncounted(message, reason: reason, connection: connection, watchdog: watchdog)
        return true
    }

    /// Logs a change (after the lock: two workers' lines may come in
    /// either order), and pokes the control loop.
    private func report(_ change: CircuitBreaker.Change) {
        let threshold = settings.pauseAfterFailures
        switch change {
        case .none:
            return
        case .opened(_, let delay):
            logger.error("the circuit breaker opened: handlers keep failing (\(threshold) failed attempts in a row, or the one message let through failed); consuming stops for \(delay), then one message is let through",
                         metadata: ["queue": "\(settings.queue)", "pause_after_failures": "\(threshold)"])
        case .halfOpened:
            logger.notice("circuit breaker: letting one message through", metadata: ["queue": "\(settings.queue)"])
        case .probing:
            break
        case .closed:
            logger.notice("the circuit breaker closed: a handler succeeded; consuming again", metadata: ["queue": "\(settings.queue)"])
        }
        breakerPoke.withLock { $0 }?()
    }
}

/// `pause_after_failures`: a consumer whose handler fails N attempts in a
/// row stops consuming for a while, instead of burning every message's
/// attempts against a dependency that is down.
///
/// A plain value: every event takes the time (`now`, monotonic
/// milliseconds) and returns what to do, so it is tested as a table on a
/// manual clock. The consumer keeps it under a lock; the control loop
/// reads `holds` and `reopensAt` and stops or starts consuming.
///
/// | state \ event | admit | success | failure (counted ticket) | failure (probe) | probe abandoned | due(now) |
/// | --- | --- | --- | --- | --- | --- | --- |
/// | closed(n) | run | closed(0) | n+1 < N: closed(n+1), settle; else open(now + retry_delay), uncounted | - | - | - |
/// | open | release | closed(0): a message started before it opened succeeded | uncounted | - | - | now >= until: halfOpen; else nothing |
/// | halfOpen | probe -> probing (consuming stops again) | closed(0) | uncounted | - | - | - |
/// | probing | release | closed(0) | uncounted | open(now + doubled delay), uncounted | halfOpen | - |
///
/// "settle": the failure is an attempt like any other (retry, or dead
/// letter when attempts are spent): the failures before the Nth.
/// "uncounted": back to the queue with its attempt not counted
/// (`Consumer.retryUncounted`: behind the others, through the first delay
/// queue, or straight to the tail of the queue without one), so nothing reaches the dead-letter queue because the breaker
/// tripped. "release": a delivery not started goes back (`basic.nack`,
/// requeue). Going behind the others matters for the probe: a message that
/// always fails would otherwise be the next probe too, and keep the
/// breaker open while the messages behind it could be done.
struct CircuitBreaker: Sendable, Equatable {
    enum State: Sendable, Equatable {
        /// Consuming; `failures` failed attempts in a row so far.
        case closed(failures: Int)
        /// Not consuming until `until` (monotonic ms); `delay` is this opening's length.
        case open(until: Int64, delay: Duration)
        /// The delay is over: consuming, for one message.
        case halfOpen(delay: Duration)
        /// That one message runs; consuming has stopped again.
        case probing(delay: Duration)
    }

    /// How a worker holds a delivery the breaker let through.
    enum Ticket: Sendable, Equatable {
        /// An ordinary attempt.
        case counted
        /// The one message of a half-open breaker.
        case probe
    }

    /// What a failed attempt's message becomes.
    enum Verdict: Sendable, Equatable {
        /// Retried or dead-lettered by the usual rules.
        case settle
        /// Back to the queue, the attempt not counted.
        case uncounted
    }

    /// What the event changed, for the log and the control loop.
    enum Change: Sendable, Equatable {
        case none
        /// Tripped (or the probe failed): consuming stops until `until`.
        case opened(until: Int64, delay: Duration)
        /// The delay is over: one message may come through.
        case halfOpened
        /// The one message came: consuming stops again until it has run.
        case probing
        /// A success: consuming as usual.
        case closed
    }

    let threshold: Int
    let retryDelay: Duration
    let retryDelayMax: Duration
    private(set) var state: State = .closed(failures: 0)

    init(threshold: Int, retryDelay: Duration, retryDelayMax: Duration) {
        precondition(threshold >= 1, "CircuitBreaker: a threshold of \(threshold) means no breaker")
        self.threshold = threshold
        self.retryDelay = retryDelay
        self.retryDelayMax = max(retryDelayMax, retryDelay)
    }

    /// Whether the consumer must not consume now.
    var holds: Bool {
        switch state {
        case .closed, .halfOpen: false
        case .open, .probing: true
        }
    }

    /// When an open breaker lets one message through.
    var reopensAt: Int64? {
        if case .open(let until, _) = state { return until }
        return nil
    }

    var isClosed: Bool { if case .closed = state { true } else { false } }

    /// A worker has a delivery: run it (and how), or nil: release it unstarted.
    mutating func admit() -> (Ticket?, Change) {
        switch state {
        case .closed: return (.counted, .none)
        case .open, .probing: return (nil, .none)
        case .halfOpen(let delay):
            state = .probing(delay: delay)
            return (.probe, .probing)
        }
    }

    mutating func succeeded() -> Change {
        if case .closed = state {
            state = .closed(failures: 0)
            return .none
        }
        state = .closed(failures: 0)
        return .closed
    }

    mutating func failed(_ ticket: Ticket, now: Int64) -> (Verdict, Change) {
        switch (state, ticket) {
        case (.closed(let failures), _):
            guard failures + 1 >= threshold else {
                state = .closed(failures: failures + 1)
                return (.settle, .none)
            }
            return (.uncounted, open(for: retryDelay, now: now))
        case (.probing(let delay), .probe):
            return (.uncounted, open(for: Backoff.doubled(delay, times: 1, cappedAt: retryDelayMax), now: now))
        case (.open, _), (.halfOpen, _), (.probing, .counted):
            // Started before the breaker opened: not burned.
            return (.uncounted, .none)
        }
    }

    /// The probe never ran (its worker went first, warren lacked resources): another may come.
    mutating func abandoned(_ ticket: Ticket) -> Change {
        guard ticket == .probe, case .probing(let delay) = state else { return .none }
        state = .halfOpen(delay: delay)
        return .halfOpened
    }

    /// The timer the control loop set for `reopensAt`; an earlier opening's
    /// timer finds a later `until` and does nothing.
    mutating func due(now: Int64) -> Change {
        guard case .open(let until, let delay) = state, now >= until else { return .none }
        state = .halfOpen(delay: delay)
        return .halfOpened
    }

    private mutating func open(for delay: Duration, now: Int64) -> Change {
        let until = now + delay.milliseconds
        state = .open(until: until, delay: delay)
        return .opened(until: until, delay: delay)
    }
}

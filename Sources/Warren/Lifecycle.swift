/// The lifecycle of one warren: `starting -> running -> draining -> closing -> stopped`.
///
/// A plain value: every event is a `mutating func` that switches over every
/// state and returns what to do. It performs nothing itself, so each
/// transition is unit-tested without a broker, a clock or a process.
///
/// `inFlight` counts deliveries handed to workers and not yet settled
/// (waiting in a consumer's buffer or running in a handler).
///
/// | state \ event | dispatched | released (handlers finished, or given back) | stop (1st) | stop (2nd) / graceExpired | quit | closed | connectionLost | started |
/// | --- | --- | --- | --- | --- | --- | --- | --- | --- |
/// | starting | count up | count down | beginDrain | - | beginDrain + terminate | illegal | -> reconnecting | -> running, ready |
/// | running | count up | count down | beginDrain | - | beginDrain + terminate | illegal | -> reconnecting | - |
/// | reconnecting | count up | count down | beginDrain | - | beginDrain + terminate | illegal | - | -> running, ready |
/// | draining | count up (late) | count down; 0 -> close | terminate | terminate (once) | terminate (once) | illegal | - | - |
/// | closing | illegal | - | - | - | - | -> stopped, exit 0 | -> stopped, exit 0 | - |
/// | stopped | illegal | - | - | - | - | - | - | - |
///
/// Deliveries are dispatched into a consumer's buffer on the I/O thread
/// while the buffer is open, and counted here as `dispatched`; the drain
/// closes the buffers (so nothing new starts) and releases what they held.
///
/// Reconnecting is a sub-state of running: handlers keep running (their
/// outcomes are dropped, the broker redelivers), nothing new starts, and
/// once every consumer consumes again it is running. A connection lost while
/// draining changes nothing: handlers finish within the grace period, and the
/// close has nothing left to flush. `failed` (startup impossible: a missing
/// queue with `declare = false`) exits 1 from starting.
public struct Lifecycle: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case starting(inFlight: Int)
        case running(inFlight: Int)
        /// The connection was lost; a new one is being made.
        case reconnecting(inFlight: Int)
        /// `terminating`: the watchdog was told to end the handlers still running.
        case draining(inFlight: Int, terminating: Bool)
        case closing
        case stopped(exitCode: Int32)
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Every consumer is consuming: tell systemd `READY=1`.
        case notifyReady
        /// The connection is gone: drop waiting deliveries of it, make a new one.
        case reconnect
        /// Stop signal: `STOPPING=1`, close every consumer's buffer and release
        /// (`basic.nack`, requeue) what has not started, so nothing new starts;
        /// `basic.cancel` every consumer; start the grace timer.
        /// Report how many were released with `released(_:)`.
        case beginDrain
        /// `beginDrain`, then `terminateHandlers` (SIGQUIT).
        case beginDrainAndTerminate
        /// Watchdog: end every running handler now (SIGTERM, SIGKILL after `kill_after`); requeue their messages.
        case terminateHandlers
        /// Flush every settlement, close each channel, then the connection.
        case close
        /// Done: leave with this exit code.
        case exit(Int32)
    }

    public private(set) var state: State = .starting(inFlight: 0)

    public init() {}

    public init(state: State) { self.state = state }

    public var inFlight: Int {
        switch state {
        case .starting(let n), .running(let n), .reconnecting(let n), .draining(let n, _): n
        case .closing, .stopped: 0
        }
    }

    /// Every consumer is consuming (first start, or after a reconnect).
    public mutating func started() -> Action {
        switch state {
        case .starting(let n), .reconnecting(let n):
            state = .running(inFlight: n)
            return .notifyReady
        case .running, .draining, .closing, .stopped:
            return .none
        }
    }

    /// Starting cannot succeed (a queue missing with `declare = false`).
    public mutating func failed() -> Action {
        switch state {
        case .starting(0):
            state = .stopped(exitCode: 1)
            return .exit(1)
        case .starting, .running, .reconnecting, .draining, .closing, .stopped:
            preconditionFailure("Lifecycle: 'failed' in state \(state): only a first start with nothing in flight can fail")
        }
    }

    /// `count` deliveries were handed to consumers' buffers. The router does
    /// that on the I/O thread while the buffers are open; `beginDrain` closes
    /// them, and whatever they still hold is released. The count may arrive
    /// a little after the drain began, never after the close.
    public mutating func dispatched(_ count: Int) -> Action {
        guard count > 0 else { return .none }
        switch state {
        case .starting(let n): state = .starting(inFlight: n + count)
        case .running(let n): state = .running(inFlight: n + count)
        case .reconnecting(let n): state = .reconnecting(inFlight: n + count)
        case .draining(let n, let terminating): state = .draining(inFlight: n + count, terminating: terminating)
        case .closing, .stopped:
            preconditionFailure("Lifecycle: 'dispatched(\(count))' in state \(state): buffers close before the close begins")
        }
        return .none
    }

    /// `count` dispatched deliveries were settled: their handlers finished,
    /// or they were given back before they started.
    public mutating func released(_ count: Int) -> Action {
        guard count > 0 else { return closeIfIdle() }
        switch state {
        case .starting(let n):
            state = .starting(inFlight: Self.countDown(n, by: count, event: "released", state: state))
            return .none
        case .running(let n):
            state = .running(inFlight: Self.countDown(n, by: count, event: "released", state: state))
            return .none
        case .reconnecting(let n):
            state = .reconnecting(inFlight: Self.countDown(n, by: count, event: "released", state: state))
            return .none
        case .draining(let n, let terminating):
            state = .draining(inFlight: Self.countDown(n, by: count, event: "released", state: state), terminating: terminating)
            return closeIfIdle()
        case .closing, .stopped:
            return .none
        }
    }

    /// SIGTERM or SIGINT. The first drains; the next skips the rest of the grace period.
    public mutating func stopRequested() -> Action {
        switch state {
        case .starting(let n), .running(let n), .reconnecting(let n):
            state = .draining(inFlight: n, terminating: false)
            return .beginDrain
        case .draining(let n, false):
            state = .draining(inFlight: n, terminating: true)
            return .terminateHandlers
        case .draining(_, true), .closing, .stopped:
            return .none
        }
    }

    /// SIGQUIT: stop at once.
    public mutating func quitRequested() -> Action {
        switch state {
        case .starting(let n), .running(let n), .reconnecting(let n):
            state = .draining(inFlight: n, terminating: true)
            return .beginDrainAndTerminate
        case .draining(let n, false):
            state = .draining(inFlight: n, terminating: true)
            return .terminateHandlers
        case .draining(_, true), .closing, .stopped:
            return .none
        }
    }

    /// The grace period is over.
    public mutating func graceExpired() -> Action {
        switch state {
        case .draining(let n, false):
            state = .draining(inFlight: n, terminating: true)
            return .terminateHandlers
        case .starting, .running, .reconnecting, .draining(_, true), .closing, .stopped:
            return .none
        }
    }

    /// Channels and connection are closed.
    public mutating func closed() -> Action {
        switch state {
        case .closing:
            state = .stopped(exitCode: 0)
            return .exit(0)
        case .stopped:
            return .none
        case .starting, .running, .reconnecting, .draining:
            preconditionFailure("Lifecycle: 'closed' in state \(state): close is only sent from closing")
        }
    }

    /// The connection is gone. Outcomes of handlers still running can no
    /// longer be sent; the broker redelivers those messages.
    public mutating func connectionLost() -> Action {
        switch state {
        case .starting(let n), .running(let n):
            state = .reconnecting(inFlight: n)
            return .reconnect
        case .closing:
            // Everything was flushed before the close began; the broker requeues the rest.
            state = .stopped(exitCode: 0)
            return .exit(0)
        case .reconnecting, .draining, .stopped:
            return .none
        }
    }

    private mutating func closeIfIdle() -> Action {
        switch state {
        case .draining(0, _):
            state = .closing
            return .close
        default:
            return .none
        }
    }

    private static func countDown(_ n: Int, by count: Int, event: String, state: State) -> Int {
        precondition(n >= count, "Lifecycle: '\(event)(\(count))' in state \(state): more settled than dispatched")
        return n - count
    }
}

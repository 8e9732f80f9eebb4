/// The lifecycle of one warren: `starting -> running -> draining -> closing -> stopped`.
///
/// A plain value: every event is a `mutating func` that switches over every
/// state and returns what to do. It performs nothing itself, so each
/// transition is unit-tested without a broker, a clock or a process.
///
/// | state \ event | stop (1st) | stop (2nd) / graceExpired | quit | workersDone | closed | connectionLost | started |
/// | --- | --- | --- | --- | --- | --- | --- | --- |
/// | starting | beginDrain | - | beginDrain + terminate | illegal | illegal | -> reconnecting | -> running, ready |
/// | running | beginDrain | - | beginDrain + terminate | illegal | illegal | -> reconnecting | - |
/// | reconnecting | beginDrain | - | beginDrain + terminate | illegal | illegal | - | -> running, ready |
/// | draining | terminate | terminate (once) | terminate (once) | -> closing, close | illegal | - | - |
/// | closing | - | - | - | illegal | -> stopped, exit 0 | -> stopped, exit 0 | - |
/// | stopped | - | - | - | illegal | - | - | - |
///
/// What is in flight is not counted here: the drain closes every
/// consumer's buffer (so nothing new starts, and what had not started is
/// released), and each consumer's workers then end once their last
/// handler is settled. `workersDone` says every consumer's workers have
/// ended, so the drain is complete; the buffers close only when draining
/// begins, so it cannot come earlier, and it comes once.
///
/// Reconnecting is a sub-state of running: handlers keep running (their
/// outcomes are dropped, the broker redelivers), nothing new starts, and
/// once every consumer consumes again it is running. A connection lost while
/// draining changes nothing: handlers finish within the grace period, and the
/// close has nothing left to flush. `failed` (startup impossible: a missing
/// queue with `declare = false`) exits 1 from starting.
public struct Lifecycle: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case starting
        case running
        /// The connection was lost; a new one is being made.
        case reconnecting
        /// `terminating`: the watchdog was told to end the handlers still running.
        case draining(terminating: Bool)
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

    public private(set) var state: State = .starting

    public init() {}

    public init(state: State) { self.state = state }

    /// Every consumer is consuming (first start, or after a reconnect).
    public mutating func started() -> Action {
        switch state {
        case .starting, .reconnecting:
            state = .running
            return .notifyReady
        case .running, .draining, .closing, .stopped:
            return .none
        }
    }

    /// Starting cannot succeed: a queue missing with `declare = false`
    /// (exit 1), or one whose arguments differ from the config's (78, a
    /// configuration error).
    public mutating func failed(exitCode: Int32 = 1) -> Action {
        switch state {
        case .starting:
            state = .stopped(exitCode: exitCode)
            return .exit(exitCode)
        case .running, .reconnecting, .draining, .closing, .stopped:
            preconditionFailure("Lifecycle: 'failed' in state \(state): only a first start can fail")
        }
    }

    /// Every consumer's workers have ended: nothing runs, nothing waits.
    public mutating func workersDone() -> Action {
        switch state {
        case .draining:
            state = .closing
            return .close
        case .starting, .running, .reconnecting, .closing, .stopped:
            preconditionFailure("Lifecycle: 'workersDone' in state \(state): workers end once, after the drain closed their buffers")
        }
    }

    /// SIGTERM or SIGINT. The first drains; the next skips the rest of the grace period.
    public mutating func stopRequested() -> Action {
        switch state {
        case .starting, .running, .reconnecting:
            state = .draining(terminating: false)
            return .beginDrain
        case .draining(false):
            state = .draining(terminating: true)
            return .terminateHandlers
        case .draining(true), .closing, .stopped:
            return .none
        }
    }

    /// SIGQUIT: stop at once.
    public mutating func quitRequested() -> Action {
        switch state {
        case .starting, .running, .reconnecting:
            state = .draining(terminating: true)
            return .beginDrainAndTerminate
        case .draining(false):
            state = .draining(terminating: true)
            return .terminateHandlers
        case .draining(true), .closing, .stopped:
            return .none
        }
    }

    /// The grace period is over.
    public mutating func graceExpired() -> Action {
        switch state {
        case .draining(false):
            state = .draining(terminating: true)
            return .terminateHandlers
        case .starting, .running, .reconnecting, .draining(true), .closing, .stopped:
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
        case .starting, .running:
            state = .reconnecting
            return .reconnect
        case .closing:
            // Everything was flushed before the close began; the broker requeues the rest.
            state = .stopped(exitCode: 0)
            return .exit(0)
        case .reconnecting, .draining, .stopped:
            return .none
        }
    }
}

import AMQP
import Synchronization

/// What the control loop publishes for readers on other tasks and threads
/// (readiness, liveness, the connection supervisor's backoff, a reload's
/// retirement): one small snapshot under one lock. The loop owns the
/// truth; this is the copy others may read.
final class RuntimeStatus: Sendable {
    private struct Snapshot {
        var state: Lifecycle.State = .starting
        /// The connection the control loop uses now.
        var connection: AMQPConnection? = nil
        /// The last connection on which every consumer consumed.
        var servedGeneration = 0
        /// A reload replaced this runtime: its states are no longer the process's.
        var retired = false
        /// SIGTSTP: consumers do not consume until SIGCONT.
        var paused = false
    }

    /// Guards the snapshot; written by the control loop (and `retire`), read anywhere.
    private let snapshot = Mutex(Snapshot())

    var state: Lifecycle.State { snapshot.withLock { $0.state } }
    var connection: AMQPConnection? { snapshot.withLock { $0.connection } }
    var isRetired: Bool { snapshot.withLock { $0.retired } }
    var isPaused: Bool { snapshot.withLock { $0.paused } }

    func setPaused(_ paused: Bool) { snapshot.withLock { $0.paused = paused } }

    /// Records the loop's new state; returns whether it still speaks for the process.
    func publish(_ state: Lifecycle.State) -> Bool {
        snapshot.withLock { snapshot in
            snapshot.state = state
            return !snapshot.retired
        }
    }

    func use(_ connection: AMQPConnection?) { snapshot.withLock { $0.connection = connection } }

    /// Every consumer consumes on the connection of `generation`.
    func served(_ generation: Int) { snapshot.withLock { $0.servedGeneration = max($0.servedGeneration, generation) } }

    /// Whether every consumer consumed on the connection of `generation` (its loss then backs off from the start).
    func wasServed(_ generation: Int) -> Bool { snapshot.withLock { $0.servedGeneration >= generation } }

    func retire() { snapshot.withLock { $0.retired = true } }
}

import AMQP
import Logging
import Synchronization

/// What a `mode = persistent` consumer needs to run its workers: the
/// command, the process supervisor, the backoff for failed starts, and
/// which slots cannot start a worker now (for `/readyz`).
final class PersistentWorkers: Sendable {
    let argv: [String]
    let killAfter: Duration
    let supervisor: ProcessSupervisor
    /// Between failed starts: `[broker] reconnect_min` to `reconnect_max`.
    let backoff: Backoff
    /// Slots of the consumer: when every one fails to start, it holds.
    let slots: Int
    private struct State {
        /// Why slots have no worker, by slot, while their starts fail.
        var problems: [Int: String] = [:]
        /// Slots whose last worker failed before it ever said ready.
        var neverReady: Set<Int> = []
        /// A worker of this consumer has said ready at least once.
        var everReady = false
        var onHold: (@Sendable () -> Void)? = nil
    }
    /// Guards the failing slots, whether the consumer holds, and who hears of it.
    private let state = Mutex(State())

    init(argv: [String], killAfter: Duration, supervisor: ProcessSupervisor, backoff: Backoff, slots: Int) {
        self.argv = argv
        self.killAfter = killAfter
        self.supervisor = supervisor
        self.backoff = backoff
        self.slots = max(1, slots)
    }

    /// Who stops and restarts consuming for this consumer, told whenever
    /// `isHolding` may have changed (it reads the value itself, so the
    /// order of two calls never matters).
    func onHold(_ change: @escaping @Sendable () -> Void) {
        state.withLock { $0.onHold = change }
    }

    /// Whether the consumer should not consume: every slot's worker fails
    /// before it ever says ready (a bad deploy, a missing dependency), so
    /// nothing it receives can run, and the broker should give it to
    /// consumers that can. A worker that fails after ready (on a message,
    /// idle) does not count: the next one may well work.
    var isHolding: Bool { state.withLock { $0.neverReady.count >= slots } }

    /// Whether a worker of this consumer has said ready yet: a reload's new
    /// consumers replace the running ones only then.
    var hasBeenReady: Bool { state.withLock { $0.everReady } }

    func failing(_ slot: Int, _ why: String?, beforeReady: Bool) {
        let (poke, changed) = state.withLock { state -> ((@Sendable () -> Void)?, Bool) in
            let before = state.neverReady.count >= slots
            state.problems[slot] = why
            if why != nil && beforeReady { state.neverReady.insert(slot) } else { state.neverReady.remove(slot) }
            let firstReady = why == nil && !state.everReady
            if firstReady { state.everReady = true }
            return (state.onHold, firstReady || before != (state.neverReady.count >= slots))
        }
        if changed { poke?() }
    }

    /// Why this consumer takes fewer messages than it should: a slot whose
    /// worker does not start; nil when every slot's last start succeeded.
    var problem: String? {
        state.withLock { state in
            let problems = state.problems
            guard let first = problems.keys.min() else { return nil }
            return "\(problems.count) worker(s) failing to start, restarting with backoff (last: \(problems[first]!))"
        }
    }
}

/// The watchdog's handle on a message a persistent worker holds: a cancel
/// becomes an event for the slot, which terminates the worker.
final class WorkerStop: Cancellable {
    private let sink: AsyncStream<Consumer.SlotEvent>.Continuation
    private let id: String

    init(sink: AsyncStream<Consumer.SlotEvent>.Continuation, id: String) {
        self.sink = sink
        self.id = id
    }

    func cancel() { sink.yield(.watchdog(id: id)) }
}

extension HandlerEnvironment {
    /// A persistent worker's environment: warren's own, less what handlers
    /// must not see, plus `WARREN_QUEUE` and `WARREN_CONSUMER`. Everything
    /// about a message comes in its envelope.
    static func forWorker(_ settings: ConsumerSettings) -> [String] {
        inherited + ["WARREN_QUEUE=\(settings.queue)", "WARREN_CONSUMER=\(settings.name)"]
    }
}

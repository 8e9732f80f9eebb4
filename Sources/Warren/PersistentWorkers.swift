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
    /// Why slots have no worker, by slot, while their starts fail.
    private let problems = Mutex<[Int: String]>([:])

    init(argv: [String], killAfter: Duration, supervisor: ProcessSupervisor, backoff: Backoff) {
        self.argv = argv
        self.killAfter = killAfter
        self.supervisor = supervisor
        self.backoff = backoff
    }

    func failing(_ slot: Int, _ why: String?) {
        problems.withLock { $0[slot] = why }
    }

    /// Why this consumer takes fewer messages than it should: a slot whose
    /// worker does not start; nil when every slot's last start succeeded.
    var problem: String? {
        problems.withLock { problems in
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

import Glibc
public import Logging
import Synchronization

/// A task executor whose jobs run on the I/O thread of the connection that
/// hosts it, between turns of its loop; between connections, on a standby
/// thread of its own.
///
/// Why: a delivery handed to a worker on Swift's cooperative pool costs a
/// thread wake-up there (a futex through Dispatch), and its ack costs one
/// back (the wake-up pipe). On a small machine where the broker wants the
/// same cores, those switches, not the work, set the pace: measured, they
/// cost a third of the throughput. Workers that prefer this executor run
/// right where their deliveries are read, and their acks are on the wire in
/// the same turn.
///
/// The price is the cooperative pool's own rule, with a sharper edge: code
/// running here must not block. A handler that blocks holds up heartbeats
/// and every other handler of the connection, so the loop logs a warning
/// when a turn's jobs hold the thread for long. Blocking or heavy work
/// belongs on another executor (`withTaskExecutorPreference(globalConcurrentExecutor)`)
/// or another thread; command handlers only await their process.
///
/// Jobs of one task never run on two threads at once (the runtime enqueues
/// a task's next job only after the last one returned), but jobs of
/// different tasks may run on the old host and the new one for a moment
/// while hosts change. That is allowed: this is a task executor, not a
/// serial one.
public final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: every mutable field is in `state` (a Mutex); `standbyWake`
    // is a POSIX semaphore, made to be posted from any thread.
    private struct State {
        var jobs: [UnownedJob] = []
        /// The loop running the jobs now (its queue knows its thread); nil:
        /// the standby thread.
        var host: CommandQueue? = nil
        /// A wake-up is on its way to the host; later jobs need none.
        var wakePending = false
        var stopping = false
        /// The standby thread has ended; a late job goes to the global executor.
        var gone = false
    }

    /// Guards the jobs, the host and the flags.
    private let state = Mutex(State())
    private let standbyWake: UnsafeMutablePointer<sem_t>
    private let standbyThread = Atomic<UInt>(0)
    private let logger: Logger
    /// A turn's jobs holding the thread longer than this are logged.
    private let blockedWarning: Int64 = 250
    private let lastWarning = Atomic<Int64>(0)

    /// Throws when no thread can be had for the standby loop.
    public init(name: String = "warren-handlers", logger: Logger = Logger(label: "warren.executor")) throws(IOThread.StartError) {
        self.logger = logger
        standbyWake = .allocate(capacity: 1)
        sem_init(standbyWake, 0, 0)
        try IOThread.tryStart(name: name) { [self] in standby() }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        enum Wake { case none, host(CommandQueue), standby, forward }
        let wake = state.withLock { state -> Wake in
            if state.gone { return .forward }
            state.jobs.append(job)
            // The host's own thread drains the queue before it sleeps.
            let onHost = state.host?.onOwnThread
                ?? (pthread_equal(pthread_self(), pthread_t(standbyThread.load(ordering: .relaxed))) != 0)
            if state.wakePending || onHost { return .none }
            state.wakePending = true
            return state.host.map(Wake.host) ?? .standby
        }
        switch wake {
        case .none: break
        case .host(let queue): queue.wake()
        case .standby: sem_post(standbyWake)
        case .forward: globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    /// Ends the standby thread once no job is left. Every task that prefers
    /// this executor should be finished; a job that still comes runs on the
    /// global executor.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        if first { sem_post(standbyWake) }
    }

    deinit {
        sem_destroy(standbyWake)
        standbyWake.deallocate()
    }

    // MARK: Hosts

    /// An I/O loop takes over; its queue has been claimed by its thread.
    func attach(_ queue: CommandQueue) {
        state.withLock { state in
            state.host = queue
            state.wakePending = false
        }
    }

    /// The loop is ending: the standby thread takes over what is queued.
    func detach(_ queue: CommandQueue) {
        let wake = state.withLock { state -> Bool in
            guard state.host === queue else { return false }
            state.host = nil
            state.wakePending = !state.jobs.isEmpty
            return state.wakePending || state.stopping
        }
        if wake { sem_post(standbyWake) }
    }

    var hasJobs: Bool { state.withLock { !$0.jobs.isEmpty } }

    /// Runs every queued job, and those they queue, until none is left.
    /// Called by the host, on its thread.
    func runAll() {
        var batch: [UnownedJob] = []
        var started: Int64 = 0
        while true {
            state.withLock { state in
                swap(&batch, &state.jobs)
                state.wakePending = false
            }
            if batch.isEmpty { break }
            if started == 0 { started = monotonicMilliseconds() }
            let me = asUnownedTaskExecutor()
            for job in batch { job.runSynchronously(on: me) }
            batch.removeAll(keepingCapacity: true)
        }
        if started != 0 { warnIfBlocked(since: started) }
    }

    private func warnIfBlocked(since started: Int64) {
        let now = monotonicMilliseconds()
        let held = now - started
        guard held >= blockedWarning, now - lastWarning.load(ordering: .relaxed) >= 10_000 else { return }
        lastWarning.store(now, ordering: .relaxed)
        logger.warning("in-process handler code held the I/O thread without awaiting; heartbeats and acks waited meanwhile. Move blocking or heavy work to another executor or thread", metadata: [
            "held_ms": "\(held)"])
    }

    private func standby() {
        standbyThread.store(UInt(pthread_self()), ordering: .relaxed)
        while true {
            while sem_wait(standbyWake) != 0 && errno == EINTR {}
            let (hosted, stop) = state.withLock { state in
                (state.host != nil, state.stopping && state.jobs.isEmpty && state.host == nil)
            }
            if stop { break }
            if !hosted { runAll() }
        }
        state.withLock { $0.gone = true }
        // Whatever came between the last run and `gone`.
        runAll()
    }
}

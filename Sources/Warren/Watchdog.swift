import AMQP
import Glibc
import Synchronization

/// Watches every running handler: its timeout, and the shutdown switch that
/// ends them all (grace period over, second signal, SIGQUIT).
///
/// A handler runs inline in its worker's task; the watchdog holds a way to
/// cancel that task. One timer thread serves every deadline: it sleeps in
/// poll(2) until the earliest one, or until an earlier one is registered
/// (a wake-up of its `WakeableInbox`, which holds no commands: the state
/// it is woken for is here). Per message this is two short critical sections,
/// instead of a task group with a sleeping timer task.
final class Watchdog: Sendable {
    enum Reason: Sendable, Equatable { case timeout, shutdown }

    private struct Running {
        var deadline: Int64?
        var handle: any Cancellable
        var reason: Reason?
        var consumer: String
        /// Kept for the report; its log id is only built when one is asked for.
        var delivery: Delivery
        var attempt: Int
        var started: Int64
        var pid: Int32? = nil
    }

    /// A running handler, for the SIGUSR1 report.
    struct Report: Sendable {
        var consumer: String
        var messageID: String
        var attempt: Int
        var pid: Int32?
        var age: Duration
    }

    private struct State {
        var fired = false
        var running: [Int: Running] = [:]
        var nextID = 0
        /// When the timer thread wakes next (ms, monotonic); nil = only when woken.
        var wakeAt: Int64? = nil
    }

    /// Guards the running handlers, the fired flag and the timer's wake-up time.
    private let state = Mutex(State())
    /// Wakes the timer thread; closed when the watchdog is.
    private let wakeUp: WakeableInbox<Never>
    /// Milliseconds on a monotonic clock; injected by tests.
    private let clock: @Sendable () -> Int64
    /// Fired together with the watchdog, for waits that are not handlers.
    let shutdown = TerminationSignal()

    /// - Parameters:
    ///   - clock: milliseconds, monotonic; tests pass a manual one.
    ///   - timerThread: false in tests, which call `expireDue(now:)` themselves.
    /// Throws when the system has no descriptor or thread to spare: a
    /// runtime without its watchdog does not start (a reload is refused, the
    /// running consumers go on), rather than the process aborting.
    init(clock: @escaping @Sendable () -> Int64 = monotonicMilliseconds, timerThread: Bool = true) throws(StartError) {
        self.clock = clock
        do throws(WakePipeError) {
            wakeUp = try WakeableInbox()
        } catch {
            throw StartError(description: "cannot create the watchdog's wake-up pipe: \(error.description)")
        }
        guard timerThread else { return }
        do throws(IOThread.StartError) {
            try IOThread.tryStart(name: "warren-watchdog") { [self] in timerLoop() }
        } catch {
            throw StartError(description: error.description)
        }
    }

    public struct StartError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Ends the timer thread; the runtime that owned this watchdog is done.
    func close() {
        wakeUp.close()
    }

    /// A handler starts; cancelling `handle` ends it. nil if the watchdog
    /// has already fired: the handler must not start.
    /// - Parameter now: the start, in this watchdog's milliseconds, if the
    ///   caller has just read the clock anyway.
    func start(timeout: Duration?, consumer: String, delivery: Delivery, attempt: Int, handle: any Cancellable,
               now: Int64? = nil) -> Int? {
        let started = now ?? clock()
        let deadline = timeout.map { started + $0.milliseconds }
        let (id, wake): (Int?, Bool) = state.withLock { state in
            if state.fired { return (nil, false) }
            state.nextID += 1
            state.running[state.nextID] = Running(deadline: deadline, handle: handle, reason: nil, consumer: consumer,
                                                  delivery: delivery, attempt: attempt, started: started)
            guard let deadline else { return (state.nextID, false) }
            if let wakeAt = state.wakeAt, wakeAt <= deadline { return (state.nextID, false) }
            state.wakeAt = deadline
            return (state.nextID, true)
        }
        if wake { wakeUp.wake() }
        return id
    }

    /// The handler's command started as process `pid`.
    func setPID(_ id: Int, _ pid: Int32) {
        state.withLock { $0.running[id]?.pid = pid }
    }

    /// Every handler running now, oldest first.
    func report() -> [Report] {
        let now = clock()
        return state.withLock { state in
            state.running.values.sorted { $0.started < $1.started }.map {
                Report(consumer: $0.consumer, messageID: Message.logID(of: $0.delivery), attempt: $0.attempt, pid: $0.pid,
                       age: .milliseconds(now - $0.started))
            }
        }
    }

    /// The handler returned. Returns why the watchdog stopped it, if it did.
    func finish(_ id: Int) -> Reason? {
        state.withLock { $0.running.removeValue(forKey: id)?.reason }
    }

    /// Ends every running handler, and refuses to start new ones.
    func fire() {
        let handles = state.withLock { state -> [any Cancellable] in
            state.fired = true
            var handles: [any Cancellable] = []
            for id in state.running.keys where state.running[id]!.reason == nil {
                state.running[id]!.reason = .shutdown
                handles.append(state.running[id]!.handle)
            }
            return handles
        }
        for handle in handles { handle.cancel() }
        shutdown.fire()
    }

    private func timerLoop() {
        var timeout: Int32 = -1
        while true {
            wakeUp.wait(timeoutMs: timeout)
            if wakeUp.isClosed { return }
            let now = clock()
            let next = expireDue(now: now)
            timeout = next.map { Int32(clamping: max(0, $0 - now)) } ?? -1
        }
    }

    /// Times out every handler whose deadline is `now` or earlier (cancelling
    /// it); returns the next deadline. The timer thread calls it on waking;
    /// tests call it with a manual clock, so no test sleeps.
    @discardableResult
    func expireDue(now: Int64) -> Int64? {
        let (expired, next) = state.withLock { state -> ([any Cancellable], Int64?) in
            var expired: [any Cancellable] = []
            var next: Int64? = nil
            for id in state.running.keys {
                guard state.running[id]!.reason == nil, let deadline = state.running[id]!.deadline else { continue }
                if deadline <= now {
                    state.running[id]!.reason = .timeout
                    expired.append(state.running[id]!.handle)
                } else {
                    next = min(next ?? deadline, deadline)
                }
            }
            state.wakeAt = next
            return (expired, next)
        }
        for handle in expired { handle.cancel() }
        return next
    }
}

/// What the watchdog ends a handler through. An object rather than a
/// closure, so starting a handler allocates nothing for it.
protocol Cancellable: AnyObject, Sendable {
    func cancel()
}

/// Tells the watchdog which process a command handler started, for the
/// SIGUSR1 report.
struct ProcessWatch: Sendable {
    let watchdog: Watchdog
    let id: Int
    func started(_ pid: Int32) { watchdog.setPID(id, pid) }
}

/// The handle of a worker's task, for the watchdog to cancel it. The task
/// may be cancelled before its handle is stored; then storing it cancels it.
final class WorkerHandle: Cancellable {
    /// Guards the task handle and a cancel that came before it.
    private let state = Mutex<(task: Task<Consumer.WorkerEnd, Never>?, cancelled: Bool)>((nil, false))

    func set(_ task: Task<Consumer.WorkerEnd, Never>) {
        let cancel = state.withLock { state -> Bool in
            state.task = task
            return state.cancelled
        }
        if cancel { task.cancel() }
    }

    func cancel() {
        let task = state.withLock { state -> Task<Consumer.WorkerEnd, Never>? in
            state.cancelled = true
            return state.task
        }
        task?.cancel()
    }
}

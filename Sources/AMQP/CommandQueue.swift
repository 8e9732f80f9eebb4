import CWarrenSupport
import Glibc
import Synchronization

/// What Swift code asks of the I/O thread.
enum IOCommand: Sendable {
    case settle(channel: UInt16, tag: UInt64, Settlement)
    /// Runs on the I/O thread with the live connection; resumes its own continuation.
    case call(@Sendable (IOLoop) -> Void)
    /// Close channels then the connection; `done` runs when the thread is finished.
    case close(done: @Sendable () -> Void)

    /// Answers a command that can no longer run because the connection is gone.
    func abandon(_ error: AMQPError) {
        switch self {
        case .settle: break  // tags die with their channel; the broker redelivers
        case .call(let body): body(IOLoop.gone(error))
        case .close(let done): done()
        }
    }
}

/// Commands in, from any thread, to the one I/O thread.
///
/// A lock-protected array plus a self-pipe that wakes the I/O thread out of
/// poll(2). At most one wake-up byte is outstanding at a time: producers only
/// write when `signalled` flips from false to true, so a burst of acks costs
/// one write and one read, not one per ack.
final class CommandQueue: Sendable {
    private struct State {
        var commands: [IOCommand] = []
        var signalled = false
        var closed: AMQPError? = nil
    }

    /// Guards the pending commands, the wake-up flag and the closed state.
    private let state = Mutex(State())
    let wakeReadFD: Int32
    private let wakeWriteFD: Int32
    /// When the I/O loop last went round (ms, monotonic): its heartbeat for
    /// the systemd watchdog. A wedged loop stops moving it.
    let lastTurn = Atomic<Int64>(monotonicMilliseconds())
    /// The I/O thread (pthread_t), once its loop runs. A command it queues
    /// itself needs no wake-up: the loop looks again before it sleeps.
    private let owner = Atomic<UInt>(0)

    init() throws(AMQPError) {
        var fds: [Int32] = [0, 0]
        guard warren_wake_pipe(&fds) == 0 else {
            throw AMQPError(.connectFailed, "cannot create a wake-up pipe: \(String(cString: strerror(errno)))")
        }
        wakeReadFD = fds[0]
        wakeWriteFD = fds[1]
    }

    deinit {
        Glibc.close(wakeReadFD)
        Glibc.close(wakeWriteFD)
    }

    /// Called by the I/O thread before its loop starts.
    func claim() { owner.store(UInt(pthread_self()), ordering: .relaxed) }

    /// Whether the caller is the I/O thread that claimed this queue.
    var onOwnThread: Bool { pthread_equal(pthread_self(), pthread_t(owner.load(ordering: .relaxed))) != 0 }

    /// Queues a command; if the I/O thread is gone, answers it at once.
    func push(_ command: IOCommand) {
        let own = onOwnThread
        enum Result { case queued(wake: Bool), rejected(AMQPError) }
        let result: Result = state.withLock { state in
            if let closed = state.closed { return .rejected(closed) }
            state.commands.append(command)
            if state.signalled || own { return .queued(wake: false) }
            state.signalled = true
            return .queued(wake: true)
        }
        switch result {
        case .queued(wake: true):
            writeWakeByte()
        case .queued(wake: false):
            break
        case .rejected(let error):
            command.abandon(error)
        }
    }

    /// Wakes the I/O thread out of poll(2) without a command (work for its
    /// executor), unless a wake-up is already on its way.
    func wake() {
        let write = state.withLock { state -> Bool in
            defer { state.signalled = true }
            return !state.signalled && state.closed == nil
        }
        if write { writeWakeByte() }
    }

    private func writeWakeByte() {
        var byte: UInt8 = 1
        _ = write(wakeWriteFD, &byte, 1)
    }

    /// Commands waiting (I/O thread, before it sleeps).
    var hasCommands: Bool { state.withLock { !$0.commands.isEmpty } }

    /// Takes every queued command (I/O thread only); empties the wake-up
    /// pipe first when poll(2) said it had something.
    func takeAll(into commands: inout [IOCommand], drainWakeUp: Bool) {
        var scratch: (UInt64, UInt64) = (0, 0)
        if drainWakeUp {
            while read(wakeReadFD, &scratch, MemoryLayout.size(ofValue: scratch)) > 0 {}
        }
        state.withLock { state in
            swap(&commands, &state.commands)
            state.signalled = false
        }
    }

    /// Refuses every later command and returns those still queued.
    func close(because error: AMQPError) -> [IOCommand] {
        state.withLock { state in
            state.closed = error
            defer { state.commands = [] }
            return state.commands
        }
    }
}

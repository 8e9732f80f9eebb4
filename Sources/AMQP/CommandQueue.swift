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

/// Commands in, from any thread, to the one I/O thread: a `WakeableInbox`
/// whose read end the I/O loop polls, plus what only the I/O thread needs
/// (its heartbeat, whether a caller is that thread, why it closed).
final class CommandQueue: Sendable {
    private let inbox: WakeableInbox<IOCommand>
    /// Why the queue closed; set before the inbox closes, so a command the
    /// inbox refuses always finds it.
    private let closedBecause = Mutex<AMQPError?>(nil)
    var wakeReadFD: Int32 { inbox.readFD }
    /// When the I/O loop last went round (ms, monotonic): its heartbeat for
    /// the systemd watchdog. A wedged loop stops moving it.
    let lastTurn = Atomic<Int64>(monotonicMilliseconds())
    /// The I/O thread (pthread_t), once its loop runs. A command it queues
    /// itself needs no wake-up: the loop looks again before it sleeps.
    private let owner = Atomic<UInt>(0)

    init() throws(AMQPError) {
        do throws(WakePipeError) {
            inbox = try WakeableInbox()
        } catch {
            throw AMQPError(.connectFailed, "cannot create a wake-up pipe: \(error.description)")
        }
    }

    /// Called by the I/O thread before its loop starts.
    func claim() { owner.store(UInt(pthread_self()), ordering: .relaxed) }

    /// Whether the caller is the I/O thread that claimed this queue.
    var onOwnThread: Bool { pthread_equal(pthread_self(), pthread_t(owner.load(ordering: .relaxed))) != 0 }

    /// Queues a command; if the I/O thread is gone, answers it at once.
    func push(_ command: IOCommand) {
        guard !inbox.push(command, wake: !onOwnThread) else { return }
        command.abandon(closedBecause.withLock { $0 } ?? AMQPError(.closed, "the connection is closed"))
    }

    /// Wakes the I/O thread out of poll(2) without a command (work for its
    /// executor), unless a wake-up is already on its way.
    func wake() { inbox.wake() }

    /// Commands waiting (I/O thread, before it sleeps).
    var hasCommands: Bool { inbox.hasCommands }

    /// Takes every queued command (I/O thread only); empties the wake-up
    /// pipe first when poll(2) said it had something.
    func takeAll(into commands: inout [IOCommand], drainWakeUp: Bool) {
        inbox.takeAll(into: &commands, drainWakeUp: drainWakeUp)
    }

    /// Refuses every later command and returns those still queued.
    func close(because error: AMQPError) -> [IOCommand] {
        closedBecause.withLock { $0 = error }
        return inbox.close()
    }
}

import Synchronization

/// Where the I/O thread puts what happens on the wire.
struct EventSink: Sendable {
    /// Called on the I/O thread for each event, in order.
    var emit: @Sendable (AMQPEvent) -> Void
    /// Called once, after the last event, when the I/O thread is done.
    var finish: @Sendable () -> Void
    /// Called after each batch of frames read from the socket, so a consumer
    /// can hand over a burst of deliveries at once.
    var batchEnd: (@Sendable () -> Void)? = nil
}

/// Opens once; everyone waiting, and everyone who comes later, goes through.
final class Latch: Sendable {
    /// Guards the open flag and the waiting tasks.
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var isOpen: Bool { state.withLock { $0.open } }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

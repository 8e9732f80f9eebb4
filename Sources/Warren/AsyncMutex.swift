import DequeModule
import Synchronization

/// A first-come, first-served lock for async code. Retry and dead-letter
/// copies of one consumer are published one at a time, so that a
/// `basic.return` (unroutable) is charged to the right publish.
final class AsyncMutex: Sendable {
    private struct State {
        var locked = false
        var waiters = Deque<CheckedContinuation<Void, Never>>()
    }

    /// Guards the lock flag and the queue of waiting tasks.
    private let state = Mutex(State())

    func withLock<T: Sendable>(_ body: () async -> T) async -> T {
        await lock()
        defer { unlock() }
        return await body()
    }

    private func lock() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if !state.locked {
                    state.locked = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    private func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let next = state.waiters.popFirst() { return next }
            state.locked = false
            return nil
        }
        next?.resume()
    }
}

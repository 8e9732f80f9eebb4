import Synchronization

/// A result that one side delivers and one task awaits, where either may come
/// first and the waiter may give up: the first of `deliver` and cancellation
/// wins, the other is ignored. A checked continuation must be resumed exactly
/// once; this is what makes that hold when a confirm arrives after its waiter
/// gave up (timeout, shutdown, a stop during a connect).
public final class OneShot<Value: Sendable>: Sendable {
    private struct State {
        var waiter: CheckedContinuation<Value, Never>? = nil
        var value: Value? = nil
    }

    /// Guards the waiting task and the value delivered before it waited.
    private let state = Mutex(State())

    public init() {}

    /// Hands over the value; false if it was already settled (delivered, or given up).
    @discardableResult
    public func deliver(_ value: Value) -> Bool {
        let (waiter, taken) = state.withLock { state -> (CheckedContinuation<Value, Never>?, Bool) in
            guard state.value == nil else { return (nil, false) }
            state.value = value
            defer { state.waiter = nil }
            return (state.waiter, true)
        }
        waiter?.resume(returning: value)
        return taken
    }

    /// The value; if the task is cancelled first, `onCancel` instead.
    public func value(onCancel: Value) async -> Value {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value, Never>) in
                let ready = state.withLock { state -> Value? in
                    if let value = state.value { return value }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            deliver(onCancel)
        }
    }
}

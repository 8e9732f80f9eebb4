import Synchronization

/// Runs `body`, and if it has not finished after `limit`, calls `giveUp`,
/// which must make `body` end soon (drop the socket it waits on): a task
/// cannot be abandoned, only ended. Returns true if `body` finished in
/// time. For waits on a broker that may never answer, inside a stop whose
/// length is bounded.
///
/// `giveUp` runs only if `body` has not finished, decided under one lock
/// with `body`'s end, so a broker that answers at the last moment is never
/// dropped for it. It must not block.
func finishes(within limit: Duration, orElse giveUp: @escaping @Sendable () -> Void,
              _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let box = OutcomeBox()
    await withTaskGroup(of: Void.self) { group in
        group.addTask {
            await body()
            box.settle(true)
        }
        group.addTask {
            try? await Task.sleep(for: limit)
            box.settle(false, then: giveUp)
        }
        await group.next()
        group.cancelAll()
    }
    return box.finishedInTime
}

/// Which came first in `finishes`: the body's end (true) or the time (false).
private final class OutcomeBox: Sendable {
    /// Guards the verdict: nil until the body ends or the time is up.
    private let verdict = Mutex<Bool?>(nil)

    /// Records the first verdict; `then` runs (under the lock) only if this one was first.
    func settle(_ finished: Bool, then action: (() -> Void)? = nil) {
        verdict.withLock { verdict in
            guard verdict == nil else { return }
            verdict = finished
            action?()
        }
    }

    var finishedInTime: Bool { verdict.withLock { $0 ?? true } }
}

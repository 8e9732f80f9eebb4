import Synchronization

/// warren's own lack of descriptors, processes or memory to start
/// handlers, as one consumer meets it.
///
/// Such a message is not at fault: it waits a pause that grows while the
/// shortage lasts, then goes back to its queue with its attempt uncounted.
/// The pause is the backpressure (its worker holds it, so fewer spawns are
/// tried). A partial shortage lets some handlers start between failures,
/// so "recovered" cannot be told from one success: the operator is warned
/// at most once per `reportInterval`, with the count of requeues since.
final class ResourceShortage: Sendable {
    static let backoff = Backoff(minimum: .milliseconds(100), maximum: .seconds(5))
    static let reportIntervalMs: Int64 = 60_000

    struct Decision: Equatable {
        /// Log a warning now.
        var report: Bool
        /// Requeues not reported since the last warning (this one excluded).
        var unreported: Int
        /// Failures in a row, for the backoff (0 for the first).
        var streak: Int
    }

    private struct State {
        var lastReport: Int64? = nil
        var lastFailure: Int64? = nil
        var unreported = 0
        var streak = 0
    }

    /// Guards the report clock and counters, shared by a consumer's workers.
    private let state = Mutex(State())

    /// A start failed at `now` (monotonic milliseconds).
    func failed(now: Int64) -> Decision {
        state.withLock { state in
            // A failure long after the last one starts a new streak.
            if let last = state.lastFailure, now - last > 2 * Self.backoff.maximum.milliseconds { state.streak = 0 }
            state.lastFailure = now
            defer { state.streak += 1 }
            if let last = state.lastReport, now - last < Self.reportIntervalMs {
                state.unreported += 1
                return Decision(report: false, unreported: state.unreported, streak: state.streak)
            }
            state.lastReport = now
            defer { state.unreported = 0 }
            return Decision(report: true, unreported: state.unreported, streak: state.streak)
        }
    }
}

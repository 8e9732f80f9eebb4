/// Exponential backoff with jitter, for reconnects and re-subscribes.
///
/// Attempt 0 waits about `minimum`; each next one doubles, up to `maximum`.
/// The wait is drawn from the upper half of that value ("equal jitter"), so
/// many warrens cut off by one broker restart do not return in lockstep, and
/// none waits less than half the nominal delay.
public struct Backoff: Sendable, Equatable {
    public var minimum: Duration
    public var maximum: Duration

    public init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = max(minimum, maximum)
    }

    /// The nominal delay before attempt `attempt` (0-based).
    public func nominal(_ attempt: Int) -> Duration {
        Self.doubled(minimum, times: attempt, cappedAt: maximum)
    }

    /// `base` doubled `times` times (none when negative), never more than
    /// `cap`: the one exponential growth of every wait in warren
    /// (reconnects, re-subscribes, retry delay levels).
    public static func doubled(_ base: Duration, times: Int, cappedAt cap: Duration) -> Duration {
        let base = Double(max(base.milliseconds, 0)), cap = Double(max(cap.milliseconds, 0))
        // A zero base stays zero (zero times infinity would be NaN).
        guard base > 0 else { return .zero }
        let factor = times >= 60 ? Double.infinity : Double(UInt64(1) << UInt64(max(times, 0)))
        return .milliseconds(Int64(min(base * factor, cap)))
    }

    /// The delay to wait, `random` in 0..<1: between half and all of the nominal delay.
    public func delay(_ attempt: Int, random: Double) -> Duration {
        let nominal = Double(nominal(attempt).milliseconds)
        let fraction = 0.5 + 0.5 * min(max(random, 0), 1)
        return .milliseconds(Int64((nominal * fraction).rounded()))
    }
}

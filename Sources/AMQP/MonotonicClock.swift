import Glibc

/// warren's one clock for deadlines, liveness and durations: CLOCK_MONOTONIC,
/// read directly (one vDSO call; the hot path reads it once per message).
public func monotonicNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// The same clock, in milliseconds.
public func monotonicMilliseconds() -> Int64 { monotonicNanoseconds() / 1_000_000 }

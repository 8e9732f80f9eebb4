/// What to do with a message whose handler did not succeed, and how long
/// to wait before the next attempt.
///
/// Delays double from `retryDelay` up to `retryDelayMax`. Each distinct
/// delay is one delay queue (`<queue>.retry.<level>`, levels from 1), since
/// RabbitMQ expires messages only at the head of a queue: one queue per
/// delay means no message waits behind a longer one.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var retryDelay: Duration
    public var retryDelayMax: Duration

    public init(maxAttempts: Int, retryDelay: Duration, retryDelayMax: Duration) {
        self.maxAttempts = maxAttempts
        self.retryDelay = retryDelay
        self.retryDelayMax = retryDelayMax
    }

    public init(_ consumer: ConsumerSettings) {
        self.init(maxAttempts: consumer.maxAttempts, retryDelay: consumer.retryDelay, retryDelayMax: consumer.retryDelayMax)
    }

    /// How many delay queues: one per distinct delay, no more than the retries allowed.
    public var levels: Int {
        guard maxAttempts > 1 else { return 0 }
        var level = 1
        while level < maxAttempts - 1 && delay(level: level) < retryDelayMax { level += 1 }
        return level
    }

    /// `retryDelay * 2^(level-1)`, capped by `retryDelayMax`.
    public func delay(level: Int) -> Duration {
        precondition(level >= 1, "RetryPolicy: delay levels start at 1, got \(level)")
        return Backoff.doubled(retryDelay, times: level - 1, cappedAt: retryDelayMax)
    }

    /// The delay queue a message goes to after its attempt number `attempt` failed.
    public func level(afterFailedAttempt attempt: Int) -> Int {
        min(max(attempt, 1), levels)
    }

    public enum Decision: Sendable, Equatable {
        case ack
        /// Republish to delay queue `level`; the handler will see `nextAttempt`.
        case retry(level: Int, nextAttempt: Int)
        case deadLetter(reason: String)
    }

    public func decide(_ outcome: Outcome, attempt: Int) -> Decision {
        switch outcome {
        case .ack:
            return .ack
        case .deadLetter(let failure):
            return .deadLetter(reason: "rejected by the handler (\(failure.reason))")
        case .retry(let failure):
            if attempt >= maxAttempts || levels == 0 {
                return .deadLetter(reason: "failed \(attempt) of \(maxAttempts) attempts (last: \(failure.reason))")
            }
            return .retry(level: level(afterFailedAttempt: attempt), nextAttempt: attempt + 1)
        }
    }

    /// A delay shortened by up to 10% at random (`random` in 0..<1), so
    /// messages that failed together do not all come back together.
    public static func jittered(_ delay: Duration, random: Double) -> Duration {
        let ms = Double(delay.milliseconds)
        return .milliseconds(Int64((ms * (1 - 0.1 * min(max(random, 0), 1))).rounded()))
    }
}

extension Duration {
    /// Whole milliseconds (the unit of poll timeouts, TTLs and deadlines here).
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

public import AMQP

/// Whether a consumer's settings keep every message within the broker's
/// delivery acknowledgement timeout (`consumer_timeout`).
///
/// The broker counts from the moment it delivers a message, not from the
/// moment a handler starts on it. It sends up to `prefetch` messages ahead,
/// and warren runs `concurrency` of them at once: the last one waits in
/// warren's buffer while `ceil(prefetch / concurrency) - 1` handlers before
/// it run to their end in its slot, then runs itself. Each of those turns
/// lasts at most `timeout + kill_after` (the watchdog's SIGTERM, then
/// SIGKILL), plus the settling of its message (a retry or dead-letter copy
/// waits up to `SettleBounds.confirmTimeout` for its confirm, and a refused
/// copy pauses up to `SettleBounds.refusalPauseCap` before the requeue), plus,
/// in persistent mode, the `startup_timeout` of the worker that replaces a
/// killed one. If that worst case exceeds the broker's timeout, the broker
/// closes the channel while warren still holds the message: it is delivered
/// again while its handler may still run, and every other message on the
/// channel goes back too. So warren refuses such settings at start-up and
/// in `--check-config`, instead of finding out under load.
public struct AckTimeoutRule: Sendable, Equatable {
    /// Turns of one worker slot a delivered message may have to wait through, its own included.
    public let turns: Int
    /// The longest one turn takes; nil when a handler may run forever (`timeout = 0`).
    public let turn: Duration?
    /// What a turn adds to the handler's `timeout`.
    public let overhead: Duration

    /// Settling one message after its handler: a copy's confirm wait, then the pause after a refusal.
    public static var settleAllowance: Duration { SettleBounds.confirmTimeout + SettleBounds.refusalPauseCap }

    public init(_ consumer: ConsumerSettings, shutdown: ShutdownSettings) {
        let concurrency = max(1, consumer.concurrency)
        turns = (Int(consumer.prefetch) + concurrency - 1) / concurrency
        // A reply and an output message each wait for their confirm too,
        // before a failure's copy does.
        let outputs = (consumer.replies ? 1 : 0) + (consumer.outputExchange == nil ? 0 : 1)
        var overhead = shutdown.killAfter + Self.settleAllowance + SettleBounds.confirmTimeout * outputs
        if consumer.mode == .persistent {
            overhead += consumer.startupTimeout
            // A recycled worker gets end of file, then SIGTERM kill_after
            // later, then SIGKILL after another: its slot waits through both.
            if consumer.maxMessages > 0 || consumer.maxMemory != nil { overhead += shutdown.killAfter }
        }
        self.overhead = overhead
        turn = consumer.timeout.map { $0 + overhead }
    }

    /// How long warren may hold one message unacked at worst; nil: without bound.
    public var worstHold: Duration? { turn.map { $0 * turns } }

    /// What is wrong, in words that name the knob to turn; nil when the
    /// settings fit (or the broker has no timeout: `consumerTimeout` nil).
    public func problem(_ consumer: ConsumerSettings, consumerTimeout: Duration?) -> String? {
        guard let consumerTimeout else { return nil }
        let limit = "the broker's consumer_timeout (\(Self.format(consumerTimeout)), [broker] consumer_timeout)"
        guard let turn, let worstHold else {
            var fixes = "set timeout"
            if let longest = longestTimeout(within: consumerTimeout) {
                fixes += " (at most \(Self.format(longest)) with prefetch \(consumer.prefetch) and concurrency \(consumer.concurrency))"
            }
            return "timeout = 0 lets a handler run forever, but \(limit) closes the channel of a message unacked "
                + "that long, and the message is delivered again while its handler still runs: \(fixes); "
                + "or, if the broker's timeout is off, say so with consumer_timeout = 0 in [broker]"
        }
        guard worstHold > consumerTimeout else { return nil }
        var fixes: [String] = []
        let turnsThatFit = Int(Self.ms(consumerTimeout) / Self.ms(turn))
        if turnsThatFit >= 1 {
            fixes.append("lower prefetch to at most \(turnsThatFit * max(1, consumer.concurrency))")
        }
        if turns > 1 { fixes.append("raise concurrency") }
        if let longest = longestTimeout(within: consumerTimeout) {
            fixes.append("lower timeout to at most \(Self.format(longest))")
        }
        fixes.append("raise consumer_timeout on the broker (rabbitmq.conf) and here in [broker]")
        var parts = "timeout \(Self.format(turn - overhead)) + kill_after and settling \(Self.format(overhead))"
        if consumer.mode == .persistent { parts += " (a replacement worker's startup_timeout included)" }
        return "a message could stay unacked for \(turns) × (\(parts)) = \(Self.format(worstHold)), longer than \(limit): "
            + "the broker counts from the delivery, and with prefetch \(consumer.prefetch) and concurrency "
            + "\(consumer.concurrency) a message may wait in warren's buffer for \(turns - 1) handler(s) before its own; "
            + fixes.joined(separator: ", or ")
    }

    /// The longest `timeout` that fits, if any does.
    func longestTimeout(within consumerTimeout: Duration) -> Duration? {
        let perTurn = Self.ms(consumerTimeout) / Int64(turns) - Self.ms(overhead)
        // Whole seconds, rounded down: what an operator writes.
        let seconds = perTurn / 1000
        return seconds >= 1 ? .seconds(seconds) : nil
    }

    /// Whole milliseconds (config durations are whole milliseconds).
    static func ms(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    /// `1h5m`, `21m20s`, `2s`, `250ms`: as the config file writes durations.
    public static func format(_ duration: Duration) -> String {
        var ms = Self.ms(duration)
        guard ms > 0 else { return "0" }
        var out = ""
        for (unit, size) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1000)] where ms >= size {
            out += "\(ms / size)\(unit)"
            ms %= size
        }
        if ms > 0 { out += "\(ms)ms" }
        return out
    }
}

extension AckTimeoutRule {
    /// The broker closed a channel because a message on it stayed unacked
    /// past its `consumer_timeout`: `406 PRECONDITION_FAILED - delivery
    /// acknowledgement on channel N timed out`.
    public static func isBrokerTimeout(_ error: AMQPError) -> Bool {
        error.replyCode == 406 && error.reason.contains("delivery acknowledgement on channel")
            && error.reason.contains("timed out")
    }

    /// What the operator reads when it happened anyway: the broker's words,
    /// what became of the messages, and the knobs.
    public static func explain(_ error: AMQPError, _ consumer: ConsumerSettings, shutdown: ShutdownSettings) -> String {
        let rule = AckTimeoutRule(consumer, shutdown: shutdown)
        let hold = rule.worstHold.map { "up to \(format($0))" } ?? "without a bound (timeout = 0)"
        return "the broker closed the consumer's channel: a message stayed unacknowledged longer than the broker's "
            + "consumer_timeout (\(error.reason)). Every unacked message of that channel goes back to the queue and "
            + "is delivered again, also those whose handlers still run; subscribing again. These settings may hold "
            + "a message \(hold) (prefetch \(consumer.prefetch), concurrency \(consumer.concurrency), timeout "
            + "\(consumer.timeout.map(format) ?? "0"), kill_after \(format(shutdown.killAfter))): set [broker] "
            + "consumer_timeout to the broker's real value so warren checks them against it, lower prefetch or "
            + "timeout, or raise consumer_timeout in rabbitmq.conf"
    }
}

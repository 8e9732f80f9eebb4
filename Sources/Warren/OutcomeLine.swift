import AMQP
import Logging

/// What became of one message a worker took, as its log line says it
/// (`outcome=`). Every message a worker takes gets exactly one such line,
/// whichever way it is settled, so an operator can follow acks, retries and
/// dead letters without reading handler output.
///
/// | outcome | what happened | level |
/// | --- | --- | --- |
/// | `ack` | the handler succeeded; acked | info (`log_outcomes`) |
/// | `retry` | a copy waits in a delay queue (confirmed); original acked | warning |
/// | `dead_letter` | a copy is in the dead-letter queue (confirmed); original acked | error |
/// | `requeued` | back to the queue: stopped at shutdown, or its copy refused | warning, error |
/// | `requeued` | back to the queue: warren short of descriptors or processes | info (`log_outcomes`) |
/// | `released` | back to the queue before any handler saw it; no attempt spent | info (`log_outcomes`), notice |
/// | `dropped` | its connection or channel went first: the broker redelivers it | notice; info (`log_outcomes`) when not started |
///
/// Successes and releases are the common case, and a line each costs at
/// high rates: `log_outcomes = false` leaves them out. Failures were logged
/// before these lines existed and always are: turning the lines off must not
/// hide a dead letter.
enum SettledAs: String, Sendable {
    case ack
    case retry
    case deadLetter = "dead_letter"
    case requeued
    case released
    case dropped
}

extension Consumer {
    /// Bytes of a failure's reason shown in its outcome line (the copy's
    /// header keeps up to `Failure.reasonLimit`).
    static let reasonLogLimit = 512

    /// Logs the outcome line of `message`, and ends its span. `level`
    /// `.info` lines are left out with `log_outcomes = false` (and below
    /// the log level), without building anything. `failed`: whether the
    /// span says error; by default for a retry and a dead letter.
    func logOutcome(_ outcome: SettledAs, _ message: Message, level: Logger.Level = .info,
                    _ text: @autoclosure () -> Logger.Message, reason: String? = nil,
                    metadata extra: Logger.Metadata = [:], failed: Bool? = nil) {
        message.trace?.end(outcome, reason: reason, failed: failed ?? (outcome == .retry || outcome == .deadLetter))
        if level == .info && !outcomeLogging { return }
        logOutcome(outcome, id: message.logID, attempt: message.attempt, started: message.started, level: level, text(),
                   reason: reason, metadata: extra)
    }

    /// A delivery no worker started (its `Message` never made): `released`
    /// back to the queue, or `dropped` with its channel, at info.
    func logUnstarted(_ delivery: Delivery, as outcome: SettledAs = .released, _ text: @autoclosure () -> Logger.Message) {
        guard outcomeLogging else { return }
        logOutcome(outcome, id: Message.logID(of: delivery), attempt: Message.attempt(of: delivery), started: nil,
                   level: .info, text(), reason: nil)
    }

    /// A delivery a worker took whose connection or channel had gone
    /// meanwhile (a channel the broker closed leaves its deliveries in the
    /// buffer): never started, the broker redelivers it.
    func logGoneUnstarted(_ delivery: Delivery) {
        logUnstarted(delivery, as: .dropped, "message dropped unstarted: its connection or channel is gone, the broker redelivers it")
    }

    private func logOutcome(_ outcome: SettledAs, id: String, attempt: Int, started: Int64?, level: Logger.Level,
                            _ text: Logger.Message, reason: String?, metadata extra: Logger.Metadata = [:]) {
        var metadata: Logger.Metadata = ["message_id": .string(id), "attempt": .string(String(attempt)),
                                         "outcome": .string(outcome.rawValue)]
        if let started { metadata["duration_ms"] = .string(Self.milliseconds(since: started)) }
        if let reason { metadata["reason"] = .string(reason.capped(atBytes: Self.reasonLogLimit)) }
        if !extra.isEmpty { metadata.merge(extra) { $1 } }
        logger.log(level: level, text, metadata: metadata)
    }

    /// Milliseconds since a `monotonicNanoseconds()` reading, to the microsecond: `12.034`.
    static func milliseconds(since started: Int64) -> String {
        let micros = max(0, monotonicNanoseconds() - started) / 1000
        let fraction = micros % 1000
        return "\(micros / 1000)." + (fraction < 10 ? "00" : fraction < 100 ? "0" : "") + "\(fraction)"
    }
}

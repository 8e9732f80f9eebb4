import DequeModule

/// Publisher confirms for one channel in confirm mode: the broker numbers
/// publishes 1, 2, 3... and acks or nacks them, possibly several at once.
///
/// A mandatory publish that no queue takes comes back as `basic.return`,
/// then is *acked* all the same. The return names no sequence number, so it
/// is charged to the oldest unconfirmed publish: callers that need to know
/// (retry and dead-letter copies) keep one publish outstanding per channel.
struct ConfirmTracker {
    typealias Callback = @Sendable (Result<Void, AMQPError>) -> Void
    private var nextSequence: UInt64 = 1
    private var waiting = Deque<(sequence: UInt64, callback: Callback)>()
    private var returned: (sequence: UInt64, reason: String)? = nil

    /// A `basic.return` arrived: the oldest unconfirmed publish was not routed.
    mutating func returned(replyCode: UInt16, replyText: String) {
        guard let oldest = waiting.first else { return }
        returned = (oldest.sequence, "no queue took the message (\(replyCode) \(replyText))")
    }

    private mutating func outcome(of sequence: UInt64, _ result: Result<Void, AMQPError>) -> Result<Void, AMQPError> {
        guard let returned, returned.sequence == sequence else { return result }
        self.returned = nil
        return .failure(AMQPError(.publishRejected, returned.reason))
    }

    mutating func published(_ callback: @escaping Callback) {
        waiting.append((nextSequence, callback))
        nextSequence += 1
    }

    mutating func confirm(upTo sequence: UInt64, multiple: Bool, result: Result<Void, AMQPError>) {
        if multiple {
            while let first = waiting.first, first.sequence <= sequence {
                waiting.removeFirst()
                first.callback(outcome(of: first.sequence, result))
            }
        } else if let index = waiting.firstIndex(where: { $0.sequence == sequence }) {
            let entry = waiting.remove(at: index)
            entry.callback(outcome(of: entry.sequence, result))
        }
    }

    func failAll(_ error: AMQPError) {
        for entry in waiting { entry.callback(.failure(error)) }
    }
}

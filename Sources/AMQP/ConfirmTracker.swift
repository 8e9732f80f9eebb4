import DequeModule

/// Publisher confirms for one channel in confirm mode: the broker numbers
/// publishes 1, 2, 3... and acks or nacks them, possibly several at once.
struct ConfirmTracker {
    typealias Callback = @Sendable (Result<Void, AMQPError>) -> Void
    private var nextSequence: UInt64 = 1
    private var waiting = Deque<(sequence: UInt64, callback: Callback)>()

    mutating func published(_ callback: @escaping Callback) {
        waiting.append((nextSequence, callback))
        nextSequence += 1
    }

    mutating func confirm(upTo sequence: UInt64, multiple: Bool, result: Result<Void, AMQPError>) {
        if multiple {
            while let first = waiting.first, first.sequence <= sequence {
                waiting.removeFirst()
                first.callback(result)
            }
        } else if let index = waiting.firstIndex(where: { $0.sequence == sequence }) {
            let entry = waiting.remove(at: index)
            entry.callback(result)
        }
    }

    func failAll(_ error: AMQPError) {
        for entry in waiting { entry.callback(.failure(error)) }
    }
}

/// The consuming channel numbers of one connection.
///
/// A number that ever carried a consumer is never handed out again on the
/// same connection: a handler may still hold a delivery tag of that channel,
/// and its late ack must not land on a newer channel where the tag means
/// another message. A number whose set-up failed before `basic.consume`
/// received nothing, so it goes back to the pool once closed. Numbers in use
/// are never handed out: opening a channel that is open would silently share
/// it between two consumers.
///
/// When every number has carried a consumer (thousands of re-subscribes on
/// one connection), `allocate` returns nil and the caller makes a new
/// connection, where numbering starts afresh.
struct ChannelNumbers: Sendable, Equatable {
    /// The highest number handed out (the broker's channel_max allows more;
    /// this leaves room for other channels of the same connection).
    let limit: UInt16
    private var free: [UInt16]
    private var next: UInt16 = 1
    private(set) var inUse: Set<UInt16> = []

    init(limit: UInt16 = 1000) {
        self.limit = max(1, limit)
        self.free = []
    }

    /// A number no consumer ever used on this connection, or nil when none is left.
    mutating func allocate() -> UInt16? {
        let number: UInt16
        if let reusable = free.popLast() {
            number = reusable
        } else if next <= limit {
            number = next
            next += 1
        } else {
            return nil
        }
        inUse.insert(number)
        return number
    }

    /// The channel is closed and no delivery ever arrived on it: its number may serve again.
    mutating func releaseUnused(_ number: UInt16) {
        guard inUse.remove(number) != nil else { return }
        free.append(number)
    }

    /// The channel carried a consumer and is closed now: its number is spent on this connection.
    mutating func retire(_ number: UInt16) {
        inUse.remove(number)
    }
}

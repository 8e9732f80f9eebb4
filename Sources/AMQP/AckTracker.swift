import DequeModule

/// Settlements for one channel, coalesced before they go on the wire.
///
/// `basic.ack` with `multiple=true` settles every outstanding tag up to the
/// one named, so it is only sent over a run of tags at the front of the
/// channel's unsettled list that have *all* finished. A tag whose handler is
/// still running is never covered. Acks behind a running tag go out one by
/// one, so a long handler never holds back the acks of others.
struct AckTracker {
    enum WireSettlement: Equatable {
        case ack(tag: UInt64, multiple: Bool)
        case nack(tag: UInt64, requeue: Bool)
    }

    /// Delivered and not yet settled on the wire, in delivery order.
    private var unsettled = Deque<UInt64>()
    /// Acked by their handler, not yet sent.
    private var acksReady = Set<UInt64>()
    /// Nacks not yet sent.
    private var nacksReady: [(tag: UInt64, requeue: Bool)] = []
    /// Already sent one by one, still in `unsettled` until they reach its front.
    private var sentAlone = Set<UInt64>()

    /// Delivered tags the application has not settled yet.
    var outstanding: Int { unsettled.count - sentAlone.count - acksReady.count - nacksReady.count }

    mutating func delivered(_ tag: UInt64) { unsettled.append(tag) }

    mutating func settle(_ tag: UInt64, _ settlement: Settlement) {
        switch settlement {
        case .ack: acksReady.insert(tag)
        case .nack(let requeue): nacksReady.append((tag, requeue))
        }
    }

    var hasPending: Bool { !acksReady.isEmpty || !nacksReady.isEmpty }

    /// What to send now, in order.
    mutating func flush() -> [WireSettlement] {
        guard hasPending else { return [] }
        var out: [WireSettlement] = []
        for nack in nacksReady {
            out.append(.nack(tag: nack.tag, requeue: nack.requeue))
            sentAlone.insert(nack.tag)
        }
        nacksReady.removeAll(keepingCapacity: true)

        var last: UInt64? = nil
        var covered = 0
        while let front = unsettled.first {
            if acksReady.remove(front) != nil {
                last = front
                covered += 1
            } else if sentAlone.remove(front) == nil {
                break
            }
            unsettled.removeFirst()
        }
        if let last { out.append(.ack(tag: last, multiple: covered > 1)) }

        for tag in acksReady.sorted() {
            out.append(.ack(tag: tag, multiple: false))
            sentAlone.insert(tag)
        }
        acksReady.removeAll(keepingCapacity: true)
        // Settled tags now at the front need no further wire traffic.
        while let front = unsettled.first, sentAlone.remove(front) != nil { unsettled.removeFirst() }
        return out
    }
}

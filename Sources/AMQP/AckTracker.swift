import DequeModule

/// Settlements for one channel, coalesced before they go on the wire.
///
/// `basic.ack` with `multiple=true` settles every outstanding tag up to the
/// one named, so it is only sent over a run of tags at the front of the
/// channel's unsettled list that have *all* finished. A tag whose handler is
/// still running is never covered. Acks behind a running tag go out one by
/// one, so a long handler never holds back the acks of others.
///
/// The unsettled tags are kept in delivery order with their state, so a
/// settlement finds its tag by arithmetic (a channel's tags count up by
/// one) instead of hashing: this runs for every message on the I/O thread.
struct AckTracker {
    enum WireSettlement: Equatable {
        case ack(tag: UInt64, multiple: Bool)
        case nack(tag: UInt64, requeue: Bool)
    }

    private enum State: Equatable {
        /// Delivered; its handler has not settled it.
        case running
        /// Acked by its handler, not yet on the wire.
        case acked
        /// On the wire already (a nack, or an ack sent alone); leaves the
        /// list once it reaches the front.
        case sent
    }

    private struct Entry {
        var tag: UInt64
        var state: State
    }

    /// Delivered and not yet settled on the wire, in delivery order.
    private var unsettled = Deque<Entry>()
    /// Tags acked since the last flush.
    private var acked: [UInt64] = []
    /// Nacks not yet sent.
    private var nacks: [(tag: UInt64, requeue: Bool)] = []

    /// Delivered tags the application has not settled yet.
    private(set) var outstanding = 0

    /// The last tag delivered on this channel (they count up from 1).
    private var lastDelivered: UInt64 = 0

    /// Returns how many tags before this one never arrived. A `multiple`
    /// ack would settle those unseen messages as done, so each is nacked
    /// (requeued) at the next flush instead, ahead of any ack; the list
    /// stays consecutive. Tags are never skipped by the broker: only a
    /// frame lost on the client side makes a gap.
    @discardableResult
    mutating func delivered(_ tag: UInt64) -> Int {
        var skipped = 0
        if tag > lastDelivered + 1 {
            for missing in (lastDelivered + 1)..<tag {
                unsettled.append(Entry(tag: missing, state: .sent))
                nacks.append((missing, true))
                skipped += 1
            }
        }
        lastDelivered = max(lastDelivered, tag)
        unsettled.append(Entry(tag: tag, state: .running))
        outstanding += 1
        return skipped
    }

    /// Settles a delivered tag. A tag that is not (or no longer) waiting
    /// for its outcome is ignored: sending it would make the broker close
    /// the channel.
    mutating func settle(_ tag: UInt64, _ settlement: Settlement) {
        guard let index = index(of: tag), unsettled[index].state == .running else { return }
        outstanding -= 1
        switch settlement {
        case .ack:
            unsettled[index].state = .acked
            acked.append(tag)
        case .nack(let requeue):
            unsettled[index].state = .sent
            nacks.append((tag, requeue))
        }
    }

    var hasPending: Bool { !acked.isEmpty || !nacks.isEmpty }

    /// Whether a busy loop sends now: a nack waits for nothing; acks wait
    /// until `batch` of them gathered.
    func isDue(batch: Int) -> Bool { !nacks.isEmpty || acked.count >= batch }

    /// What to send now, in order.
    mutating func flush() -> [WireSettlement] {
        guard hasPending else { return [] }
        var out: [WireSettlement] = nacks.map { .nack(tag: $0.tag, requeue: $0.requeue) }
        nacks.removeAll(keepingCapacity: true)

        var last: UInt64? = nil
        var covered = 0
        while let front = unsettled.first, front.state != .running {
            if front.state == .acked {
                last = front.tag
                covered += 1
            }
            unsettled.removeFirst()
        }
        if let last { out.append(.ack(tag: last, multiple: covered > 1)) }

        // Behind a running tag: one by one, in tag order. Usually the run
        // above covered every one of them, and there is nothing to sort.
        if covered == acked.count {
            acked.removeAll(keepingCapacity: true)
            return out
        }
        acked.sort()
        for tag in acked {
            guard let index = index(of: tag), unsettled[index].state == .acked else { continue }
            out.append(.ack(tag: tag, multiple: false))
            unsettled[index].state = .sent
        }
        acked.removeAll(keepingCapacity: true)
        return out
    }

    /// Where `tag` is in the list: its distance from the front when the
    /// tags are consecutive (always, on one channel), else a binary search.
    private func index(of tag: UInt64) -> Int? {
        guard let first = unsettled.first?.tag, tag >= first else { return nil }
        let guess = tag - first
        if guess < UInt64(unsettled.count), unsettled[Int(guess)].tag == tag { return Int(guess) }
        var low = 0
        var high = unsettled.count - 1
        while low <= high {
            let middle = (low + high) / 2
            let found = unsettled[middle].tag
            if found == tag { return middle }
            if found < tag { low = middle + 1 } else { high = middle - 1 }
        }
        return nil
    }
}

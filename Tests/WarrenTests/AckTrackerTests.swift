import Testing
@testable import AMQP

@Suite struct AckTrackerTests {
    @Test func contiguousFinishedTagsAreCoalescedIntoOneMultipleAck() {
        var tracker = AckTracker()
        for tag in 1...5 as ClosedRange<UInt64> { tracker.delivered(tag) }
        for tag in 1...3 as ClosedRange<UInt64> { tracker.settle(tag, .ack) }
        #expect(tracker.flush() == [.ack(tag: 3, multiple: true)])
        #expect(tracker.outstanding == 2)
    }

    /// A busy loop sends acks once half a prefetch window gathered (one
    /// `multiple` ack for the lot); a nack never waits.
    @Test func acksAreDueOnceABatchGatheredAndANackAtOnce() {
        var tracker = AckTracker()
        for tag in 1...6 as ClosedRange<UInt64> { tracker.delivered(tag) }
        tracker.settle(1, .ack)
        tracker.settle(2, .ack)
        #expect(!tracker.isDue(batch: 3))
        tracker.settle(3, .ack)
        #expect(tracker.isDue(batch: 3))
        #expect(tracker.flush() == [.ack(tag: 3, multiple: true)])
        #expect(!tracker.isDue(batch: 3))
        tracker.settle(4, .nack(requeue: true))
        #expect(tracker.isDue(batch: 3))
        #expect(tracker.flush() == [.nack(tag: 4, requeue: true)])
    }

    @Test func aSingleFinishedTagIsAckedAlone() {
        var tracker = AckTracker()
        tracker.delivered(1)
        tracker.settle(1, .ack)
        #expect(tracker.flush() == [.ack(tag: 1, multiple: false)])
        #expect(tracker.outstanding == 0)
    }

    @Test func aRunningHandlerIsNeverCoveredByAMultipleAck() {
        var tracker = AckTracker()
        for tag in 1...4 as ClosedRange<UInt64> { tracker.delivered(tag) }
        // Tag 2 is still running.
        tracker.settle(1, .ack)
        tracker.settle(3, .ack)
        tracker.settle(4, .ack)
        let wire = tracker.flush()
        #expect(wire == [.ack(tag: 1, multiple: false), .ack(tag: 3, multiple: false), .ack(tag: 4, multiple: false)])
        #expect(tracker.outstanding == 1)
        tracker.settle(2, .ack)
        #expect(tracker.flush() == [.ack(tag: 2, multiple: false)])
        #expect(tracker.outstanding == 0)
    }

    @Test func tagsSettledAloneEarlierLetALaterRunCoverThem() {
        var tracker = AckTracker()
        for tag in 1...4 as ClosedRange<UInt64> { tracker.delivered(tag) }
        tracker.settle(2, .nack(requeue: true))
        #expect(tracker.flush() == [.nack(tag: 2, requeue: true)])
        tracker.settle(1, .ack)
        tracker.settle(3, .ack)
        // 1, (2 already nacked), 3 -> one multiple ack up to 3; 4 still running.
        #expect(tracker.flush() == [.ack(tag: 3, multiple: true)])
        #expect(tracker.outstanding == 1)
    }

    @Test func nacksGoOutAloneAndAtOnce() {
        var tracker = AckTracker()
        for tag in 1...3 as ClosedRange<UInt64> { tracker.delivered(tag) }
        tracker.settle(3, .nack(requeue: true))
        tracker.settle(1, .nack(requeue: false))
        #expect(tracker.flush() == [.nack(tag: 3, requeue: true), .nack(tag: 1, requeue: false)])
        #expect(tracker.outstanding == 1)
    }

    @Test func nothingPendingSendsNothing() {
        var tracker = AckTracker()
        tracker.delivered(1)
        #expect(tracker.flush() == [])
    }

    @Test func aSecondOutcomeForATagOrAnUnknownTagNeverReachesTheWire() {
        var tracker = AckTracker()
        for tag in 1...2 as ClosedRange<UInt64> { tracker.delivered(tag) }
        tracker.settle(1, .ack)
        tracker.settle(1, .nack(requeue: true))
        tracker.settle(9, .ack)
        #expect(tracker.flush() == [.ack(tag: 1, multiple: false)])
        tracker.settle(1, .ack)
        #expect(tracker.flush() == [])
        #expect(tracker.outstanding == 1)
    }

    /// A tag that never arrived (rabbitmq-c can drop another channel's
    /// frames while it assembles a message) must not be acked by a
    /// `multiple` ack over it: it is requeued before any ack goes out.
    @Test func tagsThatNeverArrivedAreRequeuedNeverCoveredByAMultipleAck() {
        var tracker = AckTracker()
        let skipped = ([3, 4, 7, 8, 20] as [UInt64]).map { tracker.delivered($0) }
        #expect(skipped == [2, 0, 2, 0, 11])
        tracker.settle(8, .ack)
        tracker.settle(20, .ack)
        let missing: [UInt64] = [1, 2, 5, 6] + Array(9...19)
        #expect(tracker.flush() == missing.map { .nack(tag: $0, requeue: true) }
                + [.ack(tag: 8, multiple: false), .ack(tag: 20, multiple: false)])
        tracker.settle(3, .ack)
        tracker.settle(7, .ack)
        tracker.settle(4, .ack)
        // Covers 5 and 6 too, which the broker has back already.
        #expect(tracker.flush() == [.ack(tag: 7, multiple: true)])
        #expect(tracker.outstanding == 0)
    }
}

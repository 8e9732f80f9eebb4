import AMQP
import Testing
@testable import Warren

/// Which consumer consumes on which channel, and what each failure means,
/// as data: no broker.
@Suite struct SubscriptionsTests {
    let refused = AMQPError(.channelClosedByBroker, "NOT_FOUND - no queue 'q'", replyCode: 404)
    let invalid = AMQPError(.invalidArgument, "queue 'q' is missing and declare = false")
    let lost = AMQPError(.connectionLost, "socket closed")
    let inequivalent = AMQPError(.inequivalentArguments, "the queue 'q' exists with x-max-priority = 5", replyCode: 406)

    func connected(consumers: Int = 2, generation: Int = 1, limit: UInt16 = 1000) -> Subscriptions {
        var subscriptions = Subscriptions(consumers: consumers, channelLimit: limit)
        subscriptions.connected(generation: generation)
        return subscriptions
    }

    @Test func runningOnlyOnceEveryConsumerConsumes() {
        var s = connected()
        let a = s.allocate()!, b = s.allocate()!
        #expect(a != b)
        s.consumes(0, on: a)
        #expect(!s.allConsume)
        s.consumes(1, on: b)
        #expect(s.allConsume)
        #expect(s.subscribed == [.init(consumer: 0, channel: a), .init(consumer: 1, channel: b)], "cancelled in consumer order at a drain")
    }

    @Test func aHeldConsumerCountsAsFineIsNeverResubscribedAndConsumesAgainOnItsOwnChannel() {
        var s = connected()
        let a = s.allocate()!, b = s.allocate()!
        s.consumes(0, on: a)
        s.consumes(1, on: b)
        let heldChannel = s.hold(0, for: .workersFailing)
        #expect(heldChannel == a, "its consumer is cancelled there; the channel stays open")
        #expect(s.allConsume, "held on purpose: still running")
        #expect(s.subscribed == [.init(consumer: 1, channel: b)], "a drain has nothing to cancel for it")
        #expect(!s.wants(Resubscribe(consumer: 0, attempt: 1, generation: 1)), "no re-subscribe while held")
        let again = s.hold(0, for: .workersFailing)
        #expect(again == nil, "held twice: nothing more to cancel")
        let first = s.release(0, from: .workersFailing), second = s.release(0, from: .workersFailing)
        #expect(first == .consume(a), "released: consumes again on the same channel, no number spent")
        #expect(second == .nothing)
    }

    @Test func aConsumerHeldForSeveralReasonsConsumesAgainOnlyOnceTheLastIsGone() {
        var s = connected()
        let a = s.allocate()!
        s.consumes(0, on: a)
        #expect(s.hold(0, for: .paused) == a, "the first reason cancels")
        #expect(s.hold(0, for: .breakerOpen) == nil, "a second reason has nothing more to cancel")
        #expect(s.release(0, from: .workersFailing) == .nothing, "a reason it was not held for changes nothing")
        #expect(s.release(0, from: .breakerOpen) == .nothing, "still paused: the breaker closing does not resume it")
        #expect(s.held == [0])
        #expect(s.release(0, from: .paused) == .consume(a), "the last reason gone: consumes again on its channel")
        #expect(s.held.isEmpty)
        #expect(s.release(0, from: .paused) == .nothing, "resumed twice: nothing more")
    }

    @Test func aConsumerHeldAcrossAReconnectIsSetUpButNotConsumedAndABrokerCloseOfItsChannelIsNoResubscribe() {
        var s = connected()
        let a = s.allocate()!
        s.consumes(0, on: a)
        _ = s.hold(0, for: .workersFailing)
        s.connected(generation: 2)
        #expect(s.held == [0], "held across connections")
        let c = s.allocate()!
        s.keep(0, c)
        #expect(s.consumerGone(on: c) == nil, "the broker closed its channel: no re-subscribe while held")
        #expect(s.release(0, from: .workersFailing) == .subscribe, "no channel left: subscribe afresh")
    }

    @Test func aCancelledConsumerSubscribesAgainOnAFreshChannelNumber() {
        var s = connected()
        let a = s.allocate()!
        s.consumes(0, on: a)
        #expect(s.consumerGone(on: a) == Resubscribe(consumer: 0, attempt: 0, generation: 1))
        #expect(!s.allConsume)
        #expect(s.allocate() != a, "a late ack of the old channel's tags must not land on a newer channel")
    }

    @Test func aChannelNobodyConsumesOnIsNotAConsumerGone() {
        var s = connected()
        #expect(s.consumerGone(on: 7) == nil)
    }

    @Test func aChannelWhoseSetUpFailedIsReusedOnceClosed() {
        var s = connected()
        let a = s.allocate()!
        s.releaseUnused(a)
        #expect(s.allocate() == a)
    }

    @Test func aRefusedTopologyAtTheFirstStartCannotStart() {
        let s = connected()
        #expect(s.setUpFailed(consumer: 0, invalid, firstStart: true, failFast: false) == .cannotStart)
        #expect(s.setUpFailed(consumer: 0, invalid, firstStart: false, failFast: false)
            == .resubscribe(Resubscribe(consumer: 0, attempt: 1, generation: 1)))
        #expect(s.setUpFailed(consumer: 0, inequivalent, firstStart: true, failFast: false) == .cannotStart)
        #expect(s.setUpFailed(consumer: 0, inequivalent, firstStart: false, failFast: false)
            == .resubscribe(Resubscribe(consumer: 0, attempt: 1, generation: 1)))
    }

    @Test func aReloadsNewConsumersCannotStartOnAnyRefusal() {
        let s = connected()
        #expect(s.setUpFailed(consumer: 1, refused, firstStart: true, failFast: true) == .cannotStart)
        #expect(s.setUpFailed(consumer: 1, refused, firstStart: true, failFast: false)
            == .resubscribe(Resubscribe(consumer: 1, attempt: 1, generation: 1)))
    }

    @Test func aLostConnectionDuringSetUpReconnects() {
        let s = connected()
        #expect(s.setUpFailed(consumer: 0, lost, firstStart: true, failFast: true) == .reconnect)
        #expect(s.setUpFailed(consumer: 0, lost, firstStart: false, failFast: false) == .reconnect)
    }

    @Test func aFailedResubscribeRetriesWithTheNextAttemptOrReconnects() {
        let s = connected(generation: 3)
        #expect(s.resubscribeFailed(consumer: 1, attempt: 4, refused) == .resubscribe(Resubscribe(consumer: 1, attempt: 5, generation: 3)))
        #expect(s.resubscribeFailed(consumer: 1, attempt: 4, lost) == .reconnect)
    }

    @Test func resubscribesOfAnOldConnectionOrOfAConsumingConsumerAreDropped() {
        var s = connected(generation: 2)
        let a = s.allocate()!
        s.consumes(0, on: a)
        #expect(!s.wants(Resubscribe(consumer: 1, attempt: 0, generation: 1)), "an older connection's")
        #expect(!s.wants(Resubscribe(consumer: 0, attempt: 0, generation: 2)), "consumer 0 consumes")
        #expect(s.wants(Resubscribe(consumer: 1, attempt: 0, generation: 2)))
    }

    @Test func aNewConnectionStartsNumberingAfreshWithNobodyConsuming() {
        var s = connected(limit: 2)
        s.consumes(0, on: s.allocate()!)
        s.consumes(1, on: s.allocate()!)
        #expect(s.allocate() == nil, "numbers used up: a new connection is needed")
        s.lost()
        #expect(!s.allConsume)
        s.connected(generation: 2)
        #expect(s.generation == 2)
        #expect(s.allocate() == 1)
    }
}

import Testing
@testable import Warren

/// The circuit breaker, event by event on a manual clock (milliseconds):
/// when it opens, which failures are not burned, when one message comes
/// through, and what closes it.
@Suite struct CircuitBreakerTests {
    /// Three failures in a row trip it; 1 s, doubling up to 4 s.
    func breaker() -> CircuitBreaker {
        CircuitBreaker(threshold: 3, retryDelay: .seconds(1), retryDelayMax: .seconds(4))
    }

    /// Trips `b` at `now` and returns the verdict on the attempt that tripped it.
    func trip(_ b: inout CircuitBreaker, at now: Int64) -> CircuitBreaker.Verdict {
        #expect(b.failed(.counted, now: now) == (.settle, .none))
        #expect(b.failed(.counted, now: now) == (.settle, .none))
        let (verdict, change) = b.failed(.counted, now: now)
        #expect(change == .opened(until: now + 1000, delay: .seconds(1)))
        return verdict
    }

    @Test func failuresBelowTheThresholdAreOrdinaryAttemptsAndASuccessStartsTheCountAgain() {
        var b = breaker()
        #expect(b.admit() == (.counted, .none))
        #expect(b.failed(.counted, now: 0) == (.settle, .none))
        #expect(b.failed(.counted, now: 0) == (.settle, .none))
        #expect(b.succeeded() == .none)
        #expect(b.failed(.counted, now: 0) == (.settle, .none))
        #expect(b.failed(.counted, now: 0) == (.settle, .none))
        #expect(b.isClosed, "two in a row since the success: not three")
        #expect(!b.holds)
    }

    @Test func theAttemptThatTripsItGoesBackUncounted() {
        var b = breaker()
        #expect(trip(&b, at: 500) == .uncounted)
        #expect(b.holds)
        #expect(b.reopensAt == 1500)
    }

    @Test func whileOpenDeliveriesAreReleasedAndFailuresOfMessagesStartedBeforeAreNotBurned() {
        var b = breaker()
        _ = trip(&b, at: 0)
        #expect(b.admit() == (nil, .none), "a delivery that arrived before the cancel: released unstarted")
        #expect(b.failed(.counted, now: 10) == (.uncounted, .none), "a handler that started before the trip")
        #expect(b.failed(.counted, now: 20) == (.uncounted, .none))
        #expect(b.reopensAt == 1000, "failures while open do not push the time")
    }

    @Test func theTimeLetsOneMessageThroughAndAnEarlierTimerDoesNothing() {
        var b = breaker()
        _ = trip(&b, at: 0)
        #expect(b.due(now: 999) == .none, "too early")
        #expect(b.holds)
        #expect(b.due(now: 1000) == .halfOpened)
        #expect(!b.holds, "consuming again, for one message")
        #expect(b.admit() == (.probe, .probing))
        #expect(b.holds, "the one message runs: consuming stops again")
        #expect(b.admit() == (nil, .none), "a second delivery goes back")
        #expect(b.due(now: 5000) == .none, "no timer opens a probing breaker")
    }

    @Test func theMessageLetThroughSucceedingClosesIt() {
        var b = breaker()
        _ = trip(&b, at: 0)
        _ = b.due(now: 1000)
        _ = b.admit()
        #expect(b.succeeded() == .closed)
        #expect(b.isClosed)
        #expect(b.admit() == (.counted, .none))
        #expect(b.failed(.counted, now: 2000) == (.settle, .none), "the count starts again from zero")
    }

    @Test func theMessageLetThroughFailingReopensItForTwiceAsLongUpToTheMaximumWithoutCountingItsAttempt() {
        var b = breaker()
        _ = trip(&b, at: 0)
        var now: Int64 = 1000
        for delay in [2, 4, 4] as [Int64] {
            #expect(b.due(now: now) == .halfOpened)
            #expect(b.admit() == (.probe, .probing))
            let (verdict, change) = b.failed(.probe, now: now)
            #expect(verdict == .uncounted, "nothing is dead-lettered because the breaker tripped")
            #expect(change == .opened(until: now + delay * 1000, delay: .seconds(delay)))
            now += delay * 1000
        }
    }

    @Test func aProbeThatNeverRanLetsTheNextOneThrough() {
        var b = breaker()
        _ = trip(&b, at: 0)
        _ = b.due(now: 1000)
        _ = b.admit()
        #expect(b.abandoned(.counted) == .none, "not the probe: nothing changes")
        #expect(b.abandoned(.probe) == .halfOpened)
        #expect(b.admit() == (.probe, .probing))
    }

    @Test func aSuccessOfAMessageStartedBeforeTheTripClosesIt() {
        var b = breaker()
        _ = trip(&b, at: 0)
        #expect(b.succeeded() == .closed)
        #expect(!b.holds)
        #expect(b.due(now: 1000) == .none, "its timer finds it closed")
    }

    @Test func aFailureOfAMessageStartedBeforeWhileTheProbeRunsIsNotBurnedAndLeavesTheProbeAlone() {
        var b = breaker()
        _ = trip(&b, at: 0)
        _ = b.due(now: 1000)
        #expect(b.failed(.counted, now: 1001) == (.uncounted, .none), "half open: not burned either")
        _ = b.admit()
        #expect(b.failed(.counted, now: 1002) == (.uncounted, .none))
        #expect(b.holds, "still probing")
        #expect(b.succeeded() == .closed)
    }

    @Test func aThresholdOfOneTripsOnTheFirstFailure() {
        var b = CircuitBreaker(threshold: 1, retryDelay: .milliseconds(250), retryDelayMax: .seconds(1))
        #expect(b.failed(.counted, now: 0) == (.uncounted, .opened(until: 250, delay: .milliseconds(250))))
    }
}

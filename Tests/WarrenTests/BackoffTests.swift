import Testing
import Warren

@Suite struct BackoffTests {
    let backoff = Backoff(minimum: .seconds(1), maximum: .seconds(30))

    @Test func nominalDelayDoublesFromTheMinimumToTheMaximum() {
        #expect((0...6).map { backoff.nominal($0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30)])
        #expect(backoff.nominal(10_000) == .seconds(30))
    }

    @Test func jitterKeepsTheDelayBetweenHalfAndAllOfTheNominal() {
        #expect(backoff.delay(3, random: 0) == .seconds(4))
        #expect(backoff.delay(3, random: 0.5) == .seconds(6))
        #expect(backoff.delay(3, random: 0.999_999) == .seconds(8))
    }

    @Test func aMaximumBelowTheMinimumIsRaisedToIt() {
        #expect(Backoff(minimum: .seconds(5), maximum: .seconds(1)).nominal(4) == .seconds(5))
    }

    /// One doubling serves reconnects and retry delay levels alike.
    @Test func doublingIsCappedNeverOverflowsAndAppliesNoCapRaise() {
        #expect((0...3).map { Backoff.doubled(.milliseconds(250), times: $0, cappedAt: .seconds(1)) }
                == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(1)])
        #expect(Backoff.doubled(.seconds(1), times: 10_000, cappedAt: .seconds(7)) == .seconds(7))
        #expect(Backoff.doubled(.seconds(1), times: -3, cappedAt: .seconds(7)) == .seconds(1))
        // A base under a millisecond never traps, however many attempts.
        #expect(Backoff.doubled(.zero, times: 10_000, cappedAt: .seconds(7)) == .zero)
        #expect(Backoff.doubled(.microseconds(500), times: 100, cappedAt: .seconds(7)) == .zero)
        // Unlike `Backoff`, a cap below the base wins (a retry policy's max is a max).
        #expect(Backoff.doubled(.seconds(5), times: 0, cappedAt: .seconds(2)) == .seconds(2))
        #expect(RetryPolicy(maxAttempts: 9, retryDelay: .seconds(1), retryDelayMax: .seconds(5)).delay(level: 4)
                == Backoff.doubled(.seconds(1), times: 3, cappedAt: .seconds(5)))
    }
}

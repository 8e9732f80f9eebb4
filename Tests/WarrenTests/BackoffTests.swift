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
}

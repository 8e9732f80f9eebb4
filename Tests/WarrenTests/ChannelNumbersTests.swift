import Testing
@testable import Warren

/// Consuming channel numbers of one connection.
@Suite struct ChannelNumbersTests {
    @Test func aNumberInUseIsNeverHandedOutTwice() {
        var numbers = ChannelNumbers(limit: 3)
        let taken = [numbers.allocate(), numbers.allocate(), numbers.allocate()]
        #expect(taken == [1, 2, 3])
        #expect(numbers.allocate() == nil, "every number is in use")
    }

    @Test func aNumberWhoseSetUpFailedServesAgain() {
        var numbers = ChannelNumbers(limit: 2)
        let healthy = numbers.allocate()
        for _ in 0..<5000 {
            guard let failed = numbers.allocate() else { Issue.record("ran out after failed set-ups"); return }
            #expect(failed != healthy)
            numbers.releaseUnused(failed)
        }
    }

    @Test func aNumberThatCarriedAConsumerIsSpentForThisConnection() {
        var numbers = ChannelNumbers(limit: 2)
        let first = numbers.allocate()!
        numbers.retire(first)
        #expect(numbers.allocate() == 2)
        #expect(numbers.allocate() == nil, "1 carried deliveries whose late acks must not reach a new channel")
    }

    @Test func releasingANumberNotInUseChangesNothing() {
        var numbers = ChannelNumbers(limit: 1)
        numbers.releaseUnused(1)
        #expect(numbers.allocate() == 1)
        #expect(numbers.allocate() == nil)
    }
}

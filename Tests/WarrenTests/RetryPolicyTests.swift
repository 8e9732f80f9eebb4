import Testing
@testable import Warren

@Suite struct RetryPolicyTests {
    let policy = RetryPolicy(maxAttempts: 5, retryDelay: .seconds(1), retryDelayMax: .seconds(5))

    @Test func delaysDoubleUntilTheCap() {
        #expect((1...5).map { policy.delay(level: $0) } == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
    }

    @Test func oneDelayQueuePerDistinctDelayAndNoMoreThanTheRetries() {
        #expect(policy.levels == 4)  // 1s 2s 4s 5s
        #expect(RetryPolicy(maxAttempts: 3, retryDelay: .seconds(1), retryDelayMax: .seconds(60)).levels == 2)
        #expect(RetryPolicy(maxAttempts: 1, retryDelay: .seconds(1), retryDelayMax: .seconds(60)).levels == 0)
        #expect(RetryPolicy(maxAttempts: 1_000_000, retryDelay: .milliseconds(1), retryDelayMax: .seconds(3600)).levels == 23)
    }

    @Test func laterAttemptsReuseTheLongestDelayQueue() {
        #expect(policy.level(afterFailedAttempt: 1) == 1)
        #expect(policy.level(afterFailedAttempt: 4) == 4)
        let many = RetryPolicy(maxAttempts: 20, retryDelay: .seconds(1), retryDelayMax: .seconds(4))
        #expect(many.levels == 3)
        #expect(many.level(afterFailedAttempt: 10) == 3)
    }

    @Test func hugeLevelsDoNotOverflow() {
        #expect(policy.delay(level: 500) == .seconds(5))
    }

    @Test func decisionsFollowTheOutcomeAndTheAttemptCount() {
        let failure = Failure(reason: "exit code 75", exitCode: 75)
        #expect(policy.decide(.ack, attempt: 1) == .ack)
        #expect(policy.decide(.retry(failure), attempt: 1) == .retry(level: 1, nextAttempt: 2))
        #expect(policy.decide(.retry(failure), attempt: 4) == .retry(level: 4, nextAttempt: 5))
        #expect(policy.decide(.retry(failure), attempt: 5) == .deadLetter(reason: "failed 5 of 5 attempts (last: exit code 75)"))
        #expect(policy.decide(.deadLetter(Failure(reason: "exit code 65")), attempt: 1)
                == .deadLetter(reason: "rejected by the handler (exit code 65)"))
    }

    @Test func aSingleAttemptNeverRetries() {
        let once = RetryPolicy(maxAttempts: 1, retryDelay: .seconds(1), retryDelayMax: .seconds(1))
        #expect(once.decide(.retry(Failure(reason: "x")), attempt: 1) == .deadLetter(reason: "failed 1 of 1 attempts (last: x)"))
    }

    @Test func jitterOnlyShortensByAtMostTenPercent() {
        #expect(RetryPolicy.jittered(.seconds(10), random: 0) == .seconds(10))
        #expect(RetryPolicy.jittered(.seconds(10), random: 0.999_999) == .seconds(9))
        #expect(RetryPolicy.jittered(.seconds(10), random: 0.5) == .milliseconds(9500))
    }
}

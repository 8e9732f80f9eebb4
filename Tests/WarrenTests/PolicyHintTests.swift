import Testing
@testable import Warren

/// The `rabbitmqctl set_policy` command warren prints for a quorum
/// dead-letter queue with a delivery limit: pasted into a shell, it names
/// that queue alone, whatever bytes its name holds.
struct PolicyHintTests {
    @Test func aQuoteInTheQueueNameCannotEndTheShellWord() {
        #expect(EquivalentArgument.shellQuoted("it's") == #"'it'\''s'"#)
        #expect(EquivalentArgument.shellQuoted("$(reboot)") == "'$(reboot)'")
    }

    @Test func thePatternMatchesOnlyThatQueue() {
        let hint = EquivalentArgument.defaultDeliveryLimit("jobs.dead's (1)")
        #expect(hint.contains(#"set_policy warren-dlq-no-delivery-limit '^jobs\.dead'\''s \(1\)$' '{"delivery-limit":-1}'"#), "\(hint)")
    }
}

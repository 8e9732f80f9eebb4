import AMQP
import Testing
@testable import Warren

/// The worst time a message stays unacked, as a table, and the knob each
/// refusal names.
@Suite struct AckTimeoutRuleTests {
    let shutdown = ShutdownSettings(gracePeriod: .seconds(30), killAfter: .seconds(10))

    func consumer(prefetch: UInt16, concurrency: Int, timeout: Duration?, mode: HandlerMode = .exec) -> ConsumerSettings {
        ConsumerSettings(name: "c", queue: "q", prefetch: prefetch, concurrency: concurrency, timeout: timeout, mode: mode)
    }

    @Test func theWorstHoldIsTurnsTimesTimeoutKillAfterAndSettling() {
        // (prefetch, concurrency, timeout, mode, worst hold); settling is 10 s, kill_after 10 s.
        let table: [(UInt16, Int, Duration?, HandlerMode, Duration?)] = [
            (16, 4, .seconds(300), .exec, .seconds(4 * 320)),
            (1, 1, .seconds(60), .exec, .seconds(80)),
            (17, 4, .seconds(60), .exec, .seconds(5 * 80)),
            (100, 1, .seconds(10), .exec, .seconds(100 * 30)),
            (8, 8, .seconds(60), .persistent, .seconds(60 + 20 + 30)),
            (8, 8, nil, .exec, nil),
        ]
        for (prefetch, concurrency, timeout, mode, worst) in table {
            let rule = AckTimeoutRule(consumer(prefetch: prefetch, concurrency: concurrency, timeout: timeout, mode: mode),
                                      shutdown: shutdown)
            #expect(rule.worstHold == worst, "prefetch \(prefetch), concurrency \(concurrency), timeout \(String(describing: timeout)), \(mode)")
        }
    }

    @Test func repliesOutputsAndRecycledWorkersEachLengthenATurn() {
        // 1 × (60 s + kill_after 10 s + settling 10 s) + 5 s per confirmed output (+ kill_after for a recycle).
        var replying = consumer(prefetch: 1, concurrency: 1, timeout: .seconds(60))
        replying.replies = true
        replying.outputExchange = "next"
        #expect(AckTimeoutRule(replying, shutdown: shutdown).worstHold == .seconds(80 + 10))
        var recycled = consumer(prefetch: 1, concurrency: 1, timeout: .seconds(60), mode: .persistent)
        recycled.maxMessages = 100
        #expect(AckTimeoutRule(recycled, shutdown: shutdown).worstHold == .seconds(80 + 30 + 10))
    }

    @Test func theDefaultsFitRabbitMQsDefault() {
        let rule = AckTimeoutRule(ConsumerSettings(name: "c", queue: "q"), shutdown: ShutdownSettings())
        #expect(rule.problem(ConsumerSettings(name: "c", queue: "q"), consumerTimeout: BrokerSettings().consumerTimeout) == nil)
        let persistent = ConsumerSettings(name: "c", queue: "q", mode: .persistent)
        #expect(AckTimeoutRule(persistent, shutdown: ShutdownSettings()).problem(persistent, consumerTimeout: .seconds(1800)) == nil)
    }

    @Test func eachRefusalNamesTheKnobsThatFixIt() throws {
        let wide = consumer(prefetch: 100, concurrency: 2, timeout: .seconds(300))
        let message = try #require(AckTimeoutRule(wide, shutdown: shutdown).problem(wide, consumerTimeout: .seconds(1800)))
        // 50 turns of 320 s; 5 turns fit in 30 minutes, so prefetch 10 with concurrency 2.
        #expect(message.contains("50 × (timeout 5m + kill_after and settling 20s) = 4h26m40s"), "\(message)")
        #expect(message.contains("lower prefetch to at most 10, or raise concurrency, or lower timeout to at most 16s"), "\(message)")
        #expect(message.contains("raise consumer_timeout on the broker"))
        let slow = consumer(prefetch: 1, concurrency: 1, timeout: .seconds(3600))
        let one = try #require(AckTimeoutRule(slow, shutdown: shutdown).problem(slow, consumerTimeout: .seconds(1800)))
        #expect(!one.contains("lower prefetch") && !one.contains("raise concurrency") && one.contains("lower timeout to at most 29m40s"),
                "\(one)")
        let forever = consumer(prefetch: 4, concurrency: 4, timeout: nil)
        let unbounded = try #require(AckTimeoutRule(forever, shutdown: shutdown).problem(forever, consumerTimeout: .seconds(1800)))
        #expect(unbounded.contains("set timeout (at most 29m40s with prefetch 4 and concurrency 4)"), "\(unbounded)")
        #expect(AckTimeoutRule(forever, shutdown: shutdown).problem(forever, consumerTimeout: nil) == nil)
    }

    @Test func theBrokersAckTimeoutIsRecognisedByItsWords() {
        let timedOut = AMQPError(.channelClosedByBroker,
                                 "PRECONDITION_FAILED - delivery acknowledgement on channel 3 timed out. Timeout value used: 2000 ms. This timeout value can be configured, see consumers doc guide to learn more",
                                 replyCode: 406)
        #expect(AckTimeoutRule.isBrokerTimeout(timedOut))
        #expect(!AckTimeoutRule.isBrokerTimeout(AMQPError(.channelClosedByBroker, "PRECONDITION_FAILED - unknown delivery tag 7", replyCode: 406)))
        let said = AckTimeoutRule.explain(timedOut, consumer(prefetch: 16, concurrency: 4, timeout: .seconds(300)), shutdown: shutdown)
        #expect(said.contains("delivery acknowledgement on channel 3 timed out") && said.contains("up to 21m20s")
                && said.contains("set [broker] consumer_timeout to the broker's real value"), "\(said)")
    }

    @Test func durationsAreWrittenAsTheConfigWritesThem() {
        #expect(AckTimeoutRule.format(.seconds(1280)) == "21m20s")
        #expect(AckTimeoutRule.format(.seconds(3600)) == "1h")
        #expect(AckTimeoutRule.format(.milliseconds(1500)) == "1s500ms")
        #expect(AckTimeoutRule.format(.zero) == "0")
    }
}

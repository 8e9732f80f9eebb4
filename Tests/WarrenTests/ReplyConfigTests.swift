import AMQP
import Testing
import Warren
@testable import WarrenConfig

/// `replies`, `reply_content_type`, `output_exchange`, `output_routing_key`:
/// their defaults, how they are read, and the nonsense refused with its line.
@Suite struct ReplyConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /bin/cat\n"


    @Test func repliesAreOffAndNoOutputIsPublishedByDefault() throws {
        let consumer = try #require(try ConfigLoader.parse(Self.minimal, file: "w.ini").warren.consumers.first)
        #expect(consumer.replies == false)
        #expect(consumer.replyContentType == "text/plain")
        #expect(consumer.outputExchange == nil)
        #expect(consumer.outputRoutingKey == "")
        #expect(!consumer.publishesOutput(of: MessageProperties(replyTo: "callers")))
    }

    @Test func replyAndOutputKeysAreReadFromTheFileAndTheEnvironment() throws {
        let text = Self.minimal + "replies = yes\nreply_content_type = application/json\noutput_exchange = shop\noutput_routing_key = order.done\n"
        let consumer = try #require(try ConfigLoader.parse(text, file: "w.ini").warren.consumers.first)
        #expect(consumer.replies)
        #expect(consumer.replyContentType == "application/json")
        #expect(consumer.outputExchange == "shop")
        #expect(consumer.outputRoutingKey == "order.done")
        let overridden = try ConfigLoader.parse(Self.minimal, file: "w.ini", environment: [
            "WARREN_CONSUMER_ORDERS_REPLIES": "true", "WARREN_CONSUMER_ORDERS_OUTPUT_EXCHANGE": "amq.fanout"])
        #expect(overridden.warren.consumers[0].replies)
        #expect(overridden.warren.consumers[0].outputExchange == "amq.fanout")
        let described = ConfigDescription.render(try ConfigLoader.parse(text, file: "w.ini"))
        #expect(described.contains("replies = true\nreply_content_type = application/json\noutput_exchange = shop\noutput_routing_key = order.done\n"))
        // The description is itself a valid config that says the same.
        #expect(try ConfigLoader.parse(described, file: "described.ini").warren.consumers == ConfigLoader.parse(text, file: "w.ini").warren.consumers)
    }

    @Test func anEmptyOutputRoutingKeyIsAllowedQuoted() throws {
        let text = Self.minimal + "output_exchange = amq.fanout\noutput_routing_key = ''\n"
        let consumer = try #require(try ConfigLoader.parse(text, file: "w.ini").warren.consumers.first)
        #expect(consumer.outputRoutingKey == "")
        let described = ConfigDescription.render(try ConfigLoader.parse(text, file: "w.ini"))
        #expect(try ConfigLoader.parse(described, file: "described.ini").warren.consumers[0].outputRoutingKey == "")
    }

    @Test func onlyAMessageWithAReplyToIsAnsweredButEveryOneGoesToTheOutputExchange() {
        let replying = ConsumerSettings(name: "a", queue: "a", replies: true)
        #expect(replying.publishesOutput(of: MessageProperties(replyTo: "callers")))
        #expect(!replying.publishesOutput(of: MessageProperties()))
        #expect(!replying.publishesOutput(of: MessageProperties(replyTo: "")))
        let piping = ConsumerSettings(name: "a", queue: "a", outputExchange: "next")
        #expect(piping.publishesOutput(of: MessageProperties()))
    }

    @Test func nonsenseIsRefusedWithItsLine() {
        let long = String(repeating: "x", count: 256)
        let cases: [(String, String)] = [
            ("replies = maybe\n", "w.ini:4: 'maybe' is not a boolean"),
            ("reply_content_type =\n", "w.ini:4: empty value"),
            ("reply_content_type = \(long)\n", "w.ini:4: reply_content_type is longer than 255 bytes"),
            ("output_exchange =\n", "w.ini:4: empty value"),
            ("output_exchange = \(long)\n", "w.ini:4: output_exchange is longer than 255 bytes"),
            ("output_exchange = next\noutput_routing_key = \(long)\n", "w.ini:5: output_routing_key is longer than 255 bytes"),
            ("output_exchange = next\noutput_routing_key =\n", "w.ini:5: empty value: write ''"),
            ("output_routing_key = done\n", "w.ini:4: output_routing_key without output_exchange"),
        ]
        for (extra, expected) in cases {
            let found = problems(Self.minimal + extra)
            #expect(found.count == 1 && found[0].hasPrefix(expected), "\(extra): \(found)")
        }
    }
}

import AMQP
import Testing
@testable import Warren

/// What an outcome line shows of a message: its id as logs show it, and
/// how long the attempt took.
@Suite struct OutcomeLineTests {
    static func delivery(messageId: String?) -> Delivery {
        Delivery(channel: 1, deliveryTag: 7, consumerTag: "t", exchange: "", routingKey: "q", redelivered: false,
                 properties: MessageProperties(messageId: messageId), body: [])
    }

    @Test func aMessageWithoutAnIdShowsADashNotATagOrAQuestionMark() {
        #expect(Message.logID(of: Self.delivery(messageId: nil)) == "-")
        #expect(Message.logID(of: Self.delivery(messageId: "order-7")) == "order-7")
    }

    @Test func anIdLongerThanAShortStringIsCutAtACharacterBoundaryAndMarked() {
        // 254 bytes of 'x' then a 3-byte character: it does not fit whole.
        let id = String(repeating: "x", count: 254) + "€€"
        let shown = Message.logID(of: Self.delivery(messageId: id))
        #expect(shown == String(repeating: "x", count: 254) + "…")
        #expect(Message.logID(of: Self.delivery(messageId: String(repeating: "y", count: 255))) == String(repeating: "y", count: 255))
    }

    @Test func durationsAreMillisecondsToTheMicrosecond() {
        let shown = Consumer.milliseconds(since: monotonicNanoseconds() - 12_034_000)
        let parts = shown.split(separator: ".")
        #expect(parts.count == 2 && parts[1].count == 3, "\(shown)")
        #expect((Double(shown) ?? 0) >= 12.034, "\(shown)")
    }
}

import AMQP

// TEMPORARY stand-in for h3/envelope's `Envelope` (same API); deleted when
// that branch is merged. Not the envelope encoder: only enough for tests.
public struct Envelope: Sendable {
    let message: Message
    let id: String

    public init(message: Message, id: String) {
        self.message = message
        self.id = id
    }

    public func jsonLine() -> [UInt8] {
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default:
                    if scalar.value < 0x20 {
                        let hex = String(scalar.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        let delivery = message.delivery
        let body = String(decoding: message.body, as: UTF8.self)
        let messageID = delivery.properties.messageId.map(quoted) ?? "null"
        let line = "{\"id\":\(quoted(id)),\"queue\":\(quoted(message.queue)),\"consumer\":\(quoted(message.consumer)),"
            + "\"exchange\":\(quoted(delivery.exchange)),\"routing_key\":\(quoted(delivery.routingKey)),"
            + "\"redelivered\":\(delivery.redelivered),\"attempt\":\(message.attempt),\"body\":\(quoted(body)),"
            + "\"properties\":{\"message_id\":\(messageID)}}\n"
        return Array(line.utf8)
    }
}

import Testing
@testable import Warren

/// Which direct reply-to addresses warren publishes to: only well-formed
/// ones; the rest would make RabbitMQ 3.10 close the connection.
@Suite struct DirectReplyToAddressTests {
    /// A pid as RabbitMQ 3.10.8 encodes it (the shape `DirectReplyToTests` reads from the broker).
    static func address(node: String, atom: UInt8 = 0x77) -> String {
        let name = Array(node.utf8)
        let length: [UInt8] = atom == 0x77 ? [UInt8(name.count)] : [0, UInt8(name.count)]
        let pid: [UInt8] = [0x83, 0x58, atom] + length + name + [0, 0, 0, 1, 0, 0, 0, 0, 0x63, 0x5f, 0x1b, 0x2a]
        return DirectReplyTo.prefix + base64(pid) + "." + base64([1, 2, 3, 4, 5, 6])
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var out = ""
        for start in stride(from: 0, to: bytes.count, by: 3) {
            let chunk = Array(bytes[start..<min(start + 3, bytes.count)]) + [0, 0]
            let n = UInt32(chunk[0]) << 16 | UInt32(chunk[1]) << 8 | UInt32(chunk[2])
            let kept = min(3, bytes.count - start) + 1
            for i in 0..<4 { out.append(i < kept ? alphabet[Int(n >> (18 - 6 * UInt32(i)) & 63)] : "=") }
        }
        return out
    }

    @Test func wellFormedAddressesPass() {
        #expect(DirectReplyTo.problem(Self.address(node: "reply@1234567")) == nil)
        #expect(DirectReplyTo.problem(Self.address(node: "rabbit@host", atom: 0x76)) == nil)
        #expect(!HandlerOutput.isRoutable(replyTo: Self.address(node: "reply@1234567")))
    }

    @Test func malformedAddressesAndTheBarePseudoQueueAreRefusedWithAReason() {
        let bad = ["amq.rabbitmq.reply-to", "amq.rabbitmq.reply-to.", "amq.rabbitmq.reply-toX", "amq.rabbitmq.reply-to.AAAA.BBBB",
                   "amq.rabbitmq.reply-to.g2dk.x", "amq.rabbitmq.reply-to.AAAA", Self.address(node: "nonode"),
                   Self.address(node: "reply@1") + ".x", String(Self.address(node: "reply@1").dropLast(2))]
        for address in bad {
            #expect(DirectReplyTo.isDirect(address), "\(address)")
            #expect(DirectReplyTo.problem(address)?.contains("not a valid direct reply-to address") == true, "\(address)")
        }
        #expect(HandlerOutput.isRoutable(replyTo: "amq.rabbitmq.reply"), "an ordinary name")
    }
}

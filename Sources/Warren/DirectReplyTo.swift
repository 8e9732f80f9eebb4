/// Direct reply-to addresses (`amq.rabbitmq.reply-to.<pid>.<key>`), told
/// apart from malformed ones before a reply is published to them.
///
/// Why this matters: RabbitMQ 3.10 decodes the address while routing, and a
/// malformed one (`amq.rabbitmq.reply-to.AAAA.BBBB`), or a well-formed one
/// naming a node or process it does not know, crashes that decoder: the
/// broker closes the *whole connection* with 541 INTERNAL_ERROR
/// (rabbitmq-server#6396), failing every publish in flight on it. So a
/// malformed address is never published to: its request is dead-lettered
/// at once (it can never succeed). One that passes here but is stale still
/// crashes the decoder; direct replies therefore go out on a connection of
/// their own (`WarrenRuntime`), where that costs only other direct replies.
///
/// The format, as RabbitMQ 3.10.8 hands it to a requester (checked in
/// `ReplyTests`): the prefix, then two dot-separated base64 parts; the
/// first decodes to an Erlang external term, a pid: 0x83 0x58
/// (NEW_PID_EXT), the node as an atom (0x76 ATOM_UTF8_EXT with a 16-bit
/// length, 0x77 SMALL_ATOM_UTF8_EXT with an 8-bit one, or 0x64 ATOM_EXT),
/// then id, serial and creation, four bytes each.
enum DirectReplyTo {
    static let pseudoQueue = "amq.rabbitmq.reply-to"
    static let prefix = pseudoQueue + "."

    /// Whether `replyTo` is meant for direct reply-to: anything in the
    /// broker's reserved `amq.rabbitmq.reply-to` name space. Such a name is
    /// never a queue, so a reply to it is either a direct reply or lost.
    static func isDirect(_ replyTo: String) -> Bool { replyTo.hasPrefix(pseudoQueue) }

    /// Why a reply cannot go to the direct reply-to address `replyTo`, or
    /// nil if it is well-formed.
    static func problem(_ replyTo: String) -> String? {
        let malformed = "reply_to '\(replyTo.prefix(120))' is not a valid direct reply-to address"
        if replyTo == pseudoQueue {
            return malformed + " (the requester sent the pseudo-queue's name itself, not the address the broker gave it on publishing)"
        }
        guard replyTo.hasPrefix(prefix) else { return malformed }
        let parts = replyTo.utf8.dropFirst(prefix.utf8.count).split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 2, let pid = base64Decoded(parts[0]), base64Decoded(parts[1]) != nil,
              let node = pidNode(pid) else {
            return malformed
        }
        guard node.contains("@") else { return malformed + " (its node '\(node.prefix(80))' is not a node name)" }
        return nil
    }

    /// The node named by an Erlang external-term pid, or nil if `bytes` is not one.
    static func pidNode(_ bytes: [UInt8]) -> String? {
        guard bytes.count > 3, bytes[0] == 0x83, bytes[1] == 0x58 else { return nil }
        let length: Int
        let start: Int
        switch bytes[2] {
        case 0x76, 0x64:
            guard bytes.count > 5 else { return nil }
            length = Int(bytes[3]) << 8 | Int(bytes[4])
            start = 5
        case 0x77:
            length = Int(bytes[3])
            start = 4
        default:
            return nil
        }
        // id, serial and creation follow the atom, and nothing else.
        guard length > 0, bytes.count == start + length + 12 else { return nil }
        return String(validating: bytes[start..<(start + length)], as: UTF8.self)
    }

    /// Standard base64 with its padding, as RabbitMQ writes it; nil for anything else.
    static func base64Decoded(_ text: some Collection<UInt8>) -> [UInt8]? {
        let characters = Array(text)
        guard !characters.isEmpty, characters.count % 4 == 0 else { return nil }
        var bytes: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        var padding = 0
        for (index, character) in characters.enumerated() {
            let value: UInt32
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(character - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(character - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(character - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="):
                // Only at the end, at most two.
                guard index >= characters.count - 2 else { return nil }
                padding += 1
                continue
            default: return nil
            }
            guard padding == 0 else { return nil }
            buffer = buffer << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return bytes
    }
}

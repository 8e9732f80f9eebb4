/// One line a persistent worker wrote on stdout, read as the protocol
/// (README, "Writing a persistent worker"): `{"ready":true}` once it can
/// take messages, then one answer per message,
/// `{"id":"42","outcome":"ack"}` with `outcome` `ack`, `retry` or
/// `dead_letter` and optional string fields `reason` and `reply`.
/// Anything else is a protocol error.
enum WorkerLine: Equatable, Sendable {
    case ready
    case answer(WorkerAnswer)
    /// Not the protocol: why, and the line's first 200 bytes for the log.
    case invalid(why: String, excerpt: String)

    /// Bytes of a line quoted in the log.
    static let excerptLimit = 200
    /// A `reason` travels in a header of the retry or dead-letter copy, and
    /// a message's headers must fit one frame (128 KiB by default): a longer
    /// one would make every copy fail, and the message come back forever.
    static let reasonLimit = Failure.reasonLimit

    /// `quoting: false` for a worker whose answers carry replies: a line
    /// it got wrong may be a requester's data, which belongs neither in the
    /// log nor in the headers of a dead letter; then only its length and
    /// its keys are told.
    init(_ bytes: [UInt8], quoting: Bool = true) {
        let value: JSONValue
        do throws(JSONValue.ParseError) {
            value = try JSONValue.parse(bytes)
        } catch {
            self = .invalid(why: "not JSON (\(error.description))", excerpt: Self.excerpt(bytes, quoting: quoting))
            return
        }
        guard case .object(let fields) = value else {
            self = .invalid(why: "not a JSON object", excerpt: Self.excerpt(bytes, quoting: quoting))
            return
        }
        let excerpt = Self.excerpt(bytes, quoting: quoting, keys: fields.keys.sorted())
        if fields["ready"] == .bool(true), fields["id"] == nil {
            self = .ready
            return
        }
        guard case .string(let id)? = fields["id"] else {
            self = .invalid(why: "no string \"id\"", excerpt: excerpt)
            return
        }
        guard case .string(let outcomeName)? = fields["outcome"], let outcome = WorkerAnswer.Verdict(rawValue: outcomeName) else {
            self = .invalid(why: "\"outcome\" must be \"ack\", \"retry\" or \"dead_letter\"", excerpt: excerpt)
            return
        }
        var answer = WorkerAnswer(id: id, verdict: outcome)
        for key in ["reason", "reply"] {
            switch fields[key] {
            case nil, .null?: continue
            case .string(let text)?:
                if key == "reason" {
                    answer.reason = text.utf8.count <= Self.reasonLimit
                        ? text : String(decoding: text.utf8.prefix(Self.reasonLimit), as: UTF8.self) + "…"
                } else {
                    answer.reply = text
                }
            default:
                self = .invalid(why: "\"\(key)\" must be a string", excerpt: excerpt)
                return
            }
        }
        self = .answer(answer)
    }

    /// What of a line the log shows: its start, or when not `quoting`, its
    /// length and (for an object) its keys.
    static func excerpt(_ bytes: some Collection<UInt8>, quoting: Bool, keys: [String]? = nil) -> String {
        if quoting { return excerpt(bytes) }
        let named = keys.map { keys in ", keys " + keys.map { "\"\(excerpt($0.utf8.prefix(40)))\"" }.joined(separator: ", ") } ?? ""
        return "(\(bytes.count) bytes\(named); not quoted: this consumer's output is published)"
    }

    static func excerpt(_ bytes: some Collection<UInt8>) -> String {
        let head = String(decoding: bytes.prefix(excerptLimit), as: UTF8.self)
        return bytes.count > excerptLimit ? head + "…" : head
    }
}

/// A worker's answer to the message in hand.
struct WorkerAnswer: Equatable, Sendable {
    enum Verdict: String, Sendable { case ack, retry, dead_letter }
    var id: String
    var verdict: Verdict
    /// Carried to the log and `x-warren-reason`.
    var reason: String? = nil
    /// The reply body (UTF-8 text): with `replies`, the reply to the
    /// message's `reply_to`; with `output_exchange`, the next message.
    var reply: String? = nil

    /// What becomes of the message.
    var outcome: Outcome {
        let failure = Failure(reason: reason ?? "the worker answered \(verdict.rawValue)")
        switch verdict {
        case .ack: return .ack
        case .retry: return .retry(failure)
        case .dead_letter: return .deadLetter(failure)
        }
    }
}

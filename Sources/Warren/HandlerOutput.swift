public import AMQP

/// The messages a successful handler's output becomes (README, "Replies and
/// pipelines"): a reply to the request's `reply_to`, a new message to
/// `output_exchange`, or both. Their properties are built here, apart from
/// the publishing, so that what a requester or the next stage gets is a unit
/// test.
enum HandlerOutput {
    /// Headers carried from the request, so a trace goes on through the
    /// reply or the next stage of a pipeline (W3C trace context).
    static let carriedHeaders = ["traceparent", "tracestate"]

    /// Whether a reply to `replyTo` goes through queue routing, so that a
    /// mandatory publish tells an unroutable one (no such queue) by a
    /// `basic.return`. Direct reply-to (`amq.rabbitmq.reply-to.…`) does
    /// not: RabbitMQ hands the reply to the requester's channel outside
    /// routing and returns a mandatory one as 312 NO_ROUTE *although it
    /// delivered it* (seen with 3.10), so it is published without
    /// `mandatory`. A requester that has gone then loses the reply, which
    /// nobody waits for any more; the request is acked.
    static func isRoutable(replyTo: String) -> Bool {
        !DirectReplyTo.isDirect(replyTo)
    }

    /// A reply: the request's `correlation_id`, `reply_content_type`, and
    /// not persistent: the requester waits for it now, and a reply that
    /// outlived a broker restart would find nobody waiting.
    /// `carrying`: other headers to carry (those a tracer wrote).
    static func replyProperties(for request: MessageProperties, contentType: String, carrying: [String] = []) -> MessageProperties {
        MessageProperties(contentType: contentType, headers: carried(request.headers, also: carrying),
                          correlationId: request.correlationId)
    }

    /// A pipeline's next message: persistent (it is the work of the next
    /// stage), the request's `correlation_id`, `reply_content_type`.
    static func outputProperties(for request: MessageProperties, contentType: String, carrying: [String] = []) -> MessageProperties {
        MessageProperties(contentType: contentType, headers: carried(request.headers, also: carrying), deliveryMode: 2,
                          correlationId: request.correlationId)
    }

    private static func carried(_ headers: FieldTable?, also: [String]) -> FieldTable? {
        guard let headers else { return nil }
        var kept = FieldTable()
        for name in carriedHeaders + also.filter({ !carriedHeaders.contains($0) }) {
            if let value = headers[name] { kept[name] = value }
        }
        return kept.isEmpty ? nil : kept
    }
}

extension ConsumerSettings {
    /// The most a reply or output message may be: `max_body`, up to
    /// `ProcessSupervisor.outputCap`.
    var outputLimit: Int { min(maxBody, ProcessSupervisor.outputCap) }

    /// Whether a message's handler output is published (a reply, the output
    /// exchange, or both): then it is captured instead of logged. (Here,
    /// not in Settings.swift, which the config fuzzer compiles without
    /// the AMQP layer's message types.)
    public func publishesOutput(of properties: MessageProperties) -> Bool {
        outputExchange != nil || (replies && !(properties.replyTo ?? "").isEmpty)
    }
}

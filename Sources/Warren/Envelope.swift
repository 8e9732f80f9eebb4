import AMQP

/// The whole message as one JSON line: what a handler reads on stdin with
/// `input = envelope`, and what a persistent worker gets for every message
/// (DESIGN.md, "Handler contract, part two"; README, "The message your
/// handler gets").
///
/// ```json
/// {"id":"42","queue":"orders","consumer":"orders","exchange":"shop","routing_key":"order.created",
///  "redelivered":false,"attempt":1,"body":"{\"order\":7}","properties":{...,"headers":{...}}}
/// ```
///
/// Keys always come in that order and every property is present, `null`
/// when the message lacks it, so the line for a given delivery is the same
/// bytes every time. `body` holds the body when it is valid UTF-8; otherwise
/// `body` is absent and `body_base64` holds it. `exchange` and `routing_key`
/// are where the message was first published, also after warren retried it
/// through a delay queue (the same as `WARREN_EXCHANGE`). How every header
/// type, odd string and odd number is written: `JSONWriter`.
///
/// Built once per delivery; it keeps a reference to the delivery, not a copy
/// of the body, and writes the line only when asked.
public struct Envelope: Sendable {
    public let message: Message
    /// The line's `id`.
    public let id: String

    /// `id`: warren's id for this delivery, unique within a worker's lifetime.
    public init(message: Message, id: String) {
        self.message = message
        self.id = id
    }

    /// One JSON object, UTF-8, terminated by "\n".
    public func jsonLine() -> [UInt8] {
        let delivery = message.delivery
        let properties = delivery.properties
        let origin = message.origin
        let payload = message.payload
        // The body dominates: escaped text rarely grows much; base64 grows by a third.
        var json = JSONWriter(capacity: payload.count + payload.count / 3 + 512)
        json.raw("{")
        json.key("id"); json.string(id)
        json.raw(","); json.key("queue"); json.string(message.queue)
        json.raw(","); json.key("consumer"); json.string(message.consumer)
        json.raw(","); json.key("exchange"); json.string(origin.exchange)
        json.raw(","); json.key("routing_key"); json.string(origin.routingKey)
        json.raw(","); json.key("redelivered"); json.bool(delivery.redelivered)
        json.raw(","); json.key("attempt"); json.number(message.attempt)
        json.raw(",")
        json.body(payload)
        json.raw(","); json.key("properties"); json.properties(properties)
        json.raw("}\n")
        return json.bytes
    }
}

/// The parts of the envelope that `warren dlq show --json` writes too.
extension JSONWriter {
    /// `"body":"…"` when the body is valid UTF-8, else `"body_base64":"…"`.
    mutating func body(_ payload: MessageBody) {
        let bodyStart = count
        key("body")
        let valid = payload.withUnsafeBytes { escapedIfValid($0) }
        if !valid {
            truncate(to: bodyStart)
            key("body_base64")
            payload.withUnsafeBytes { base64($0) }
        }
    }

    /// Every property, `null` when absent, headers with their AMQP types.
    mutating func properties(_ properties: MessageProperties) {
        raw("{")
        key("message_id"); string(properties.messageId)
        raw(","); key("correlation_id"); string(properties.correlationId)
        raw(","); key("reply_to"); string(properties.replyTo)
        raw(","); key("content_type"); string(properties.contentType)
        raw(","); key("content_encoding"); string(properties.contentEncoding)
        raw(","); key("delivery_mode"); number(properties.deliveryMode)
        raw(","); key("priority"); number(properties.priority)
        raw(","); key("expiration"); string(properties.expiration)
        raw(","); key("timestamp"); number(properties.timestamp)
        raw(","); key("type"); string(properties.type)
        raw(","); key("user_id"); string(properties.userId)
        raw(","); key("app_id"); string(properties.appId)
        raw(","); key("headers")
        if let headers = properties.headers { table(headers) } else { raw("null") }
        raw("}")
    }

    mutating func number<T: BinaryInteger>(_ value: T?) {
        if let value { number(value) } else { raw("null") }
    }
}

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
    /// `id`: warren's id for this delivery, unique within a worker's lifetime.
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
        let bodyStart = json.count
        json.key("body")
        let valid = payload.withUnsafeBytes { json.escapedIfValid($0) }
        if !valid {
            json.truncate(to: bodyStart)
            json.key("body_base64")
            payload.withUnsafeBytes { json.base64($0) }
        }
        json.raw(","); json.key("properties"); json.raw("{")
        json.key("message_id"); json.string(properties.messageId)
        json.raw(","); json.key("correlation_id"); json.string(properties.correlationId)
        json.raw(","); json.key("reply_to"); json.string(properties.replyTo)
        json.raw(","); json.key("content_type"); json.string(properties.contentType)
        json.raw(","); json.key("content_encoding"); json.string(properties.contentEncoding)
        json.raw(","); json.key("delivery_mode"); json.number(properties.deliveryMode)
        json.raw(","); json.key("priority"); json.number(properties.priority)
        json.raw(","); json.key("expiration"); json.string(properties.expiration)
        json.raw(","); json.key("timestamp"); json.number(properties.timestamp)
        json.raw(","); json.key("type"); json.string(properties.type)
        json.raw(","); json.key("user_id"); json.string(properties.userId)
        json.raw(","); json.key("app_id"); json.string(properties.appId)
        json.raw(","); json.key("headers")
        if let headers = properties.headers { json.table(headers) } else { json.raw("null") }
        json.raw("}}\n")
        return json.bytes
    }
}

private extension JSONWriter {
    mutating func number<T: BinaryInteger>(_ value: T?) {
        if let value { number(value) } else { raw("null") }
    }
}

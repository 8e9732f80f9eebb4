/// The basic properties of a message. Absent properties are nil.
public struct MessageProperties: Sendable, Equatable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: FieldTable?
    public var deliveryMode: UInt8?
    public var priority: UInt8?
    public var correlationId: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageId: String?
    public var timestamp: UInt64?
    public var type: String?
    public var userId: String?
    public var appId: String?

    public init(contentType: String? = nil, contentEncoding: String? = nil, headers: FieldTable? = nil,
                deliveryMode: UInt8? = nil, priority: UInt8? = nil, correlationId: String? = nil,
                replyTo: String? = nil, expiration: String? = nil, messageId: String? = nil,
                timestamp: UInt64? = nil, type: String? = nil, userId: String? = nil, appId: String? = nil) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.priority = priority
        self.correlationId = correlationId
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageId = messageId
        self.timestamp = timestamp
        self.type = type
        self.userId = userId
        self.appId = appId
    }
}

/// One message delivered to a consumer. Its fields are copied out of
/// rabbitmq-c's buffers; its body is not: it keeps the buffer rabbitmq-c
/// allocated for it (`MessageBody`), freed with the delivery.
///
/// `deliveryTag` is only meaningful on the channel (and the connection) it
/// came from; settle it through that same `AMQPConnection`.
///
/// A class with constant fields: a delivery passes from the I/O thread to a
/// buffer, a worker, a handler and back to the ack path, and each pass of a
/// struct this size would retain every string, table and body in it.
public final class Delivery: Sendable {
    public let channel: UInt16
    public let deliveryTag: UInt64
    public let consumerTag: String
    public let exchange: String
    public let routingKey: String
    public let redelivered: Bool
    public let properties: MessageProperties
    /// The body in place: read it with `withUnsafeBytes`, size it with `count`.
    public let payload: MessageBody

    /// The body as an array, copied out of the buffer on the first read
    /// (then kept while the delivery lives): code that only reads it, or
    /// its size, uses `payload` and copies nothing.
    public var body: [UInt8] { payload.bytes }

    public convenience init(channel: UInt16, deliveryTag: UInt64, consumerTag: String, exchange: String,
                            routingKey: String, redelivered: Bool, properties: MessageProperties, body: [UInt8]) {
        self.init(channel: channel, deliveryTag: deliveryTag, consumerTag: consumerTag, exchange: exchange,
                  routingKey: routingKey, redelivered: redelivered, properties: properties, payload: MessageBody(body))
    }

    public init(channel: UInt16, deliveryTag: UInt64, consumerTag: String, exchange: String,
                routingKey: String, redelivered: Bool, properties: MessageProperties, payload: MessageBody) {
        self.channel = channel
        self.deliveryTag = deliveryTag
        self.consumerTag = consumerTag
        self.exchange = exchange
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.properties = properties
        self.payload = payload
    }

    /// The same delivery (tag, channel, body in place) with other
    /// properties: settled like the original, which it stands for.
    public func with(properties: MessageProperties) -> Delivery {
        Delivery(channel: channel, deliveryTag: deliveryTag, consumerTag: consumerTag, exchange: exchange,
                 routingKey: routingKey, redelivered: redelivered, properties: properties, payload: payload)
    }
}

/// What a consumer does with a delivery when its work is over.
public enum Settlement: Sendable, Equatable {
    case ack
    /// `basic.nack`; with `requeue` the broker redelivers it (marked redelivered).
    case nack(requeue: Bool)
}

/// What the connection reports, in the order it happened on the wire.
public enum AMQPEvent: Sendable {
    case delivery(Delivery)
    /// The broker cancelled a consumer (its queue was deleted, a node failed over).
    case consumerCancelledByBroker(channel: UInt16, consumerTag: String)
    /// The broker closed a channel; its unsettled deliveries are void.
    case channelClosed(channel: UInt16, error: AMQPError)
    /// A `basic.return` of a mandatory publish nobody could route.
    case returned(channel: UInt16, replyCode: UInt16, replyText: String, exchange: String, routingKey: String)
    /// The broker stopped reading from this connection (`connection.blocked`):
    /// a memory or disk alarm, until `.unblocked`. Publishes get no confirm
    /// meanwhile, and any synchronous call waits.
    case blocked(reason: String)
    case unblocked
    /// The connection is gone. Last event; the stream finishes after it.
    case connectionLost(AMQPError)
}

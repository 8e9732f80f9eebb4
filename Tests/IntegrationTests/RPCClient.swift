import AMQP
import Logging
import Synchronization

/// A requester, as an RPC client of a warren with `replies = true` would
/// be: its own connection, requests published (each confirmed) with
/// `reply_to` and a correlation id, and every reply that comes kept, in
/// order, with its properties and body. Replies come through a queue of
/// its own or through direct reply-to (`amq.rabbitmq.reply-to`), whose
/// consumer must be no-ack and on the channel the requests go out on.
final class RPCClient: Sendable {
    enum Route: String, Sendable, CustomStringConvertible {
        /// A named, exclusive reply queue.
        case replyQueue
        /// `amq.rabbitmq.reply-to`: no queue, the broker hands replies to this channel.
        case directReplyTo
        var description: String { rawValue }
    }

    struct Reply: Sendable {
        var correlationId: String?
        var contentType: String?
        var deliveryMode: UInt8?
        var headers: FieldTable?
        var body: String
    }

    let connection: AMQPConnection
    /// What requests carry in `reply_to`.
    let replyTo: String
    /// Filled on the connection's I/O thread as replies arrive.
    private final class Received: Sendable {
        let list = Mutex<[Reply]>([])
    }
    private let received = Received()

    init(route: Route, name: String = "test.replies.\(UInt32.random(in: 0...UInt32.max))") async throws {
        let box = received
        var options = try TestBroker.options
        options.connectionName = "warren-tests (requester)"
        connection = try await AMQPConnection.connect(options) { event in
            guard case .delivery(let delivery) = event else { return }
            let p = delivery.properties
            let reply = Reply(correlationId: p.correlationId, contentType: p.contentType, deliveryMode: p.deliveryMode,
                              headers: p.headers, body: String(decoding: delivery.body, as: UTF8.self))
            box.list.withLock { $0.append(reply) }
        }
        try await connection.openChannel(1, confirms: true)
        switch route {
        case .replyQueue:
            try await connection.declareQueue(name, on: 1, durable: false, exclusive: true)
            _ = try await connection.consume(queue: name, on: 1, noAck: true)
            replyTo = name
        case .directReplyTo:
            _ = try await connection.consume(queue: "amq.rabbitmq.reply-to", on: 1, noAck: true)
            replyTo = "amq.rabbitmq.reply-to"
        }
    }

    /// One request per id: the id is its body, message id and correlation id.
    func request(_ ids: [String], to queue: String, replyTo: String? = nil, headers: FieldTable? = nil) async throws {
        for id in ids {
            try await connection.publish(Array(id.utf8), routingKey: queue, on: 1, properties: MessageProperties(
                headers: headers, deliveryMode: 2, correlationId: id, replyTo: replyTo ?? self.replyTo, messageId: id))
        }
    }

    var replies: [Reply] { received.list.withLock { $0 } }

    func close() async { await connection.close() }
}

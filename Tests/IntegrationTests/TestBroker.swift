import AMQP
import Glibc
import Logging
import Testing

/// The private broker the test scripts started (scripts/broker.sh via
/// `make test`). If it is not there, tests fail: they never skip.
enum TestBroker {
    static var url: String {
        if let value = getenv("WARREN_TEST_AMQP_URL") { return String(cString: value) }
        return "amqp://guest:guest@127.0.0.1:25672/%2f"
    }

    static var options: ConnectionOptions {
        get throws { try ConnectionOptions(url: url) }
    }

    /// rabbitmqctl against the private node (scripts/broker.sh ctl).
    static var brokerDir: String? {
        guard let value = getenv("WARREN_TEST_BROKER_DIR") else { return nil }
        return String(cString: value)
    }

    static func connect(heartbeat: Int = 30) async throws -> AMQPConnection {
        var options = try options
        options.heartbeat = heartbeat
        options.connectionName = "warren-tests"
        do {
            return try await AMQPConnection.connect(options, logger: Logger(label: "test"))
        } catch {
            Issue.record("the test broker at \(options.redactedURL) is not reachable: \(error). Run the tests with `make test`, which starts it.")
            throw error
        }
    }
}

/// A message as found in a queue after the fact.
struct Found: Sendable {
    var id: String
    var redelivered: Bool
    var headers: FieldTable?
}

/// A test's own connection for publishing and inspecting queues.
final class TestClient: Sendable {
    let connection: AMQPConnection

    init() async throws {
        connection = try await TestBroker.connect()
        try await connection.openChannel(1)
        try await connection.enableConfirms(on: 1)
    }

    func close() async { await connection.close() }

    /// Publishes persistent messages with these ids as message id and body, each confirmed.
    func publish(ids: [String], to queue: String, headers: FieldTable? = nil) async throws {
        for id in ids {
            try await connection.publish(Array(id.utf8), routingKey: queue, on: 1,
                                         properties: MessageProperties(headers: headers, deliveryMode: 2, messageId: id))
        }
    }

    /// Messages ready in the queue; 0 if it does not exist (yet).
    func count(_ queue: String) async throws -> Int {
        do {
            return Int(try await connection.declareQueue(queue, on: 1, passive: true).messageCount)
        } catch where error.replyCode == 404 {
            try await connection.openChannel(1)
            try await connection.enableConfirms(on: 1)
            return 0
        }
    }

    /// Takes every message out of the queue (acking them) and returns them.
    func drain(_ queue: String) async throws -> [Found] {
        let expected = try await count(queue)
        guard expected > 0 else { return [] }
        let channel: UInt16 = 9
        let connection = try await TestBroker.connect()
        try await connection.openChannel(channel, prefetch: 500)
        let tag = try await connection.consume(queue: queue, on: channel)
        var found: [Found] = []
        for await event in connection.events {
            guard case .delivery(let delivery) = event else { continue }
            found.append(Found(id: delivery.properties.messageId ?? "?", redelivered: delivery.redelivered,
                               headers: delivery.properties.headers))
            connection.ack(delivery)
            if found.count == expected { break }
        }
        try await connection.cancel(consumerTag: tag, on: channel)
        await connection.close()
        return found
    }
}

/// A uniquely named queue, deleted afterwards.
func withTestQueue(_ name: String = #function, _ body: (TestClient, String) async throws -> Void) async throws {
    let client = try await TestClient()
    let base = name.prefix(while: { $0 != "(" })
    let queue = "test.\(base).\(UInt32.random(in: 0...UInt32.max))"
    try await client.connection.declareQueue(queue, on: 1, durable: true)
    do {
        try await body(client, queue)
    } catch {
        _ = try? await client.connection.deleteQueue(queue, on: 1)
        await client.close()
        throw error
    }
    for name in [queue, queue + ".dead"] + (1...8).map({ "\(queue).retry.\($0)" }) {
        _ = try? await client.connection.deleteQueue(name, on: 1)
    }
    await client.close()
}

/// Waits until `condition` holds, polling; fails the test after `timeout`.
func eventually(_ what: String, timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out after \(timeout) waiting for: \(what)")
    throw CancellationError()
}

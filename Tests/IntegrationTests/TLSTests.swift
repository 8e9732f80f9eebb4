import AMQP
import Glibc
import Testing

/// `amqps://` against the test broker's TLS listener, with a CA made at test time.
@Suite(.serialized) struct TLSTests {
    static var tlsPort: Int {
        get throws {
            guard let value = getenv("WARREN_TEST_TLS_PORT"), let port = Int(String(cString: value)) else {
                Issue.record("WARREN_TEST_TLS_PORT is not set: run the tests with `make test`")
                throw CancellationError()
            }
            return port
        }
    }

    static func file(_ name: String) throws -> String {
        guard let directory = TestBroker.brokerDir else {
            Issue.record("WARREN_TEST_BROKER_DIR is not set: run the tests with `make test`")
            throw CancellationError()
        }
        return directory + "/tls/" + name
    }

    @Test func warrenConsumesOverTLSWithTheRightCA() async throws {
        let url = "amqps://guest:guest@localhost:\(try Self.tlsPort)/%2f"
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["secure"], to: queue)
            let config = try warrenConfig(queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#)
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(url)\ntls_ca = \(try Self.file("ca.pem"))")
            let warren = try WarrenBinary(config: config)
            try await eventually("processed over TLS") { warren.lines("finished") == ["secure"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aWrongCAIsRefusedWithAClearError() async throws {
        var options = try ConnectionOptions(url: "amqps://guest:guest@localhost:\(try Self.tlsPort)/%2f")
        options.tlsCA = try Self.file("other-ca.pem")
        do {
            let connection = try await AMQPConnection.connect(options)
            await connection.close()
            Issue.record("a broker certificate from another CA was accepted")
        } catch {
            #expect(error.code == .connectFailed)
            #expect(error.reason.contains("localhost:\(try Self.tlsPort)"))
        }
    }

    @Test func theHostNameIsVerified() async throws {
        // The certificate names localhost only: the same broker reached as 127.0.0.1 must be refused.
        var options = try ConnectionOptions(url: "amqps://guest:guest@127.0.0.1:\(try Self.tlsPort)/%2f")
        options.tlsCA = try Self.file("ca.pem")
        await #expect(throws: AMQPError.self) { try await AMQPConnection.connect(options) }
    }

    @Test func aMissingCAFileIsAClearError() async throws {
        var options = try ConnectionOptions(url: "amqps://guest:guest@localhost:\(try Self.tlsPort)/%2f")
        options.tlsCA = "/nonexistent/ca.pem"
        do {
            _ = try await AMQPConnection.connect(options)
            Issue.record("connected without a readable CA")
        } catch {
            #expect(error.reason.contains("/nonexistent/ca.pem"))
        }
    }

    /// amqps:// without tls_ca: the system bundle, which does not hold the
    /// test CA, so the handshake fails on the certificate and says so,
    /// instead of succeeding or hanging; no message is touched.
    @Test func withoutTLSCAWarrenVerifiesAgainstTheSystemBundleAndSaysWhyItCannotConnect() async throws {
        let url = "amqps://guest:guest@localhost:\(try Self.tlsPort)/%2f"
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["untrusted"], to: queue)
            let config = try warrenConfig(queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#)
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(url)")
            let warren = try WarrenBinary(config: config)
            try await eventually("a certificate error in the log") {
                warren.log.contains("the broker's certificate is not signed by a CA in /etc/ssl/certs/ca-certificates.crt; set tls_ca")
            }
            #expect(warren.lines("finished").isEmpty)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 1)
        }
    }

    /// The same config with SSL_CERT_FILE naming the test CA (OpenSSL's own
    /// variable for the default bundle) connects: the default really is used.
    @Test func withoutTLSCAWarrenTrustsSSLCertFile() async throws {
        let url = "amqps://guest:guest@localhost:\(try Self.tlsPort)/%2f"
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["trusted"], to: queue)
            let config = try warrenConfig(queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#)
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(url)")
            let warren = try WarrenBinary(config: config, environment: ["SSL_CERT_FILE": try Self.file("ca.pem")])
            try await eventually("processed over TLS") { warren.lines("finished") == ["trusted"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
        }
    }
}

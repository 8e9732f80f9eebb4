import AMQP
import Testing

@Suite struct ConnectionOptionsTests {
    @Test func fullURLIsParsedAndTheVhostDecoded() throws {
        let options = try ConnectionOptions(url: "amqp://user:pa%3Ass@broker.example:5673/%2f")
        #expect(options.user == "user" && options.password == "pa:ss")
        #expect(options.host == "broker.example" && options.port == 5673)
        #expect(options.virtualHost == "/")
        #expect(!options.tls)
    }

    @Test func amqpsDefaultsToPort5671() throws {
        let options = try ConnectionOptions(url: "amqps://h/vh")
        #expect(options.tls && options.port == 5671 && options.virtualHost == "vh")
    }

    @Test func ipv6HostsInBrackets() throws {
        let options = try ConnectionOptions(url: "amqp://[::1]:5700")
        #expect(options.host == "::1" && options.port == 5700 && options.virtualHost == "/")
    }

    @Test func redactedURLHidesThePassword() throws {
        let options = try ConnectionOptions(url: "amqp://u:topsecret@h/%2f")
        #expect(options.redactedURL == "amqp://u:***@h:5672/%2f")
    }

    @Test func badURLsAreRefused() {
        #expect(throws: AMQPError.self) { try ConnectionOptions(url: "http://h") }
        #expect(throws: AMQPError.self) { try ConnectionOptions(url: "amqp://h:99999") }
        #expect(throws: AMQPError.self) { try ConnectionOptions(url: "amqp://h/%zz") }
    }

    @Test func urlErrorsNeverQuoteTheURL() {
        for url in ["amqp://u:Zq9x/Wv7k@h", "amqp://u:Zq9x?Wv7k/@h", "amqp://u:p@h:Zq9x", "amqp://u:Zq9x@[::1"] {
            do {
                _ = try ConnectionOptions(url: url)
                Issue.record("\(url) was accepted")
            } catch {
                #expect(!error.reason.contains("Zq9x") && !error.reason.contains("Wv7k"), "\(error.reason)")
            }
        }
    }

    @Test func anAtSignAfterTheFirstSlashMeansAnUnencodedPassword() {
        // Otherwise this connects to host 'u' port 4711 with vhost 'Wv7k@h'.
        #expect(throws: AMQPError.self) { try ConnectionOptions(url: "amqp://u:4711/Wv7k@h") }
        #expect(throws: AMQPError.self) { try ConnectionOptions(url: "amqp://h/vhost@x") }
        #expect((try? ConnectionOptions(url: "amqp://h/vhost%40x"))?.virtualHost == "vhost@x")
    }
}

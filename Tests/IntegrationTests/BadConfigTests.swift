import Foundation
import Testing

/// Every configuration mistake stops warren with exit 78 and `file:line: problem`.
@Suite struct BadConfigTests {
    static let consumer = "[consumer.a]\nqueue = q\ncommand = true\n"

    static let cases: [(name: String, text: String, line: Int, says: String)] = [
        ("broken section header", "[broker\n" + consumer, 1, "has no closing ']'"),
        ("unknown key", consumer + "prefetchh = 3\n", 4, "unknown key 'prefetchh'"),
        ("unknown section", "[brokers]\n" + consumer, 1, "unknown section [brokers]"),
        ("bad number", consumer + "prefetch = many\n", 4, "is not a whole number"),
        ("bad duration", "[shutdown]\ngrace_period = soon\n" + consumer, 2, "is not a duration"),
        ("missing queue", "[consumer.a]\ncommand = true\n", 1, "has no 'queue'"),
        ("missing command", "[consumer.a]\nqueue = q\n", 1, "has no 'command'"),
        ("duplicate key", consumer + "queue = r\n", 4, "set twice"),
        ("empty value", consumer + "timeout =\n", 4, "empty value"),
        ("bad URL", "[broker]\nurl = http://h\n" + consumer, 2, "broker URL 1 is not valid"),
        ("unencoded '/' in a password", "[broker]\nurl = amqp://u:Zq9x/Wv7k@h:5672/%2f\n" + consumer, 2, "broker URL 1 is not valid"),
        ("NUL byte", consumer + "timeout = 5\u{0}0s\n", 4, "control character U+0000"),
        ("text after a section header", "[broker] url = amqp://h\n" + consumer, 1, "has text after the closing ']'"),
        ("replies not a boolean", consumer + "replies = sometimes\n", 4, "'sometimes' is not a boolean"),
        ("log_outcomes not a boolean", consumer + "log_outcomes = loud\n", 4, "'loud' is not a boolean"),
        ("output_routing_key alone", consumer + "output_routing_key = done\n", 4, "output_routing_key without output_exchange"),
        ("output_exchange too long", consumer + "output_exchange = \(String(repeating: "x", count: 300))\n", 4,
         "output_exchange is longer than 255 bytes"),
        ("a message could outlast consumer_timeout", consumer + "prefetch = 100\nconcurrency = 1\n", 4,
         "[consumer.a]: a message could stay unacked for 100 × "),
        ("no timeout under a finite consumer_timeout", "[broker]\nconsumer_timeout = 1h\n" + consumer + "timeout = 0\n", 6,
         "timeout = 0 lets a handler run forever"),
        ("delivery_limit on a classic queue", consumer + "delivery_limit = 3\n", 4, "delivery_limit needs queue_type = quorum"),
        ("routing_keys without exchange", consumer + "routing_keys = a b\n", 4, "routing_keys needs exchange"),
        ("reject-publish drops retries on a classic queue", consumer + "max_length = 5\noverflow = reject-publish\n", 5,
         "silently drops retried messages"),
    ]

    @Test(arguments: cases.indices)
    func eachMistakeExits78AndNamesItsLine(index: Int) async throws {
        let (name, text, line, says) = Self.cases[index]
        for checkOnly in [false, true] {
            let directory = try WarrenBinary.makeDirectory()
            let path = directory + "/bad.ini"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: text, arguments: checkOnly ? ["--check-config", path] : ["--config", path])
            #expect(await warren.waitForExit(timeout: .seconds(20)) == 78, "\(name)")
            #expect(warren.log.contains("\(path):\(line): "), "\(name): \(warren.log)")
            #expect(warren.log.contains(says), "\(name): \(warren.log)")
            #expect(!warren.log.contains("Zq9x") && !warren.log.contains("Wv7k"), "\(name): \(warren.log)")
        }
    }

    @Test func aCommentAfterASectionHeaderIsAccepted() async throws {
        let text = "[broker] ; where to connect\nurl = amqp://h\n" + Self.consumer
        let directory = try WarrenBinary.makeDirectory()
        let path = directory + "/ok.ini"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let warren = try WarrenBinary(config: text, arguments: ["--check-config", path])
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0, "\(warren.log)")
    }

    /// SSL_CERT_FILE set but unreadable stands for "no CA to trust": exit 78
    /// at the url line, telling the operator to set tls_ca.
    @Test func amqpsWithNoCAToTrustExits78AtTheURLLine() async throws {
        let text = "[broker]\nurl = amqps://u:Zq9x@h\n" + Self.consumer
        let directory = try WarrenBinary.makeDirectory()
        let path = directory + "/tls.ini"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let warren = try WarrenBinary(config: text, arguments: ["--config", path], environment: ["SSL_CERT_FILE": "/nonexistent/ca.pem"])
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 78)
        #expect(warren.log.contains("\(path):2: amqps:// needs a CA to verify the broker"), "\(warren.log)")
        #expect(warren.log.contains("set tls_ca"), "\(warren.log)")
        #expect(!warren.log.contains("Zq9x"))
    }

    @Test func aMissingConfigFileExits78NamingIt() async throws {
        let warren = try WarrenBinary(config: "", arguments: ["--config", "/nonexistent/warren.ini"])
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 78)
        #expect(warren.log.contains("/nonexistent/warren.ini:0: cannot read the config file: No such file or directory"))
    }

    @Test func checkConfigPrintsTheResolvedConfigWithThePasswordMasked() async throws {
        let text = "[broker]\nurl = amqp://admin:hunter2@127.0.0.1:5672/%2f\n" + Self.consumer
        let directory = try WarrenBinary.makeDirectory()
        let path = directory + "/ok.ini"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let warren = try WarrenBinary(config: text, arguments: ["--check-config", path])
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 0)
        #expect(warren.log.contains("url = amqp://admin:***@127.0.0.1:5672/%2f"))
        #expect(!warren.log.contains("hunter2"))
    }
}

import AMQP
import Testing
import Warren
@testable import WarrenConfig

@Suite struct ConfigLoaderTests: ConfigProblems {
    static let minimal = """
        [consumer.orders]
        queue = orders
        command = /usr/local/bin/process-order --verbose

        """

    func load(_ text: String, environment: [String: String] = [:]) throws -> Config {
        try ConfigLoader.parse(text, file: "w.ini", environment: environment)
    }


    @Test func aMinimalFileGetsEveryDefault() throws {
        let config = try load(Self.minimal)
        let consumer = try #require(config.warren.consumers.first)
        #expect(consumer.name == "orders")
        #expect(consumer.command == ["/usr/local/bin/process-order", "--verbose"])
        #expect(consumer.prefetch == 16)
        #expect(consumer.concurrency == 4)
        #expect(consumer.timeout == .seconds(300))
        #expect(consumer.deadLetterQueue == "orders.dead")
        #expect(consumer.exitAck == [0] && consumer.exitRetry == [75] && consumer.exitDeadLetter == [65])
        #expect(consumer.declare)
        #expect(config.warren.shutdown == ShutdownSettings(gracePeriod: .seconds(30), killAfter: .seconds(10)))
        #expect(config.warren.broker.endpoints.first?.port == 5672)
        #expect(config.warren.broker.endpoints.first?.heartbeat == 30)
        #expect(config.metrics == nil)
        #expect(config.log == LogSettings(level: .info, format: .text))
    }

    @Test func theSampleConfigInTheRepoIsValid() throws {
        let path = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let config = try ConfigLoader.load(path: "/" + path + "/config/warren.ini", environment: [:])
        #expect(!config.warren.consumers.isEmpty)
    }

    @Test func everyKeyIsReadWithItsType() throws {
        let config = try load("""
            [broker]
            url = amqp://u:p%40ss@rabbit:5673/prod amqp://u:p@rabbit2/prod
            heartbeat = 10s
            reconnect_min = 250ms
            reconnect_max = 1m
            consumer_timeout = 0
            [shutdown]
            grace_period = 45
            kill_after = 5s
            [consumer.orders]
            queue = orders
            prefetch = 32
            concurrency = 8
            command = "/opt/my handler" --flag
            timeout = 0
            max_attempts = 3
            retry_delay = 2s
            retry_delay_max = 1h
            dead_letter_queue = orders.failed
            exit_ack = 0, 10
            exit_retry = 75,76
            exit_dead_letter = 65
            declare = no
            queue_type = quorum
            [metrics]
            listen = 127.0.0.1:9419
            [log]
            level = debug
            format = json
            """)
        let broker = config.warren.broker
        #expect(broker.endpoints.count == 2)
        #expect(broker.endpoints[0].password == "p@ss")
        #expect(broker.endpoints[0].virtualHost == "prod")
        #expect(broker.endpoints[0].heartbeat == 10)
        #expect(broker.reconnectMin == .milliseconds(250) && broker.reconnectMax == .seconds(60))
        #expect(broker.consumerTimeout == nil, "0: the broker has no acknowledgement timeout")
        #expect(config.warren.shutdown == ShutdownSettings(gracePeriod: .seconds(45), killAfter: .seconds(5)))
        let consumer = try #require(config.warren.consumers.first)
        #expect(consumer.command == ["/opt/my handler", "--flag"])
        #expect(consumer.timeout == nil)
        #expect(consumer.exitAck == [0, 10] && consumer.exitRetry == [75, 76])
        #expect(!consumer.declare && consumer.queueType == .quorum)
        #expect(consumer.deadLetterQueue == "orders.failed")
        #expect(config.metrics == MetricsSettings(host: "127.0.0.1", port: 9419))
        #expect(config.log == LogSettings(level: .debug, format: .json))
    }

    @Test func environmentOverridesFileValues() throws {
        let config = try load(Self.minimal + "prefetch = 8\n", environment: [
            "WARREN_BROKER_URL": "amqp://x:y@other:5999/%2f",
            "WARREN_CONSUMER_ORDERS_PREFETCH": "20",
            "WARREN_SHUTDOWN_GRACE_PERIOD": "2m",
        ])
        #expect(config.warren.broker.endpoints.first?.host == "other")
        #expect(config.warren.consumers.first?.prefetch == 20)
        #expect(config.warren.shutdown.gracePeriod == .seconds(120))
    }

    @Test func aBadEnvironmentOverrideIsNamedByItsVariable() {
        #expect(problems(Self.minimal, environment: ["WARREN_CONSUMER_ORDERS_PREFETCH": "lots"])
                == ["$WARREN_CONSUMER_ORDERS_PREFETCH:0: 'lots' is not a whole number (allowed: 1 to 65535)"])
    }

    @Test func aMistypedOverrideVariableIsAnError() {
        #expect(problems(Self.minimal, environment: ["WARREN_BROKER_URLL": "amqp://h"]).first?.contains("no key 'urll'") == true)
    }

    @Test func unknownKeyIsAnErrorWithASuggestion() {
        #expect(problems(Self.minimal + "prefecth = 4\n").first?.hasPrefix("w.ini:4: unknown key 'prefecth' in [consumer.orders]; did you mean 'prefetch'?") == true)
    }

    @Test func unknownSectionIsAnError() {
        #expect(problems("[brokr]\nurl = x\n" + Self.minimal).first?.hasPrefix("w.ini:1: unknown section [brokr]") == true)
    }

    @Test func badNumberNamesTheLineAndTheRange() {
        #expect(problems(Self.minimal + "prefetch = 0\n") == ["w.ini:4: 0 is out of range (allowed: 1 to 65535)"])
        #expect(problems(Self.minimal + "prefetch = ten\n") == ["w.ini:4: 'ten' is not a whole number (allowed: 1 to 65535)"])
    }

    @Test func badDurationNamesTheLineAndTheFormats() {
        #expect(problems("[shutdown]\ngrace_period = 30 seconds\n" + Self.minimal)
                == ["w.ini:2: '30 seconds' is not a duration (use 250ms, 30s, 5m, 1h or bare seconds)"])
    }

    @Test func missingQueueOrCommandNamesTheSection() {
        #expect(problems("[consumer.a]\ncommand = x\n") == ["w.ini:1: [consumer.a] has no 'queue': name the queue to consume"])
        #expect(problems("[consumer.a]\nqueue = q\n") == ["w.ini:1: [consumer.a] has no 'command': give the program to run for each message"])
    }

    @Test func emptyValueIsAnError() {
        #expect(problems(Self.minimal + "timeout =\n") == ["w.ini:4: empty value: remove the line to use the default, or give a value"])
    }

    @Test func noConsumerAtAllIsAnError() {
        #expect(problems("[broker]\nurl = amqp://h\n").first?.contains("no [consumer.NAME] section") == true)
    }

    @Test func badURLIsAnErrorThatNeverShowsThePassword() {
        let found = problems("[broker]\nurl = http://user:hunter2@h\n" + Self.minimal)
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("w.ini:2: broker URL 1 is not valid") == true)
        #expect(found.first?.contains("hunter2") == false)
    }

    @Test func overlappingExitCodeListsAreAnError() {
        #expect(problems(Self.minimal + "exit_retry = 0\n").first?.contains("exit code 0 is in both exit_ack and exit_retry") == true)
    }

    @Test func exitCodesOutOfRangeAreAnError() {
        #expect(problems(Self.minimal + "exit_ack = 0, 300\n").first?.hasPrefix("w.ini:4: '300' is not an exit code") == true)
    }

    @Test func concurrencyAbovePrefetchIsAnError() {
        #expect(problems(Self.minimal + "prefetch = 2\nconcurrency = 4\n").first?.hasPrefix("w.ini:5: concurrency (4) is more than prefetch (2)") == true)
    }

    @Test func unsplittableCommandIsAnError() {
        #expect(problems("[consumer.a]\nqueue = q\ncommand = sh -c 'oops\n") == ["w.ini:3: command cannot be split into words: unterminated single quote"])
    }

    @Test func subSecondHeartbeatIsAnError() {
        #expect(problems("[broker]\nheartbeat = 500ms\n" + Self.minimal).first?.hasPrefix("w.ini:2: heartbeat must be whole seconds") == true)
    }

    @Test func badChoiceListsWhatIsAllowed() {
        #expect(problems(Self.minimal + "queue_type = stream\n") == ["w.ini:4: 'stream' is not allowed here (allowed: classic, quorum)"])
        #expect(problems("[log]\nlevel = loud\n" + Self.minimal).first?.contains("allowed: trace, debug, info, notice, warning, error, critical") == true)
    }

    @Test func checkConfigOutputMasksThePassword() throws {
        let config = try load("[broker]\nurl = amqp://admin:s3cret@h/%2f\n" + Self.minimal)
        let text = ConfigDescription.render(config)
        #expect(!text.contains("s3cret"))
        #expect(text.contains("url = amqp://admin:***@h:5672/%2f"))
    }

    @Test func durationsParseEveryUnit() {
        #expect(DurationParser.parse("250ms") == .milliseconds(250))
        #expect(DurationParser.parse("30s") == .seconds(30))
        #expect(DurationParser.parse("5m") == .seconds(300))
        #expect(DurationParser.parse("1h") == .seconds(3600))
        #expect(DurationParser.parse("12") == .seconds(12))
        #expect(DurationParser.parse("0.5") == .milliseconds(500))
        for bad in ["", "s", "-1s", "1.2.3", "5 m", "1d", ".5", "1e3"] { #expect(DurationParser.parse(bad) == nil, "\(bad)") }
    }

    /// Passwords with characters that should have been percent-encoded: the
    /// URL is wrong, and no message may show any piece of the password.
    static let leakyURLs: [(url: String, pieces: [String])] = [
        ("amqp://user:Zq9x/Wv7k@rabbit:5672/%2f", ["Zq9x", "Wv7k"]),
        ("amqp://user:Zq9x/Wv7k@rabbit", ["Zq9x", "Wv7k"]),
        ("amqp://user:4711/Wv7k@rabbit/%2f", ["4711", "Wv7k"]),
        ("amqps://user:Zq9x?Wv7k/@rabbit", ["Zq9x", "Wv7k"]),
        ("amqp://user:Zq9x#Wv7k/x@rabbit:1", ["Zq9x", "Wv7k"]),
        ("amqp://user:Zq9x@Wv7k@rabbit:99999/%2f", ["Zq9x", "Wv7k"]),
        ("amqp://user:Zq9x@Wv7k@[::1", ["Zq9x", "Wv7k"]),
        ("amqp://user:Zq9x%zzWv7k@rabbit", ["Zq9x", "Wv7k"]),
        ("http://user:Zq9x/Wv7k@rabbit", ["Zq9x", "Wv7k"]),
    ]

    @Test(arguments: leakyURLs.indices)
    func aMalformedURLNeverShowsAnyPieceOfThePassword(index: Int) {
        let (url, pieces) = Self.leakyURLs[index]
        for found in [problems("[broker]\nurl = \(url)\n" + Self.minimal),
                      problems(Self.minimal, environment: ["WARREN_BROKER_URL": url])] {
            #expect(found.count == 1, "\(url): \(found)")
            #expect(found.first?.contains("broker URL 1 is not valid") == true, "\(url): \(found)")
            for piece in pieces { #expect(found.first?.contains(piece) == false, "\(url): \(found)") }
        }
    }

    @Test func aPasswordOnAMalformedLineOrInTheWrongKeyIsNotEchoed() {
        for text in ["[broker]\nurl amqp://user:Zq9x/Wv7k@rabbit\n", "[broker]\nheartbeat = amqp://user:Zq9x/Wv7k@rabbit\n",
                     "[broker\nurl = amqp://user:Zq9x/Wv7k@rabbit\n", "[broker]\nreconnect_min = 'amqp://user:Zq9x/Wv7k@rabbit'\n"] {
            let found = problems(text + Self.minimal)
            #expect(found.first?.hasPrefix("w.ini:") == true, "\(found)")
            #expect(!found.contains { $0.contains("Zq9x") || $0.contains("Wv7k") }, "\(found)")
        }
    }

    @Test func amqpsWithoutTLSCAUsesTheSystemCABundle() throws {
        let config = try ConfigLoader.parse("[broker]\nurl = amqps://h amqp://h2\n" + Self.minimal, file: "w.ini",
                                            systemCABundles: ["/nonexistent/bundle.pem", "/etc/hostname"])
        #expect(config.warren.broker.endpoints.map(\.tlsCA) == ["/etc/hostname", nil])
        #expect(ConfigDescription.render(config).contains("tls_ca = /etc/hostname\n"))
    }

    @Test func amqpsOnThisDebianHostResolvesToItsCABundle() throws {
        // The default candidates, not a test list: Debian's bundle is installed here (ca-certificates).
        let config = try load("[broker]\nurl = amqps://h\n" + Self.minimal)
        #expect(config.warren.broker.endpoints.first?.tlsCA == "/etc/ssl/certs/ca-certificates.crt")
    }

    @Test func sslCertFileOverridesTheSystemCABundle() throws {
        let config = try ConfigLoader.parse("[broker]\nurl = amqps://h\n" + Self.minimal, file: "w.ini",
                                            environment: ["SSL_CERT_FILE": "/etc/hostname"], systemCABundles: [])
        #expect(config.warren.broker.endpoints.first?.tlsCA == "/etc/hostname")
    }

    @Test func anExplicitTLSCAWins() throws {
        let config = try ConfigLoader.parse("[broker]\nurl = amqps://h\ntls_ca = /etc/warren/ca.pem\n" + Self.minimal, file: "w.ini",
                                            environment: ["SSL_CERT_FILE": "/etc/hostname"])
        #expect(config.warren.broker.endpoints.first?.tlsCA == "/etc/warren/ca.pem")
    }

    @Test func amqpsWithoutTLSCAAndNoSystemBundleIsRefusedAtTheURLLine() {
        func found(_ environment: [String: String]) -> [String] {
            do {
                _ = try ConfigLoader.parse("[log]\nlevel = info\n[broker]\nurl = amqps://u:Zq9x@h\n" + Self.minimal, file: "w.ini",
                                           environment: environment, systemCABundles: ["/nonexistent/bundle.pem"])
                return []
            } catch {
                return error.problems.map(\.description)
            }
        }
        #expect(found([:]) == ["w.ini:4: amqps:// needs a CA to verify the broker and no system CA bundle was found (looked for /nonexistent/bundle.pem); set tls_ca to the CA file that signed the broker's certificate"])
        #expect(found(["SSL_CERT_FILE": "/nonexistent/ssl.pem"]) == ["w.ini:4: amqps:// needs a CA to verify the broker and SSL_CERT_FILE names /nonexistent/ssl.pem, which cannot be read; set tls_ca to the CA file that signed the broker's certificate, or fix SSL_CERT_FILE"])
    }
}

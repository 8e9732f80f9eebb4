import AMQP
import Foundation
import Glibc
import Testing

/// warren against a broker that goes away: every published message is, in
/// the end, processed, or still in its queue. Duplicates are allowed only
/// for what was in flight when the fault struck.
@Suite(.serialized) struct FaultTests {
    /// rabbitmqctl against the test node.
    static func rabbitmqctl(_ arguments: String...) throws {
        guard let directory = TestBroker.brokerDir else {
            Issue.record("WARREN_TEST_BROKER_DIR is not set: run the tests with `make test`")
            throw CancellationError()
        }
        let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: root + "/scripts/broker.sh")
        process.arguments = ["ctl", directory] + arguments
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "rabbitmqctl \(arguments) failed")
    }

    static let ledgerCommand = #"sh -c 'sleep 0.01; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#

    /// Publishes, runs `fault` while warren works, then checks every id.
    func survive(prefetch: Int = 10, heartbeat: String = "5s", url: String? = nil, count: Int = 300,
                 _ fault: (WarrenBinary, String) async throws -> Void) async throws {
        try await withTestQueue { client, queue in
            let ids = (1...count).map { "f-\($0)" }
            try await client.publish(ids: ids, to: queue)
            var config = try warrenConfig(queue: queue, command: Self.ledgerCommand, prefetch: prefetch, concurrency: 4,
                                          extra: "retry_delay = 100ms")
            config = config.replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = \(heartbeat)\nreconnect_min = 100ms\nreconnect_max = 1s")
            if let url { config = config.replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = \(url)") }
            let warren = try WarrenBinary(config: config)
            try await eventually("work started") { warren.lines("finished").count >= 20 }
            try await fault(warren, queue)
            let checker = try await TestClient()
            try await eventually("every message processed", timeout: .seconds(60)) {
                Set(warren.lines("finished")).count == ids.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            let left = try await checker.drain(queue).map(\.id)
            #expect(left.isEmpty, "left in the queue: \(left.prefix(5))")
            #expect(Set(finished) == Set(ids), "lost: \(Set(ids).subtracting(finished).prefix(5))")
            let duplicates = finished.count - Set(finished).count
            #expect(duplicates <= prefetch * 3, "\(duplicates) duplicates; prefetch is \(prefetch)")
            await checker.close()
        }
    }

    @Test func theBrokerClosingEveryConnectionLosesNothing() async throws {
        try await survive { warren, _ in
            try Self.rabbitmqctl("close_all_connections", "test: closing every connection")
            try await eventually("reconnected") { warren.log.contains("reconnecting") && warren.log.components(separatedBy: "NOTICE running").count >= 3 }
        }
    }

    @Test func aBrokerRestartLosesNothing() async throws {
        try await survive { warren, _ in
            try Self.rabbitmqctl("stop_app")
            try await Task.sleep(for: .seconds(1))
            try Self.rabbitmqctl("start_app")
            try await eventually("reconnected", timeout: .seconds(30)) { warren.log.components(separatedBy: "NOTICE running").count >= 3 }
        }
    }

    @Test func aSilentNetworkIsDetectedByHeartbeatsAndRecovered() async throws {
        let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
        defer { proxy.stop() }
        let url = "amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f"
        try await survive(heartbeat: "1s", url: url) { warren, _ in
            let clock = ContinuousClock()
            let silenced = clock.now
            proxy.mode = .blackHole
            try await eventually("the silence was noticed", timeout: .seconds(10)) { warren.log.contains("connection to the broker lost") }
            let detection = clock.now - silenced
            #expect(detection < .seconds(4), "a silent connection was noticed after \(detection); heartbeat is 1 s")
            proxy.cutAll()
            proxy.mode = .pass
            try await eventually("reconnected", timeout: .seconds(20)) { warren.log.components(separatedBy: "NOTICE running").count >= 3 }
        }
    }

    @Test func aResetConnectionIsRecovered() async throws {
        let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
        defer { proxy.stop() }
        try await survive(url: "amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f") { warren, _ in
            proxy.cutAll()
            try await eventually("reconnected", timeout: .seconds(20)) { warren.log.components(separatedBy: "NOTICE running").count >= 3 }
        }
    }

    /// Guarantee 6: a handler still running when the connection dies finishes,
    /// but its ack belongs to the dead channel. Sent on the new one, it would
    /// ack whatever holds the same tag there (a message never processed),
    /// or close the channel with PRECONDITION_FAILED.
    @Test func anOutcomeFromADeadConnectionIsNeverSentOnTheNewOne() async throws {
        try await withTestQueue { client, queue in
            let others = (1...5).map { "o-\($0)" }
            try await client.publish(ids: ["long"] + others, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/started; [ "$WARREN_MESSAGE_ID" = long ] && sleep 2; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 1, concurrency: 1)
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 500ms"))
            try await eventually("the long handler runs") { warren.lines("started") == ["long"] }
            try Self.rabbitmqctl("close_all_connections", "test: the long handler outlives its channel")
            try await eventually("everything processed", timeout: .seconds(30)) {
                Set(warren.lines("finished")) == Set(["long"] + others)
            }
            let checker = try await TestClient()
            try await eventually("the queue is empty") { try await checker.count(queue) == 0 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            for id in others { #expect(finished.filter { $0 == id }.count == 1, "\(id) in \(finished)") }
            #expect(finished.filter { $0 == "long" }.count == 2, "redelivered once after the loss: \(finished)")
            #expect(!warren.log.contains("closed the consumer's channel"), "a stale tag reached the new channel")
            #expect(try await checker.drain(queue).isEmpty)
            await checker.close()
        }
    }

    /// A failed attempt whose connection died meanwhile: the broker
    /// redelivers the original, so a retry copy as well would make two.
    @Test func aFailureSettledAfterItsConnectionDiedMakesNoRetryCopy() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["failing"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'echo run >> {dir}/started; sleep 2; echo run >> {dir}/finished; exit 1'"#,
                prefetch: 1, concurrency: 1, extra: "retry_delay = 60s")
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 500ms"))
            try await eventually("the handler runs") { warren.lines("started").count == 1 }
            try Self.rabbitmqctl("close_all_connections", "test: the failing handler outlives its channel")
            try await eventually("it ran again after the redelivery", timeout: .seconds(30)) { warren.lines("finished").count == 2 }
            let checker = try await TestClient()
            try await eventually("its second failure is retried") { try await checker.count(queue + ".retry.1") >= 1 }
            try await Task.sleep(for: .milliseconds(500))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await checker.count(queue + ".retry.1") == 1, "one copy per message, not one per run")
            #expect(try await checker.count(queue) == 0)
            await checker.close()
        }
    }

    @Test func killingWarrenWithSigkillLosesNothing() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...300).map { "k-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let config = try warrenConfig(queue: queue, command: Self.ledgerCommand, prefetch: 10, concurrency: 4)
            let first = try WarrenBinary(config: config)
            try await eventually("work started") { first.lines("finished").count >= 30 }
            first.signal(SIGKILL)
            _ = await first.waitForExit()
            let done = first.lines("finished")
            let second = try WarrenBinary(config: config)
            try await eventually("everything processed", timeout: .seconds(60)) {
                Set(done + second.lines("finished")).count == ids.count
            }
            second.signal(SIGTERM)
            #expect(await second.waitForExit() == 0)
            #expect(try await client.count(queue) == 0)
            let all = done + second.lines("finished")
            #expect(all.count - Set(all).count <= 10 + 4, "duplicates beyond what was in flight")
        }
    }

    @Test func aDeletedQueueIsNoticedAndConsumedAgainWhenItIsBack() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledgerCommand)
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 500ms"))
            try await eventually("consuming") { warren.log.contains("NOTICE running") }
            try await client.connection.deleteQueue(queue, on: 1)
            try await eventually("the cancel was noticed") { warren.log.contains("the broker cancelled the consumer") }
            // declare = true: warren declares the queue again and consumes from it.
            try await eventually("consuming again") { warren.log.components(separatedBy: "INFO consuming").count >= 3 }
            try await client.publish(ids: ["after"], to: queue)
            try await eventually("the new message was processed") { warren.lines("finished") == ["after"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
        }
    }

    @Test func aDeadFirstBrokerURLFailsOverToTheNext() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["fo"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledgerCommand)
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:guest@127.0.0.1:1/%2f \(TestBroker.url)"))
            try await eventually("processed through the second URL") { warren.lines("finished") == ["fo"] }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(warren.log.contains("trying the next broker URL"))
        }
    }

    @Test func startingWithoutABrokerRetriesAndAStopExitsAtOnce() async throws {
        let warren = try WarrenBinary(config: try warrenConfig(queue: "test.nobroker", command: "true")
            .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:secretpw@127.0.0.1:1/%2f")
            .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 200ms\nreconnect_max = 1s"))
        try await eventually("it retried more than once") { warren.log.components(separatedBy: "cannot connect to the broker; retrying").count >= 3 }
        let clock = ContinuousClock()
        let signalled = clock.now
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0)
        #expect(clock.now - signalled < .seconds(2))
        #expect(!warren.log.contains("secretpw"), "the password reached the log")
        #expect(warren.log.contains("retry_in="))
    }

    @Test func aStopWhileALoginHangsExitsWithoutWaitingForTheConnectTimeout() async throws {
        // The proxy accepts the TCP connection and then moves no byte: the
        // login waits for the broker's greeting until its 10 s timeout.
        let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
        defer { proxy.stop() }
        proxy.mode = .blackHole
        let warren = try WarrenBinary(config: try warrenConfig(queue: "test.hanging-login", command: "true")
            .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f"))
        try await eventually("warren is starting") { warren.log.contains("starting") }
        try await Task.sleep(for: .seconds(1))
        let clock = ContinuousClock()
        let signalled = clock.now
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0, "\(warren.log)")
        let stopTime = clock.now - signalled
        #expect(stopTime < .seconds(3), "the stop took \(stopTime): it waited for the login's timeout")
        #expect(!warren.log.contains("connected"), "the black hole cannot have let a login through")
    }

    @Test func aStopWhileTheBrokerIsSilentEndsWithinItsBoundAndExitsCleanly() async throws {
        let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
        defer { proxy.stop() }
        try await withTestQueue { _, queue in
            // Heartbeats of 30 s: the silence is not noticed before the stop must end.
            let config = try warrenConfig(queue: queue, command: Self.ledgerCommand, grace: "2s", killAfter: "1s")
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f")
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 30s")
            let warren = try WarrenBinary(config: config)
            try await eventually("running") { warren.log.contains("NOTICE running") }
            proxy.mode = .blackHole
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGTERM)
            let code = await warren.waitForExit()
            let stopTime = clock.now - signalled
            #expect(code == 0, "\(warren.log)")
            #expect(stopTime < .seconds(2 + 1 + 10), "the stop took \(stopTime)")
            #expect(warren.log.contains("did not answer"), "\(warren.log)")
        }
    }
}

import AMQP
import Foundation
import Logging
import Synchronization
import Testing
import Warren

/// Where handler code runs: on the I/O thread of the live connection,
/// on the standby thread between connections, never lost in between.
@Suite(.serialized) struct LoopExecutorTests {
    /// The kernel's name of the calling thread.
    static func threadName() -> String {
        (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
    }

    static func onExecutor(_ executor: LoopExecutor) async -> String {
        await Task(executorPreference: executor) { threadName() }.value
    }

    @Test func jobsRunOnTheConnectionsIOThreadWhileItLivesAndOnStandbyOtherwise() async throws {
        let executor = try LoopExecutor(name: "test-standby")
        #expect(await Self.onExecutor(executor) == "test-standby")
        let connection = try await AMQPConnection.connect(try TestBroker.options, executor: executor) { _ in }
        #expect(await Self.onExecutor(executor) == "warren-amqp-io")
        await connection.close()
        #expect(await Self.onExecutor(executor) == "test-standby")

        // A second connection hosts it in turn; a lost one hands it back.
        let second = try await AMQPConnection.connect(try TestBroker.options, executor: executor) { _ in }
        #expect(await Self.onExecutor(executor) == "warren-amqp-io")
        second.closeNow()
        await second.closed()
        #expect(await Self.onExecutor(executor) == "test-standby")

        executor.stop()
        // Once the standby thread is gone, a late job still runs (on the
        // global executor): it is never dropped.
        try await eventually("the standby thread ended") { await Self.onExecutor(executor) != "test-standby" }
        #expect(await Self.onExecutor(executor) != "warren-amqp-io")
    }

    @Test func inProcessHandlersRunOnTheIOThreadAndSurviveAReconnect() async throws {
        try await withTestQueue { client, queue in
            let threads = Mutex<[String: String]>([:])
            let handler = ClosureHandler { message in
                threads.withLock { $0[message.logID] = Self.threadName() }
                return .ack
            }
            var endpoint = try TestBroker.options
            endpoint.heartbeat = 30
            let settings = WarrenSettings(
                broker: BrokerSettings(endpoints: [endpoint], reconnectMin: .milliseconds(100), reconnectMax: .milliseconds(200)),
                consumers: [ConsumerSettings(name: "test", queue: queue, prefetch: 10, concurrency: 2)])
            let runtime = WarrenRuntime(settings: settings, handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await client.publish(ids: ["before"], to: queue)
            try await eventually("the first message handled") { threads.withLock { $0["before"] } != nil }
            try FaultTests.rabbitmqctl("close_all_connections", "test: handlers move to the next connection")
            let publisher = try await TestClient()
            try await publisher.publish(ids: ["after"], to: queue)
            try await eventually("the second message handled", timeout: .seconds(20)) { threads.withLock { $0["after"] } != nil }
            runtime.stop()
            #expect(await exit == 0)
            #expect(threads.withLock { $0 } == ["before": "warren-amqp-io", "after": "warren-amqp-io"])
            #expect(try await publisher.count(queue) == 0)
            _ = try? await publisher.connection.deleteQueue(queue, on: 1)
            await publisher.close()
        }
    }

    @Test func aHandlerThatBlocksTheIOThreadIsNamedInTheLogAndStillSettled() async throws {
        try await withTestQueue { client, queue in
            let logs = CapturedLogs()
            let handler = ClosureHandler { _ in
                usleep(400_000)  // the mistake this warning is for
                return .ack
            }
            let settings = WarrenSettings(broker: BrokerSettings(endpoints: [try TestBroker.options]),
                                          consumers: [ConsumerSettings(name: "test", queue: queue, prefetch: 10, concurrency: 1)])
            let runtime = WarrenRuntime(settings: settings, handlers: ["test": handler], logger: logs.logger)
            async let exit = runtime.runUntilStopped()
            try await client.publish(ids: ["blocker"], to: queue)
            try await eventually("the warning") {
                logs.lines.contains { $0.contains("held the I/O thread without awaiting") }
            }
            runtime.stop()
            #expect(await exit == 0)
            #expect(try await client.count(queue) == 0, "acked, not back in the queue")
        }
    }
}

extension LoopExecutorTests {
    /// The systemd watchdog pings only while `isResponsive` holds: a loop
    /// held by a blocking handler must stop them, and recover after.
    @Test func aBlockedIOLoopIsReportedUnresponsiveUntilItGoesRoundAgain() async throws {
        try await withTestQueue { client, queue in
            let blocking = Atomic<Bool>(false)
            let handler = ClosureHandler { _ in
                blocking.store(true, ordering: .sequentiallyConsistent)
                usleep(1_500_000)
                blocking.store(false, ordering: .sequentiallyConsistent)
                return .ack
            }
            let settings = WarrenSettings(broker: BrokerSettings(endpoints: [try TestBroker.options]),
                                          consumers: [ConsumerSettings(name: "test", queue: queue, prefetch: 1, concurrency: 1)])
            let runtime = WarrenRuntime(settings: settings, handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("running") { runtime.isReady }
            #expect(runtime.isResponsive(within: 500))
            try await client.publish(ids: ["wedge"], to: queue)
            try await eventually("the handler holds the loop") { blocking.load(ordering: .sequentiallyConsistent) }
            try await eventually("reported unresponsive", timeout: .seconds(2)) { !runtime.isResponsive(within: 500) }
            try await eventually("responsive again") { runtime.isResponsive(within: 500) }
            runtime.stop()
            #expect(await exit == 0)
            #expect(try await client.count(queue) == 0)
        }
    }
}

/// Every log line, as "LEVEL message key=value ...", for tests that check what an operator would read.
final class CapturedLogs: Sendable {
    private let captured = Mutex<[String]>([])
    var lines: [String] { captured.withLock { $0 } }

    var logger: Logger {
        Logger(label: "test") { _ in Handler(sink: self) }
    }

    fileprivate func append(_ line: String) { captured.withLock { $0.append(line) } }

    struct Handler: LogHandler {
        let sink: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            sink.append("\(event.level) \(event.message) \(fields)")
        }
    }
}

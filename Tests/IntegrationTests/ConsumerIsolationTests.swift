import AMQP
import Logging
import Synchronization
import Testing
import Warren

/// One consumer in trouble (its queue deleted, its topology refused) never
/// takes another consumer's channel, connection or messages with it.
@Suite(.serialized) struct ConsumerIsolationTests {
    final class Ledger: Sendable {
        private let ids = Mutex<[String]>([])
        func add(_ id: String) { ids.withLock { $0.append(id) } }
        var all: [String] { ids.withLock { $0 } }
    }

    final class States: Sendable {
        private let seen = Mutex<[Lifecycle.State]>([])
        func record(_ state: Lifecycle.State) { seen.withLock { $0.append(state) } }
        var runningCount: Int {
            seen.withLock { $0.filter { if case .running = $0 { return true }; return false }.count }
        }
    }

    func settings(_ consumers: [ConsumerSettings]) throws -> WarrenSettings {
        WarrenSettings(broker: BrokerSettings(endpoints: [try TestBroker.options], reconnectMin: .milliseconds(1),
                                              reconnectMax: .milliseconds(2)),
                       shutdown: ShutdownSettings(gracePeriod: .seconds(10), killAfter: .seconds(1)),
                       consumers: consumers)
    }

    func recording(_ ledger: Ledger, delay: Duration = .zero) -> ClosureHandler {
        ClosureHandler { message in
            if delay > .zero { try? await Task.sleep(for: delay) }
            ledger.add(message.delivery.properties.messageId ?? "?")
            return .ack
        }
    }

    @Test func failedResubscribesNeverTakeAHealthyConsumersChannel() async throws {
        try await withTestQueue { client, queueA in
            let queueB = queueA + ".b"
            try await client.connection.declareQueue(queueB, on: 1)
            try await client.connection.declareQueue(queueB + ".dead", on: 1)
            let ledgerA = Ledger()
            let logs = CapturedLogs()
            let runtime = WarrenRuntime(
                settings: try settings([
                    ConsumerSettings(name: "a", queue: queueA, maxAttempts: 1),
                    // Its queue is deleted below and, with declare = false, every re-subscribe fails.
                    ConsumerSettings(name: "b", queue: queueB, maxAttempts: 1, declare: false),
                ]),
                handlers: ["a": recording(ledgerA), "b": recording(Ledger())], logger: logs.logger)
            async let exit = runtime.runUntilStopped()
            try await eventually("both consume") { logs.lines.filter { $0.contains("consuming") }.count == 2 }
            try await client.connection.deleteQueue(queueB, on: 1)
            // Past the old wrap-around at 1000 channel numbers.
            try await eventually("1100 failed re-subscribes", timeout: .seconds(60)) {
                logs.lines.filter { $0.contains("subscribing again failed") }.count >= 1100
            }
            let ids = (1...20).map { "a-\($0)" }
            try await client.publish(ids: ids, to: queueA)
            try await eventually("consumer a handled every message") { Set(ledgerA.all) == Set(ids) }
            runtime.stop()
            #expect(await exit == 0)
            #expect(ledgerA.all.count == ids.count, "a message of consumer a ran twice")
            #expect(!logs.lines.contains { $0.contains("consumer=a") && $0.contains("closed the consumer's channel") })
            #expect(try await client.count(queueA) == 0)
            for name in [queueB, queueB + ".dead"] { _ = try? await client.connection.deleteQueue(name, on: 1) }
        }
    }

    @Test func usedUpChannelNumbersMakeANewConnectionAndEveryConsumerConsumesAgain() async throws {
        try await withTestQueue { client, queueA in
            let queueB = queueA + ".b"
            try await client.connection.declareQueue(queueB, on: 1)
            let ledgerB = Ledger()
            let logs = CapturedLogs()
            let states = States()
            var settings = try settings([
                ConsumerSettings(name: "a", queue: queueA, maxAttempts: 1),
                ConsumerSettings(name: "b", queue: queueB, maxAttempts: 1),
            ])
            settings.channelLimit = 3
            let runtime = WarrenRuntime(settings: settings, handlers: ["a": recording(Ledger()), "b": recording(ledgerB)],
                                        logger: logs.logger, observer: { states.record($0) })
            async let exit = runtime.runUntilStopped()
            try await eventually("both consume") { logs.lines.filter { $0.contains("consuming") }.count == 2 }
            // Each deletion cancels b; it re-declares and consumes on a new number: 3, then none is left.
            for round in 1...2 {
                try await client.connection.deleteQueue(queueB, on: 1)
                try await eventually("b consumes again (\(round))") {
                    logs.lines.filter { $0.contains("consuming") }.count >= 2 + round
                }
            }
            try await eventually("a new connection, with both consumers") {
                states.runningCount >= 2 && logs.lines.filter { $0.contains("consuming") }.count >= 5
            }
            #expect(logs.lines.contains { $0.contains("every consuming channel number") })
            try await client.publish(ids: ["b-1", "b-2"], to: queueB)
            try await eventually("b handles its messages") { Set(ledgerB.all) == ["b-1", "b-2"] }
            runtime.stop()
            #expect(await exit == 0)
            for name in [queueB, queueB + ".dead"] { _ = try? await client.connection.deleteQueue(name, on: 1) }
        }
    }

    @Test func aBrokenQueueAfterAReconnectLeavesTheOtherConsumersWorking() async throws {
        try await withTestQueue { client, queueA in
            let queueB = queueA + ".b"
            let ledgerA = Ledger()
            let logs = CapturedLogs()
            let states = States()
            let runtime = WarrenRuntime(
                settings: try settings([
                    ConsumerSettings(name: "a", queue: queueA, maxAttempts: 1),
                    ConsumerSettings(name: "b", queue: queueB, maxAttempts: 1),
                ]),
                handlers: ["a": recording(ledgerA, delay: .milliseconds(50)), "b": recording(Ledger())],
                logger: logs.logger, observer: { states.record($0) })
            async let exit = runtime.runUntilStopped()
            try await eventually("running") { states.runningCount == 1 }
            // b's dead-letter queue comes back with other arguments: b's declare is refused from now on.
            try await client.connection.deleteQueue(queueB + ".dead", on: 1)
            try await client.connection.declareQueue(queueB + ".dead", on: 1,
                                                     arguments: FieldTable([("x-max-length", .int64(1))]))
            await client.close()
            try FaultTests.rabbitmqctl("close_all_connections", "test: a reconnect with a broken queue")
            let checker = try await TestClient()
            try await eventually("a consumes again after the reconnect") {
                logs.lines.filter { $0.contains("consumer=a") && $0.contains("consuming") }.count >= 2
            }
            let ids = (1...30).map { "a-\($0)" }
            try await checker.publish(ids: ids, to: queueA)
            try await eventually("consumer a handled every message") { Set(ledgerA.all) == Set(ids) }
            #expect(logs.lines.contains { $0.contains("consumer=b") && $0.contains("setting up the consumer failed") })
            #expect(states.runningCount == 1, "not running again while b cannot consume")
            runtime.stop()
            #expect(await exit == 0)
            #expect(ledgerA.all.count == ids.count, "a message of consumer a ran twice")
            #expect(try await checker.count(queueA) == 0)
            for name in [queueA, queueB, queueB + ".dead"] { _ = try? await checker.connection.deleteQueue(name, on: 1) }
            await checker.close()
        }
    }

    @Test func warrenIsNotRunningUntilEveryConsumerConsumesWhileTheOthersWorkMeanwhile() async throws {
        try await withTestQueue { client, queueA in
            // Another connection holds queue b exclusively: declaring it is
            // refused (405) until that connection goes.
            let queueB = queueA + ".b"
            let holder = try await TestClient()
            try await holder.connection.declareQueue(queueB, on: 1, durable: false, exclusive: true)
            let ledgerA = Ledger()
            let logs = CapturedLogs()
            let states = States()
            let runtime = WarrenRuntime(
                settings: try settings([
                    ConsumerSettings(name: "a", queue: queueA, maxAttempts: 1),
                    ConsumerSettings(name: "b", queue: queueB, maxAttempts: 1),
                ]),
                handlers: ["a": recording(ledgerA), "b": recording(Ledger())], logger: logs.logger,
                observer: { states.record($0) })
            async let exit = runtime.runUntilStopped()
            try await eventually("b's set-up refused more than once") {
                logs.lines.filter { $0.contains("consumer=b") && $0.contains("failed") }.count >= 3
            }
            try await client.publish(ids: ["a-1", "a-2"], to: queueA)
            try await eventually("a works meanwhile") { Set(ledgerA.all) == ["a-1", "a-2"] }
            #expect(states.runningCount == 0, "running (READY=1) while consumer b does not consume")
            #expect(!runtime.isReady)
            await holder.close()
            try await eventually("running once b consumes") { states.runningCount == 1 && runtime.isReady }
            runtime.stop()
            #expect(await exit == 0)
            _ = try? await client.connection.deleteQueue(queueB, on: 1)
        }
    }
}

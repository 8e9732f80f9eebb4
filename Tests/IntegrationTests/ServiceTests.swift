import AMQP
import Logging
import ServiceLifecycle
import Synchronization
import Testing
import Warren

/// warren's consumers embedded in a program's own `ServiceGroup`, beside
/// another service, with one graceful shutdown.
@Suite(.serialized) struct ServiceTests {
    final class Ledger: Sendable {
        private let state = Mutex<(started: [String], finished: [String])>(([], []))
        func start(_ id: String) { state.withLock { $0.started.append(id) } }
        func finish(_ id: String) { state.withLock { $0.finished.append(id) } }
        var started: [String] { state.withLock { $0.started } }
        var finished: [String] { state.withLock { $0.finished } }
    }

    /// Stands in for the program's HTTP server: runs until the group shuts down.
    final class Neighbour: Service {
        let stopped = Mutex(false)
        func run() async throws {
            try? await gracefulShutdown()
            stopped.withLock { $0 = true }
        }
    }

    func settings(queue: String, declare: Bool = true) throws -> WarrenSettings {
        WarrenSettings(broker: BrokerSettings(endpoints: [try TestBroker.options]),
                       shutdown: ShutdownSettings(gracePeriod: .seconds(30), killAfter: .seconds(1)),
                       consumers: [ConsumerSettings(name: "test", queue: queue, prefetch: 20, concurrency: 2, declare: declare)])
    }

    func slowHandler(_ ledger: Ledger) -> ClosureHandler {
        ClosureHandler { message in
            ledger.start(message.logID)
            try? await Task.sleep(for: .milliseconds(400))
            if Task.isCancelled { return .retry(Failure(reason: "cancelled")) }
            ledger.finish(message.logID)
            return .ack
        }
    }

    @Test func theGroupsGracefulShutdownDrainsTheConsumersAndLosesNoMessage() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...20).map { "s\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let runtime = WarrenRuntime(settings: try settings(queue: queue), handlers: ["test": slowHandler(ledger)],
                                        logger: Logger(label: "test"))
            let neighbour = Neighbour()
            // The runtime listed last shuts down first, while the neighbour still serves.
            let group = ServiceGroup(configuration: .init(services: [neighbour, runtime], logger: Logger(label: "test")))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await eventually("two handlers running") { ledger.started.count >= 2 }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            #expect(neighbour.stopped.withLock { $0 }, "one shutdown for both services")
            let left = try await client.drain(queue).map(\.id)
            #expect(Set(ledger.finished).isDisjoint(with: left), "finished work was acked")
            #expect(Set(ledger.finished).union(left) == Set(ids), "nothing lost")
            #expect(ledger.finished.count == Set(ledger.finished).count, "nothing ran twice")
            #expect(Set(ledger.started) == Set(ledger.finished), "the drain let every started handler finish")
            #expect(ledger.finished.count <= 4, "no handler started after the shutdown began")
        }
    }

    @Test func cancellingTheGroupStopsAtOnceAndRequeuesTheRunningMessages() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "c\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                try? await Task.sleep(for: .seconds(60))
                if Task.isCancelled { return .retry(Failure(reason: "cancelled")) }
                ledger.finish(message.logID)
                return .ack
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue), handlers: ["test": handler],
                                        logger: Logger(label: "test"))
            let group = ServiceGroup(configuration: .init(services: [Neighbour(), runtime], logger: Logger(label: "test")))
            let clock = ContinuousClock()
            var cancelledAt = clock.now
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                try await eventually("two handlers running") { ledger.started.count >= 2 }
                cancelledAt = clock.now
                tasks.cancelAll()
                while let _ = try? await tasks.next() {}
            }
            #expect(clock.now - cancelledAt < .seconds(10), "a quit, not a 30 s drain")
            #expect(ledger.finished.isEmpty)
            let left = try await client.drain(queue).map(\.id)
            #expect(Set(left) == Set(ids), "every message back in the queue, none acked, none lost")
        }
    }

    @Test func aRuntimeThatCannotStartFailsTheGroupWithItsExitCode() async throws {
        try await withTestQueue { _, queue in
            let runtime = WarrenRuntime(settings: try settings(queue: queue + ".missing", declare: false),
                                        handlers: ["test": ClosureHandler { _ in .ack }], logger: Logger(label: "test"))
            let group = ServiceGroup(configuration: .init(services: [Neighbour(), runtime], logger: Logger(label: "test")))
            let error = await #expect(throws: WarrenRuntime.Stopped.self) { try await group.run() }
            #expect(error?.exitCode == 1)
        }
    }
}

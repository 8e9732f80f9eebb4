import AMQP
import Logging
import ServiceLifecycle
import Synchronization
import Testing
import Warren

/// warren's consumers embedded in a program's own `ServiceGroup`, beside
/// another service, with one graceful shutdown.
@Suite(.serialized) struct ServiceTests {
    typealias Ledger = WorkerPoolTests.Ledger

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

    @Test func theGroupsGracefulShutdownDrainsTheConsumersAndLosesNoMessage() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...20).map { "s\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let runtime = WarrenRuntime(settings: try settings(queue: queue), handlers: ["test": ledger.handler(working: .milliseconds(400))],
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
            // Two running when the shutdown began, two more at most in the instant before.
            ledger.expectDrained(ids, left: try await client.drain(queue).map(\.id), atMost: 4)
        }
    }

    @Test func cancellingTheGroupStopsAtOnceAndRequeuesTheRunningMessages() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "c\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let runtime = WarrenRuntime(settings: try settings(queue: queue), handlers: ["test": ledger.handler(working: .seconds(60))],
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

    /// Its workers end the moment it starts (there are none): that must
    /// not read as a drain that already happened, nor crash the program.
    @Test func aRuntimeWithoutConsumersRunsUntilTheGroupShutsDownAndEndsCleanly() async throws {
        var settings = try settings(queue: "unused")
        settings.consumers = []
        let runtime = WarrenRuntime(settings: settings, logger: Logger(label: "test"))
        let group = ServiceGroup(configuration: .init(services: [Neighbour(), runtime], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await eventually("running") { runtime.state == .running }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(runtime.state == .stopped(exitCode: 0))
    }
}

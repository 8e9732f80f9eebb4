import AMQP
import Logging
import Synchronization
import Testing
import Warren

/// The runtime with in-process handlers against the real broker.
@Suite(.serialized) struct WorkerPoolTests {
    final class Ledger: Sendable {
        private let state = Mutex<(started: [String], finished: [String])>(([], []))
        func start(_ id: String) { state.withLock { $0.started.append(id) } }
        func finish(_ id: String) { state.withLock { $0.finished.append(id) } }
        var started: [String] { state.withLock { $0.started } }
        var finished: [String] { state.withLock { $0.finished } }

        /// A handler that records its start, works for `duration`, and is
        /// finished (and acks) only if it was not cancelled meanwhile.
        func handler(working duration: Duration) -> ClosureHandler {
            ClosureHandler { message in
                self.start(message.logID)
                try? await Task.sleep(for: duration)
                if Task.isCancelled { return .retry(Failure(reason: "cancelled")) }
                self.finish(message.logID)
                return .ack
            }
        }

        /// A drain's accounting, message by message: what finished was acked,
        /// the rest is back in the queue, nothing ran twice, every started
        /// handler finished, and at most `atMost` started at all.
        func expectDrained(_ ids: [String], left: [String], atMost: Int, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(Set(finished).isDisjoint(with: left), "finished work was acked", sourceLocation: sourceLocation)
            #expect(Set(finished).union(left) == Set(ids), "nothing lost", sourceLocation: sourceLocation)
            #expect(finished.count == Set(finished).count, "nothing ran twice", sourceLocation: sourceLocation)
            #expect(Set(started) == Set(finished), "every started handler finished within the grace period",
                    sourceLocation: sourceLocation)
            #expect(finished.count <= atMost, "no handler started after the stop", sourceLocation: sourceLocation)
        }
    }

    final class States: Sendable {
        private let seen = Mutex<[Lifecycle.State]>([])
        func record(_ state: Lifecycle.State) { seen.withLock { $0.append(state) } }
        var all: [Lifecycle.State] { seen.withLock { $0 } }
    }

    func settings(queue: String, prefetch: UInt16 = 10, concurrency: Int = 2, heartbeat: Int = 30,
                  grace: Duration = .seconds(30), timeout: Duration? = nil) throws -> WarrenSettings {
        var endpoint = try TestBroker.options
        endpoint.heartbeat = heartbeat
        return WarrenSettings(broker: BrokerSettings(endpoints: [endpoint]),
                              shutdown: ShutdownSettings(gracePeriod: grace, killAfter: .seconds(1)),
                              consumers: [ConsumerSettings(name: "test", queue: queue, prefetch: prefetch,
                                                           concurrency: concurrency, timeout: timeout)])
    }

    @Test func heartbeatsKeepTheConnectionAliveWhileAHandlerRunsForTenSeconds() async throws {
        try await withTestQueue { client, queue in
            let ledger = Ledger()
            let states = States()
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                try? await Task.sleep(for: .seconds(10))
                ledger.finish(message.logID)
                return .ack
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue, heartbeat: 2), handlers: ["test": handler],
                                        logger: Logger(label: "test"), observer: { states.record($0) })
            try await client.publish(ids: ["long"], to: queue)
            async let exit = runtime.runUntilStopped()
            try await eventually("the handler finished", timeout: .seconds(30)) { ledger.finished.count == 1 }
            runtime.stop()
            #expect(await exit == 0)
            #expect(ledger.started == ["long"], "one delivery only: a dropped connection would have redelivered it")
            #expect(!states.all.contains { if case .reconnecting = $0 { return true }; return false }, "the connection never dropped")
            #expect(try await client.count(queue) == 0, "acked exactly once")
        }
    }

    @Test func stopReleasesUnstartedDeliveriesAndAcksTheRunningOnes() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...20).map { "m\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let runtime = WarrenRuntime(settings: try settings(queue: queue, prefetch: 20, concurrency: 2),
                                        handlers: ["test": ledger.handler(working: .milliseconds(400))], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("two handlers running") { ledger.started.count >= 2 }
            runtime.stop()
            #expect(await exit == 0)
            ledger.expectDrained(ids, left: try await client.drain(queue).map(\.id), atMost: 4)
        }
    }

    @Test func graceExpiryCancelsInProcessHandlersAndRequeuesTheirMessages() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["stuck"], to: queue)
            let ledger = Ledger()
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                try? await Task.sleep(for: .seconds(60))
                return .ack  // finished "successfully", but too late: must not be acked
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue, grace: .milliseconds(500)),
                                        handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("the handler started") { ledger.started.count == 1 }
            let clock = ContinuousClock()
            let stoppedAt = clock.now
            runtime.stop()
            #expect(await exit == 0)
            #expect(clock.now - stoppedAt < .seconds(5))
            let left = try await client.drain(queue)
            #expect(left.map(\.id) == ["stuck"])
            #expect(left.first?.redelivered == true)
        }
    }

    @Test func aHandlerPastItsTimeoutIsCancelledAndItsMessageRetried() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["slow", "fast"], to: queue)
            let ledger = Ledger()
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                if message.logID == "slow" && message.attempt == 1 {
                    try? await Task.sleep(for: .seconds(60))
                    return .ack
                }
                ledger.finish(message.logID)
                return .ack
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue, timeout: .milliseconds(300)),
                                        handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("both messages done, the slow one on its second attempt") {
                Set(ledger.finished) == ["slow", "fast"]
            }
            runtime.stop()
            #expect(await exit == 0)
            #expect(ledger.started.filter { $0 == "slow" }.count == 2)
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func quitTerminatesRunningHandlersAndRequeuesEverything() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "q\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                try? await Task.sleep(for: .seconds(60))
                return .ack
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue, prefetch: 6, concurrency: 2),
                                        handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            try await eventually("handlers running") { ledger.started.count == 2 }
            runtime.quit()
            #expect(await exit == 0)
            #expect(Set(try await client.drain(queue).map(\.id)) == Set(ids))
        }
    }

    @Test func inFlightIsWhatWaitsForAWorkerPlusWhatRunsAskedAtAnyMoment() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...6).map { "f\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledger = Ledger()
            let gate = Mutex(false)
            let handler = ClosureHandler { message in
                ledger.start(message.logID)
                while !gate.withLock({ $0 }) && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
                ledger.finish(message.logID)
                return .ack
            }
            let runtime = WarrenRuntime(settings: try settings(queue: queue, prefetch: 6, concurrency: 2),
                                        handlers: ["test": handler], logger: Logger(label: "test"))
            async let exit = runtime.runUntilStopped()
            // No tick to wait for: 2 running and 4 waiting, as soon as they arrived.
            try await eventually("six delivered, two running") { ledger.started.count == 2 && runtime.inFlight == 6 }
            #expect(runtime.state == .running)
            gate.withLock { $0 = true }
            try await eventually("every message settled, nothing in flight") { ledger.finished.count == 6 && runtime.inFlight == 0 }
            runtime.stop()
            #expect(await exit == 0)
            #expect(runtime.state == .stopped(exitCode: 0))
            #expect(try await client.count(queue) == 0)
        }
    }
}

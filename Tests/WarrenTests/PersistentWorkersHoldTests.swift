import Synchronization
import Testing
@testable import Warren

/// When a persistent consumer stops consuming: only while every slot's
/// worker fails before it ever says ready, read as a level (the order of
/// two notices never matters).
@Suite struct PersistentWorkersHoldTests {
    @Test func aConsumerHoldsOnlyWhileEverySlotFailsBeforeReady() throws {
        let workers = PersistentWorkers(argv: ["/bin/true"], killAfter: .seconds(1), supervisor: try ProcessSupervisor(),
                                        backoff: Backoff(minimum: .seconds(1), maximum: .seconds(2)), slots: 2)
        let pokes = Atomic(0)
        workers.onHold { pokes.add(1, ordering: .relaxed) }
        workers.failing(0, "exited before it was ready", beforeReady: true)
        #expect(!workers.isHolding, "one slot of two")
        workers.failing(1, "exited before finishing a message", beforeReady: false)
        #expect(!workers.isHolding, "a worker that was ready may work next time")
        #expect(workers.problem != nil, "/readyz still says why")
        workers.failing(1, "not ready within startup_timeout", beforeReady: true)
        #expect(workers.isHolding)
        workers.failing(0, nil, beforeReady: false)
        #expect(!workers.isHolding, "one worker ready: consume again")
        #expect(pokes.load(ordering: .relaxed) == 2, "told of each change, and only then")
    }
}

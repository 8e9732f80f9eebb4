import AMQP
import Glibc
import Testing

/// The one inbox of every thread that sleeps in poll(2): commands in order,
/// one wake-up byte per burst, nothing accepted once closed.
@Suite struct WakeableInboxTests {
    /// Wake-up bytes waiting in the pipe, read without blocking.
    func pendingBytes(_ inbox: WakeableInbox<Int>) -> Int {
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { read(inbox.readFD, $0.baseAddress!, $0.count) }
        return max(count, 0)
    }

    @Test func aBurstOfCommandsCostsOneWakeUpAndArrivesInOrder() throws {
        let inbox = try WakeableInbox<Int>()
        for value in 1...100 { #expect(inbox.push(value)) }
        #expect(inbox.hasCommands)
        var taken: [Int] = []
        inbox.takeAll(into: &taken, drainWakeUp: false)
        #expect(taken == Array(1...100))
        #expect(pendingBytes(inbox) == 1)
        #expect(!inbox.hasCommands)
    }

    @Test func afterTakingEverythingTheNextCommandWakesAgain() throws {
        let inbox = try WakeableInbox<Int>()
        inbox.push(1)
        #expect(inbox.takeAll() == [1])
        #expect(pendingBytes(inbox) == 0, "takeAll empties the pipe")
        inbox.push(2)
        #expect(pendingBytes(inbox) == 1)
    }

    @Test func theOwningThreadQueuesWithoutWakingItself() throws {
        let inbox = try WakeableInbox<Int>()
        inbox.push(1, wake: false)
        #expect(pendingBytes(inbox) == 0)
        #expect(inbox.takeAll() == [1])
    }

    @Test func aWakeUpWithoutACommandIsCoalescedToo() throws {
        let inbox = try WakeableInbox<Int>()
        inbox.wake()
        inbox.wake()
        inbox.push(3)
        #expect(pendingBytes(inbox) == 1)
    }

    @Test func aClosedInboxRefusesCommandsReturnsTheLeftAndWakesItsThread() throws {
        let inbox = try WakeableInbox<Int>()
        inbox.push(1, wake: false)
        inbox.push(2, wake: false)
        #expect(inbox.close() == [1, 2])
        #expect(inbox.isClosed)
        #expect(pendingBytes(inbox) == 1, "the owning thread is woken to see the close")
        #expect(!inbox.push(3))
        inbox.wake()
        #expect(pendingBytes(inbox) == 0, "nothing is written once closed")
        #expect(inbox.takeAll().isEmpty)
    }

    @Test func waitReturnsOnAWakeUpFromAnotherThreadAndClearsIt() async throws {
        let inbox = try WakeableInbox<Int>()
        let waiter = WaiterThread { inbox.wait(timeoutMs: -1) }
        inbox.wake()
        await waiter.join()
        // Cleared: the next wake-up writes a byte again.
        inbox.wake()
        #expect(pendingBytes(inbox) == 1)
    }

    @Test func waitEndsAtItsTimeoutWithoutAWakeUp() throws {
        let inbox = try WakeableInbox<Int>()
        inbox.wait(timeoutMs: 1)
        #expect(!inbox.hasCommands)
    }
}

/// A dedicated thread for a blocking call, joined without blocking the pool.
private final class WaiterThread: Sendable {
    private let done = AsyncStream<Void>.makeStream()

    init(_ body: @escaping @Sendable () -> Void) {
        let continuation = done.continuation
        IOThread.start(name: "test-waiter") {
            body()
            continuation.finish()
        }
    }

    func join() async {
        for await _ in done.stream {}
    }
}

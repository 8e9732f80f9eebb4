import Synchronization
import Testing
import AMQP
@testable import Warren

/// The watchdog's decisions on a manual clock: no test sleeps.
extension Watchdog {
    /// Starts a handler for a message with this id.
    func start(timeout: Duration?, consumer: String, messageID: String, attempt: Int, cancel: any Cancellable) -> Int? {
        let delivery = Delivery(channel: 1, deliveryTag: 1, consumerTag: "t", exchange: "", routingKey: "q", redelivered: false,
                                properties: MessageProperties(messageId: messageID), body: [])
        return start(timeout: timeout, consumer: consumer, delivery: delivery, attempt: attempt, handle: cancel)
    }
}

@Suite struct WatchdogTests {
    final class ManualClock: Sendable {
        let milliseconds = Mutex<Int64>(1_000)
        func now() -> Int64 { milliseconds.withLock { $0 } }
        func advance(_ ms: Int64) { milliseconds.withLock { $0 += ms } }
    }

    final class Cancels: Sendable {
        let names = Mutex<[String]>([])
        /// A handle that records its name when the watchdog cancels it.
        final class Named: Cancellable {
            let name: String
            let cancels: Cancels
            init(_ name: String, _ cancels: Cancels) {
                self.name = name
                self.cancels = cancels
            }
            func cancel() { cancels.names.withLock { $0.append(name) } }
        }
        func cancel(_ name: String) -> Named { Named(name, self) }
        var all: [String] { names.withLock { $0 } }
    }

    func make() -> (Watchdog, ManualClock, Cancels) {
        let clock = ManualClock()
        return (try! Watchdog(clock: { clock.now() }, timerThread: false), clock, Cancels())
    }

    @Test func aHandlerPastItsTimeoutIsCancelledAndReportedAsTimedOut() throws {
        let (watchdog, clock, cancels) = make()
        let id = try #require(watchdog.start(timeout: .milliseconds(500), consumer: "c", messageID: "m", attempt: 1,
                                             cancel: cancels.cancel("m")))
        #expect(watchdog.expireDue(now: clock.now()) == 1_500)
        clock.advance(499)
        watchdog.expireDue(now: clock.now())
        #expect(cancels.all.isEmpty)
        clock.advance(1)
        #expect(watchdog.expireDue(now: clock.now()) == nil)
        #expect(cancels.all == ["m"])
        #expect(watchdog.finish(id) == .timeout)
    }

    @Test func aHandlerFinishingInTimeIsNeitherCancelledNorReported() throws {
        let (watchdog, clock, cancels) = make()
        let id = try #require(watchdog.start(timeout: .seconds(1), consumer: "c", messageID: "m", attempt: 1, cancel: cancels.cancel("m")))
        clock.advance(900)
        #expect(watchdog.finish(id) == nil)
        clock.advance(1_000)
        watchdog.expireDue(now: clock.now())
        #expect(cancels.all.isEmpty)
    }

    @Test func eachHandlerHasItsOwnDeadlineAndNoTimeoutMeansNone() throws {
        let (watchdog, clock, cancels) = make()
        _ = watchdog.start(timeout: .seconds(2), consumer: "c", messageID: "slow", attempt: 1, cancel: cancels.cancel("slow"))
        _ = watchdog.start(timeout: .seconds(1), consumer: "c", messageID: "fast", attempt: 1, cancel: cancels.cancel("fast"))
        _ = watchdog.start(timeout: nil, consumer: "c", messageID: "forever", attempt: 1, cancel: cancels.cancel("forever"))
        clock.advance(1_000)
        #expect(watchdog.expireDue(now: clock.now()) == 3_000)
        #expect(cancels.all == ["fast"])
        clock.advance(10_000)
        watchdog.expireDue(now: clock.now())
        #expect(cancels.all == ["fast", "slow"])
    }

    @Test func firingEndsEveryRunningHandlerOnceAndStartsNoNewOne() throws {
        let (watchdog, clock, cancels) = make()
        let a = try #require(watchdog.start(timeout: .seconds(1), consumer: "c", messageID: "a", attempt: 1, cancel: cancels.cancel("a")))
        let b = try #require(watchdog.start(timeout: nil, consumer: "c", messageID: "b", attempt: 2, cancel: cancels.cancel("b")))
        watchdog.fire()
        #expect(Set(cancels.all) == ["a", "b"])
        clock.advance(5_000)
        watchdog.expireDue(now: clock.now())
        #expect(cancels.all.count == 2, "a shut-down handler is not also timed out")
        #expect(watchdog.finish(a) == .shutdown && watchdog.finish(b) == .shutdown)
        #expect(watchdog.start(timeout: nil, consumer: "c", messageID: "late", attempt: 1, cancel: cancels.cancel("late")) == nil)
    }

    @Test func theReportListsRunningHandlersOldestFirstWithTheirPids() throws {
        let (watchdog, clock, cancels) = make()
        let first = try #require(watchdog.start(timeout: nil, consumer: "orders", messageID: "m1", attempt: 3, cancel: cancels.cancel("1")))
        clock.advance(250)
        _ = watchdog.start(timeout: nil, consumer: "mail", messageID: "m2", attempt: 1, cancel: cancels.cancel("2"))
        watchdog.setPID(first, 4242)
        clock.advance(750)
        let report = watchdog.report()
        #expect(report.map(\.messageID) == ["m1", "m2"])
        #expect(report[0].pid == 4242 && report[0].attempt == 3 && report[0].age == .seconds(1))
        #expect(report[1].pid == nil && report[1].age == .milliseconds(750))
    }
}

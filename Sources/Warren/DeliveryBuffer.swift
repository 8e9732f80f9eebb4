import AMQP
import DequeModule
import Synchronization

/// A delivery and the connection it must be settled on: delivery tags
/// belong to their channel, so an outcome is never sent on another.
struct Received: Sendable {
    var delivery: Delivery
    var connection: AMQPConnection
}

/// Deliveries of one consumer waiting for a free worker.
///
/// The one place where "started" and "released" are decided: a delivery is
/// either taken by a worker (`tryNext`, `next`) or handed back by `close`,
/// never both, because all of them happen under the same lock.
final class DeliveryBuffer: Sendable {
    private struct State {
        var items = Deque<Received>()
        var waiters = Deque<(id: Int, continuation: CheckedContinuation<Received?, Never>)>()
        var nextWaiterID = 0
        var closed = false
    }

    /// Guards the waiting deliveries, the idle workers and the closed flag.
    private let state = Mutex(State())
    /// Thrown by `close`: persistent workers that are not waiting for a
    /// delivery (starting, backing off) learn of the drain here.
    let closedSignal = TerminationSignal()

    /// Hands over a burst: idle workers are woken (one resume each), the
    /// rest queued. Returns false, taking nothing, when closed.
    func push(contentsOf deliveries: [Received]) -> Bool {
        guard !deliveries.isEmpty else { return true }
        let woken: [(CheckedContinuation<Received?, Never>, Received)]? = state.withLock { state in
            if state.closed { return nil }
            var woken: [(CheckedContinuation<Received?, Never>, Received)] = []
            for delivery in deliveries {
                if let waiter = state.waiters.popFirst() {
                    woken.append((waiter.continuation, delivery))
                } else {
                    state.items.append(delivery)
                }
            }
            return woken
        }
        guard let woken else { return false }
        for (continuation, delivery) in woken { continuation.resume(returning: delivery) }
        return true
    }

    /// Deliveries waiting for a worker (part of what is in flight).
    var count: Int { state.withLock { $0.items.count } }

    /// A delivery already waiting, if there is one: no suspension point,
    /// so a worker working through a burst never asks the runtime where
    /// to run next.
    func tryNext() -> Received? {
        state.withLock { $0.items.popFirst() }
    }

    /// The next delivery for a worker; nil once closed (or when the worker is cancelled).
    func next() async -> Received? {
        // A burst is waiting: take one without registering a cancellation
        // handler or a continuation.
        enum Now { case item(Received), closed, wait(id: Int) }
        let now = state.withLock { state -> Now in
            if let item = state.items.popFirst() { return .item(item) }
            if state.closed { return .closed }
            state.nextWaiterID += 1
            return .wait(id: state.nextWaiterID)
        }
        switch now {
        case .item(let item): return item
        case .closed: return nil
        case .wait(let id): return await wait(id: id)
        }
    }

    private func wait(id: Int) async -> Received? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Received?, Never>) in
                enum Now { case item(Received?), wait }
                let now: Now = state.withLock { state in
                    if let item = state.items.popFirst() { return .item(item) }
                    if state.closed || Task.isCancelled { return .item(nil) }
                    state.waiters.append((id, continuation))
                    return .wait
                }
                if case .item(let item) = now { continuation.resume(returning: item) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Received?, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: nil)
        }
    }

    /// Drops the waiting deliveries of a connection that is gone: the broker
    /// redelivers them, so running them now would only make duplicates.
    func removeAll(from connection: AMQPConnection) -> Int {
        state.withLock { state in
            let before = state.items.count
            state.items.removeAll { $0.connection === connection }
            return before - state.items.count
        }
    }

    /// Takes out the waiting deliveries of `connection` (a consumer that
    /// stops consuming gives them back to the broker).
    func takeAll(from connection: AMQPConnection) -> [Received] {
        state.withLock { state in
            let taken = state.items.filter { $0.connection === connection }
            state.items.removeAll { $0.connection === connection }
            return Array(taken)
        }
    }

    /// Stops taking deliveries: idle workers get nil, and every delivery not
    /// yet started is returned for release.
    func close() -> [Received] {
        let (items, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.items.removeAll()
                state.waiters.removeAll()
            }
            return (Array(state.items), Array(state.waiters))
        }
        for waiter in waiters { waiter.continuation.resume(returning: nil) }
        closedSignal.fire()
        return items
    }
}

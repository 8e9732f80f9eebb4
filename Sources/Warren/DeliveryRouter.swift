import AMQP
import Synchronization

/// Hands deliveries to their consumer's buffer right on the I/O thread, so
/// a delivery costs no trip through the control loop. The control loop
/// keeps the route table (which channel of which connection feeds which
/// consumer) and learns how many were dispatched from a counter.
final class DeliveryRouter: Sendable {
    private struct Routes {
        var generation = 0
        var connection: AMQPConnection? = nil
        var consumerOn: [UInt16: Int] = [:]
    }

    /// Guards the route table, replaced by the control loop on (re)subscribe.
    private let routes = Mutex(Routes())
    private let consumers: [Consumer]
    /// Deliveries dispatched since the control loop last looked.
    let dispatchedCount = Atomic<Int>(0)
    /// Deliveries settled since the control loop last looked.
    let finishedCount = Atomic<Int>(0)
    private let notify: @Sendable (_ dispatched: Bool) -> Void

    /// - Parameter notify: called when a counter leaves zero, so one event
    ///   reports a burst.
    init(consumers: [Consumer], notify: @escaping @Sendable (_ dispatched: Bool) -> Void) {
        self.consumers = consumers
        self.notify = notify
    }

    func use(_ connection: AMQPConnection?, generation: Int) {
        routes.withLock { routes in
            routes.generation = generation
            routes.connection = connection
            routes.consumerOn = [:]
        }
    }

    func route(channel: UInt16, to consumer: Int?) {
        routes.withLock { $0.consumerOn[channel] = consumer }
    }

    /// On the I/O thread: into the buffer, or straight back to the broker
    /// when there is no open buffer for it.
    func dispatch(_ delivery: Delivery, generation: Int) {
        let (connection, index) = routes.withLock { routes -> (AMQPConnection?, Int?) in
            guard routes.generation == generation else { return (nil, nil) }
            return (routes.connection, routes.consumerOn[delivery.channel])
        }
        guard let connection else { return }  // an old connection's: void, the broker has it back
        guard let index else {
            connection.nack(delivery, requeue: true)
            return
        }
        if dispatchedCount.add(1, ordering: .acquiringAndReleasing).oldValue == 0 { notify(true) }
        if !consumers[index].buffer.push(Received(delivery: delivery, connection: connection)) {
            connection.nack(delivery, requeue: true)
            finished()
        }
    }

    /// A dispatched delivery was settled.
    func finished() {
        if finishedCount.add(1, ordering: .acquiringAndReleasing).oldValue == 0 { notify(false) }
    }
}

import AMQP
import Synchronization

/// Hands deliveries to their consumer's buffer right on the I/O thread, so
/// a delivery costs no trip through the control loop. The control loop
/// keeps the route table (which channel of which connection feeds which
/// consumer). Nothing is counted here: what is in flight is what the
/// buffers hold and the watchdog runs, and a drain ends when the workers do.
final class DeliveryRouter: Sendable {
    private struct Routes {
        var generation = 0
        var connection: AMQPConnection? = nil
        var consumerOn: [UInt16: Int] = [:]
    }

    /// Guards the route table, replaced by the control loop on (re)subscribe.
    private let routes = Mutex(Routes())
    private let consumers: [Consumer]

    init(consumers: [Consumer]) {
        self.consumers = consumers
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

    /// A burst of deliveries read in one turn of an I/O loop, handed to the
    /// buffers together at the end of the turn: one wake-up per burst.
    /// Used only on its connection's I/O thread.
    final class Batch: @unchecked Sendable {
        // @unchecked: `pending` is touched only by the one I/O thread that
        // owns the connection (dispatch and flush are both called there),
        // never concurrently.
        fileprivate var pending: [[Received]]
        init(consumers: Int) { pending = Array(repeating: [], count: consumers) }
    }

    func makeBatch() -> Batch { Batch(consumers: consumers.count) }

    /// On the I/O thread: queue it for its consumer's buffer, or send it
    /// straight back when no consumer is routed for its channel.
    func dispatch(_ delivery: Delivery, generation: Int, batch: Batch) {
        let (connection, index) = routes.withLock { routes -> (AMQPConnection?, Int?) in
            guard routes.generation == generation else { return (nil, nil) }
            return (routes.connection, routes.consumerOn[delivery.channel])
        }
        guard let connection else { return }  // an old connection's: void, the broker has it back
        guard let index else {
            connection.nack(delivery, requeue: true)
            return
        }
        batch.pending[index].append(Received(delivery: delivery, connection: connection))
    }

    /// On the I/O thread, at the end of a turn: into the buffers; what a
    /// closed buffer refuses goes back to the broker.
    func flush(_ batch: Batch) {
        for index in batch.pending.indices where !batch.pending[index].isEmpty {
            let deliveries = batch.pending[index]
            batch.pending[index].removeAll(keepingCapacity: true)
            consumers[index].metrics.deliveries.increment(by: deliveries.count)
            if !consumers[index].buffer.push(contentsOf: deliveries) {
                for received in deliveries { received.connection.nack(received.delivery, requeue: true) }
            }
        }
    }
}

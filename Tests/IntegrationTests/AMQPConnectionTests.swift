import AMQP
import Testing

/// The AMQP layer against the real broker.
@Suite(.serialized) struct AMQPConnectionTests {
    @Test func publishedMessagesAreDeliveredWithTheirPropertiesAndAckedOnce() async throws {
        try await withTestQueue { client, queue in
            let headers = FieldTable([("x-tenant", .string("acme")), ("n", .int32(7)), ("nested", .table(FieldTable([("a", .bool(true))]))),
                                      ("list", .array([.string("x"), .int64(1)]))])
            try await client.connection.publish(Array("hello".utf8), routingKey: queue, on: 1,
                                                properties: MessageProperties(contentType: "text/plain", headers: headers,
                                                                              correlationId: "c1", messageId: "m1"))
            let consumer = try await TestBroker.connect()
            try await consumer.openChannel(1, prefetch: 10)
            _ = try await consumer.consume(queue: queue, on: 1)
            var iterator = consumer.events.makeAsyncIterator()
            guard case .delivery(let delivery)? = await iterator.next() else {
                Issue.record("expected a delivery")
                return
            }
            #expect(delivery.body == Array("hello".utf8))
            #expect(delivery.properties.messageId == "m1")
            #expect(delivery.properties.correlationId == "c1")
            #expect(delivery.properties.contentType == "text/plain")
            #expect(delivery.properties.headers == headers)
            #expect(delivery.routingKey == queue)
            #expect(!delivery.redelivered)
            consumer.ack(delivery)
            #expect(try await consumer.outstanding(on: 1) == 0)
            await consumer.close()
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func unackedDeliveriesReturnToTheQueueWhenTheConnectionCloses() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["a", "b", "c"], to: queue)
            let consumer = try await TestBroker.connect()
            try await consumer.openChannel(1, prefetch: 10)
            _ = try await consumer.consume(queue: queue, on: 1)
            var seen = 0
            for await event in consumer.events {
                guard case .delivery(let delivery) = event else { continue }
                seen += 1
                if delivery.properties.messageId == "b" { consumer.ack(delivery) }
                if seen == 3 { break }
            }
            await consumer.close()
            let left = try await client.drain(queue)
            #expect(Set(left.map(\.id)) == ["a", "c"])
            #expect(left.allSatisfy { $0.redelivered })
        }
    }

    @Test func manyAcksAreCoalescedAndAllReachTheBroker() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...500).map { "m\($0)" }
            try await client.publish(ids: ids, to: queue)
            let consumer = try await TestBroker.connect()
            try await consumer.openChannel(1, prefetch: 200)
            _ = try await consumer.consume(queue: queue, on: 1)
            var seen = 0
            for await event in consumer.events {
                guard case .delivery(let delivery) = event else { continue }
                consumer.ack(delivery)
                seen += 1
                if seen == ids.count { break }
            }
            try await eventually("every ack settled") { try await consumer.outstanding(on: 1) == 0 }
            await consumer.close()
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func cancelStopsDeliveriesAndLateOnesCanBeReleased() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: (1...50).map { "m\($0)" }, to: queue)
            let consumer = try await TestBroker.connect()
            try await consumer.openChannel(1, prefetch: 50)
            let tag = try await consumer.consume(queue: queue, on: 1)
            try await consumer.cancel(consumerTag: tag, on: 1)
            // Whatever arrived before cancel-ok is still delivered: release it.
            try await client.publish(ids: ["late"], to: queue)
            var released = 0
            let reader = Task {
                for await event in consumer.events {
                    if case .delivery(let delivery) = event {
                        consumer.nack(delivery, requeue: true)
                        released += 1
                    }
                }
                return released
            }
            try await eventually("released deliveries settled") { try await consumer.outstanding(on: 1) == 0 }
            await consumer.close()
            _ = await reader.value
            let left = try await client.drain(queue)
            #expect(left.count == 51, "nothing lost: 50 released or never sent, plus the late one")
        }
    }

    @Test func aMissingQueueIsAChannelErrorNotACrash() async throws {
        let connection = try await TestBroker.connect()
        try await connection.openChannel(1)
        await #expect(throws: AMQPError.self) {
            try await connection.declareQueue("test.no-such-queue.\(UInt32.random(in: 0...UInt32.max))", on: 1, passive: true)
        }
        // The connection is still fine: reopen the channel and use it.
        try await connection.openChannel(1)
        let info = try await connection.declareQueue("", on: 1, durable: false, exclusive: true, autoDelete: true)
        #expect(info.name.hasPrefix("amq.gen-"))
        await connection.close()
    }

    @Test func openingAChannelThatIsOpenIsRefused() async throws {
        let connection = try await TestBroker.connect()
        try await connection.openChannel(1, prefetch: 5)
        do {
            try await connection.openChannel(1, prefetch: 50)
            Issue.record("a second open of channel 1 was accepted: two owners would share it")
        } catch {
            #expect(error.description.contains("already open"))
        }
        // The first owner's channel is untouched.
        let info = try await connection.declareQueue("", on: 1, durable: false, exclusive: true, autoDelete: true)
        #expect(info.name.hasPrefix("amq.gen-"))
        await connection.close()
    }

    @Test func wrongPasswordIsAClearLoginError() async throws {
        var options = try TestBroker.options
        options.password = "definitely-wrong"
        do {
            _ = try await AMQPConnection.connect(options)
            Issue.record("login with a wrong password succeeded")
        } catch {
            #expect(error.code == .loginRefused)
            #expect(!error.description.contains("definitely-wrong"))
        }
    }

    @Test func noBrokerIsAConnectError() async throws {
        var options = try TestBroker.options
        options.port = 1  // nothing listens there
        await #expect(throws: AMQPError.self) { try await AMQPConnection.connect(options) }
    }

    @Test func anAckQueuedJustBeforeItsChannelClosesStillReachesTheBroker() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["last"], to: queue)
            let consumer = try await TestBroker.connect()
            try await consumer.openChannel(5, prefetch: 1)
            _ = try await consumer.consume(queue: queue, on: 5)
            for await event in consumer.events {
                guard case .delivery(let delivery) = event else { continue }
                consumer.ack(delivery)
                try await consumer.closeChannel(5)
                break
            }
            await consumer.close()
            #expect(try await client.count(queue) == 0, "the ack was dropped and the message requeued")
        }
    }

    @Test func aPublishThatNeedsAConfirmFailsOnAChannelWithoutConfirmsAndSucceedsOnOneOpenedWithThem() async throws {
        try await withTestQueue { client, queue in
            let connection = try await TestBroker.connect()
            try await connection.openChannel(2)
            await #expect(throws: AMQPError.self) {
                try await connection.publish(Array("unconfirmed".utf8), routingKey: queue, on: 2, requireConfirm: true)
            }
            try await connection.openChannel(3, confirms: true)
            try await connection.publish(Array("confirmed".utf8), routingKey: queue, on: 3, requireConfirm: true)
            await connection.close()
            #expect(try await client.count(queue) == 1, "only the confirmed publish went out")
        }
    }
}

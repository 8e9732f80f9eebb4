import AMQP
import Foundation
import Glibc
import Testing

/// Exchanges, bindings, queue and consumer arguments, and the broker's own
/// limits (delivery limit, acknowledgement timeout), against the real
/// broker with the `warren` binary, message by message.
@Suite(.serialized) struct TopologyTests {
    static let ledger = #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/handled'"#

    /// A fresh queue name (not declared) and exchange name; both, and the
    /// queues warren adds, deleted afterwards.
    func withNames(_ name: String = #function, _ body: (TestClient, String, String) async throws -> Void) async throws {
        let client = try await TestClient()
        let suffix = UInt32.random(in: 0...UInt32.max)
        let base = name.prefix(while: { $0 != "(" })
        let queue = "test.\(base).\(suffix)"
        let exchange = "test.exchange.\(suffix)"
        var failure: (any Error)? = nil
        do { try await body(client, queue, exchange) } catch { failure = error }
        let cleanup = try await TestBroker.connect()
        for name in [queue, queue + ".b", queue + ".dead", queue + ".b.dead"] + (1...8).map({ "\(queue).retry.\($0)" })
            + (1...8).map({ "\(queue).b.retry.\($0)" }) {
            try? await cleanup.openChannel(1)
            _ = try? await cleanup.deleteQueue(name, on: 1)
            try? await cleanup.closeChannel(1)
        }
        try? await cleanup.openChannel(1)
        try? await cleanup.deleteExchange(exchange, on: 1)
        await cleanup.close()
        await client.close()
        if let failure { throw failure }
    }

    func publish(_ client: TestClient, ids: [String], exchange: String = "", routingKey: String, priority: UInt8? = nil) async throws {
        for id in ids {
            try await client.connection.publish(Array(id.utf8), exchange: exchange, routingKey: routingKey, on: 1,
                                                properties: MessageProperties(deliveryMode: 2, priority: priority, messageId: id))
        }
    }

    func running(_ warren: WarrenBinary) async throws {
        do {
            try await eventually("warren consumes") { warren.log.contains("NOTICE running") }
        } catch {
            Issue.record("warren's log: \(warren.log)")
            throw error
        }
    }

    func stop(_ warren: WarrenBinary) async {
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0, "\(warren.log)")
    }

    // MARK: Exchanges and bindings

    @Test func aTopicExchangeDeliversOnlyWhatItsKeysBind() async throws {
        try await withNames { client, queue, exchange in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger, extra: """
                exchange = \(exchange)
                exchange_type = topic
                routing_keys = order.created order.*.eu
                """))
            try await running(warren)
            try await publish(client, ids: ["c-1", "c-2"], exchange: exchange, routingKey: "order.created")
            try await publish(client, ids: ["eu-1"], exchange: exchange, routingKey: "order.paid.eu")
            try await publish(client, ids: ["us-1"], exchange: exchange, routingKey: "order.paid.us")
            try await publish(client, ids: ["d-1"], exchange: exchange, routingKey: "order.deleted")
            try await eventually("the bound messages handled") { Set(warren.lines("handled")) == ["c-1", "c-2", "eu-1"] }
            try await Task.sleep(for: .milliseconds(500))
            await stop(warren)
            #expect(warren.lines("handled").sorted() == ["c-1", "c-2", "eu-1"], "each bound message once, no other")
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aFanoutExchangeGivesEveryMessageToBothWarrens() async throws {
        try await withNames { client, queue, exchange in
            let fanout = "exchange = \(exchange)\nexchange_type = fanout"
            let a = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger, extra: fanout))
            let b = try WarrenBinary(config: try warrenConfig(queue: queue + ".b", command: Self.ledger, extra: fanout))
            try await running(a)
            try await running(b)
            let ids = (1...30).map { "f-\($0)" }
            try await publish(client, ids: ids, exchange: exchange, routingKey: "anything")
            try await eventually("both handled every message") {
                a.lines("handled").count == ids.count && b.lines("handled").count == ids.count
            }
            await stop(a)
            await stop(b)
            #expect(a.lines("handled").sorted() == ids.sorted())
            #expect(b.lines("handled").sorted() == ids.sorted())
        }
    }

    /// As README says: warren's binding to a headers exchange has no
    /// arguments, so every message matches, whatever its headers.
    @Test func aHeadersExchangeBindingFromWarrenTakesEveryMessage() async throws {
        try await withNames { client, queue, exchange in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger,
                                                                   extra: "exchange = \(exchange)\nexchange_type = headers"))
            try await running(warren)
            try await client.connection.publish(Array("h-1".utf8), exchange: exchange, routingKey: "", on: 1,
                                                properties: MessageProperties(headers: FieldTable([("tenant", .string("acme"))]),
                                                                              messageId: "h-1"))
            try await publish(client, ids: ["h-2"], exchange: exchange, routingKey: "whatever")
            try await eventually("both handled") { Set(warren.lines("handled")) == ["h-1", "h-2"] }
            await stop(warren)
            #expect(warren.lines("handled").sorted() == ["h-1", "h-2"])
        }
    }

    // MARK: Queue and consumer arguments

    @Test func aPriorityNineMessagePublishedAfterAHundredIsHandledAmongTheFirst() async throws {
        try await withNames { client, queue, _ in
            // Declared here first, with the argument as another client's integer type: the same to the broker.
            try await client.connection.declareQueue(queue, on: 1, arguments: FieldTable([("x-max-priority", .int32(10))]))
            let low = (1...100).map { "low-\($0)" }
            try await publish(client, ids: low, routingKey: queue, priority: 0)
            try await publish(client, ids: ["high"], routingKey: queue, priority: 9)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger, prefetch: 1,
                                                                   concurrency: 1, extra: "max_priority = 10"))
            try await eventually("all 101 handled", timeout: .seconds(60)) { warren.lines("handled").count == 101 }
            await stop(warren)
            let order = warren.lines("handled")
            #expect(order.prefix(2).contains("high"), "handled at \(order.firstIndex(of: "high") ?? -1)")
            #expect(order.sorted() == (low + ["high"]).sorted(), "each once")
        }
    }

    @Test func onlyTheSingleActiveConsumerConsumesAndTheOtherTakesOverLosingNothing() async throws {
        try await withNames { client, queue, _ in
            let config = try warrenConfig(queue: queue, command: #"sh -c 'sleep 0.02; echo "$WARREN_MESSAGE_ID" >> {dir}/handled'"#,
                                          extra: "single_active_consumer = true")
            let first = try WarrenBinary(config: config)
            try await running(first)
            let second = try WarrenBinary(config: config)
            try await running(second)
            let before = (1...20).map { "a-\($0)" }
            try await client.publish(ids: before, to: queue)
            try await eventually("the active one handled them") { first.lines("handled").count == before.count }
            #expect(second.lines("handled").isEmpty, "the second consumer is not active")
            await stop(first)
            let after = (1...20).map { "b-\($0)" }
            try await client.publish(ids: after, to: queue)
            try await eventually("the other took over") { second.lines("handled").count == after.count }
            await stop(second)
            #expect(first.lines("handled").sorted() == before.sorted())
            #expect(second.lines("handled").sorted() == after.sorted())
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func theHighPriorityConsumerGetsTheMessagesWhileItHasRoom() async throws {
        try await withTestQueue { client, queue in
            let high = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger, prefetch: 40,
                                                                 extra: "consumer_priority = 10"))
            let low = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger, prefetch: 40))
            try await running(high)
            try await running(low)
            let ids = (1...40).map { "p-\($0)" }
            try await client.publish(ids: ids, to: queue)
            try await eventually("all handled") { high.lines("handled").count + low.lines("handled").count == ids.count }
            await stop(high)
            await stop(low)
            #expect(high.lines("handled").sorted() == ids.sorted(), "the high-priority consumer always had room")
            #expect(low.lines("handled").isEmpty)
        }
    }

    /// RabbitMQ counts a delivery when a message goes back to a quorum queue
    /// (a consumer's connection lost, a requeue). Past `delivery_limit` it
    /// dead-letters the message along the route warren declared, instead of
    /// dropping it.
    @Test func aQuorumMessageReturnedPastItsDeliveryLimitIsDeadLetteredNeverDropped() async throws {
        try await withNames { client, queue, _ in
            let shared = try WarrenBinary.makeDirectory()
            let command = #"sh -c 'echo "$WARREN_MESSAGE_ID $$ ${WARREN_DELIVERY_COUNT:-0}" >> \#(shared)/started; if [ "$WARREN_MESSAGE_ID" = poison ]; then exec sleep 300; fi; echo "$WARREN_MESSAGE_ID" >> \#(shared)/handled'"#
            let config = try warrenConfig(queue: queue, command: command, prefetch: 4, concurrency: 2,
                                          extra: "queue_type = quorum\ndelivery_limit = 2")
            func started() -> [[String]] {
                ((try? String(contentsOfFile: shared + "/started", encoding: .utf8)) ?? "").split(separator: "\n")
                    .map { $0.split(separator: " ").map(String.init) }
            }
            func handled() -> Set<String> {
                Set(((try? String(contentsOfFile: shared + "/handled", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init))
            }
            let good = (1...6).map { "g-\($0)" }
            var logs: [String] = []
            for round in 1...3 {
                let warren = try WarrenBinary(config: config)
                try await running(warren)
                if round == 1 { try await publish(client, ids: ["poison"] + good, routingKey: queue) }
                try await eventually("poison started (round \(round))") { started().filter { $0[0] == "poison" }.count == round }
                // The others are acked first, so only the poison is returned at each kill.
                if round == 1 { try await eventually("the good ones handled") { handled() == Set(good) } }
                let handler = try #require(started().last(where: { $0[0] == "poison" }).flatMap { Int32($0[1]) })
                kill(warren.pid, SIGKILL)
                _ = await warren.waitForExit()
                kill(-handler, SIGKILL)
                logs.append(warren.log)
            }
            try await eventually("dead-lettered by the broker") { try await client.count(queue + ".dead") == 1 }
            #expect(started().filter { $0[0] == "poison" }.map { $0[2] } == ["0", "1", "2"], "delivered three times: \(started())")
            #expect(logs[2].contains("the broker's last delivery of this message (delivery_limit)"), "\(logs[2])")
            #expect(!logs[1].contains("the broker's last delivery"))
            // A warren started now handles what comes and never sees the poison again.
            let last = try WarrenBinary(config: config)
            try await running(last)
            let later = (1...3).map { "h-\($0)" }
            try await publish(client, ids: later, routingKey: queue)
            try await eventually("every good message handled") { handled() == Set(good + later) }
            await stop(last)
            #expect(started().filter { $0[0] == "poison" }.count == 3)
            #expect(try await client.count(queue) == 0)
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["poison"])
            let headers = try #require(dead.first?.headers)
            #expect(headers["x-first-death-reason"]?.stringValue == "delivery_limit", "\(headers)")
            guard case .array(let deaths)? = headers["x-death"], case .table(let death)? = deaths.first else {
                Issue.record("no x-death: \(headers)")
                return
            }
            #expect(death["reason"]?.stringValue == "delivery_limit")
            #expect(death["queue"]?.stringValue == queue)
        }
    }

    // MARK: Arguments that differ

    @Test func aQueueOrExchangeWithOtherArgumentsStopsTheStartWith78NamingBothValues() async throws {
        try await withNames { client, queue, exchange in
            try await client.connection.declareQueue(queue, on: 1, arguments: FieldTable([("x-max-priority", .int64(5))]))
            let priority = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true", extra: "max_priority = 10"))
            #expect(await priority.waitForExit() == 78, "\(priority.log)")
            #expect(priority.log.contains("the queue '\(queue)' of [consumer.test] exists with x-max-priority = 5, but warren declares it with x-max-priority = 10 (max_priority)"),
                    "\(priority.log)")
            #expect(priority.log.contains("rabbitmqctl delete_queue \(queue)"))

            // A quorum queue declared without a dead-letter route (as warren did before it gave them one).
            let quorum = queue + ".b"
            try await client.connection.declareQueue(quorum, on: 1, arguments: FieldTable([("x-queue-type", .string("quorum"))]))
            let upgrade = try WarrenBinary(config: try warrenConfig(queue: quorum, command: "true", extra: "queue_type = quorum"))
            #expect(await upgrade.waitForExit() == 78, "\(upgrade.log)")
            #expect(upgrade.log.contains("exists with x-dead-letter-"), "\(upgrade.log)")
            #expect(upgrade.log.contains("the dead-letter route to dead_letter_queue"), "\(upgrade.log)")

            try await client.connection.declareExchange(exchange, type: "direct", on: 1)
            let type = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true",
                                                                 extra: "max_priority = 5\nexchange = \(exchange)\nexchange_type = topic"))
            #expect(await type.waitForExit() == 78, "\(type.log)")
            #expect(type.log.contains("the exchange '\(exchange)' of [consumer.test] exists with type = direct, but warren declares it with type = topic (exchange_type)"),
                    "\(type.log)")
        }
    }

    @Test func aReloadAskingForOtherArgumentsIsRefusedAndTheRunningConsumersGoOn() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: Self.ledger))
            try await running(warren)
            try await client.publish(ids: ["before"], to: queue)
            try await eventually("handled") { warren.lines("handled") == ["before"] }
            try (try warrenConfig(queue: queue, command: Self.ledger, extra: "max_length = 10"))
                .replacingOccurrences(of: "{dir}", with: warren.directory).write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("the reload refused") { warren.log.contains("reload failed") }
            #expect(warren.log.contains("the queue '\(queue)' of [consumer.test] exists with x-dead-letter-exchange = none")
                    || warren.log.contains("the queue '\(queue)' of [consumer.test] exists with x-max-length = none"), "\(warren.log)")
            try await client.publish(ids: ["after"], to: queue)
            try await eventually("still consuming") { warren.lines("handled") == ["before", "after"] }
            await stop(warren)
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A queue declared elsewhere with a default written out, or a quorum
    /// queue with a dead-letter route of its own, means what warren asks
    /// for: warren consumes it (with a warning) instead of refusing to start.
    @Test func aQueueWhoseArgumentsMeanTheSameIsConsumedWithAWarning() async throws {
        try await withNames { client, queue, exchange in
            try await client.connection.declareQueue(queue, on: 1, arguments: FieldTable([
                ("x-single-active-consumer", .bool(false)), ("x-overflow", .string("drop-head")), ("x-queue-type", .string("classic"))]))
            let quorum = queue + ".b"
            try await client.connection.declareQueue(quorum, on: 1, arguments: FieldTable([
                ("x-queue-type", .string("quorum")), ("x-dead-letter-exchange", .string(exchange))]))
            let config = try warrenConfig(queue: queue, command: Self.ledger, extra: """
                [consumer.q]
                queue = \(quorum)
                queue_type = quorum
                command = \(Self.ledger)
                """)
            let warren = try WarrenBinary(config: config)
            try await running(warren)
            // RabbitMQ 3.10 itself takes x-queue-type = classic for none; the others it refuses.
            for argument in ["x-single-active-consumer = false", "x-overflow = drop-head"] {
                #expect(warren.log.contains("the queue '\(queue)' exists with \(argument) where warren declares"), "\(warren.log)")
            }
            #expect(warren.log.contains("the queue '\(quorum)' exists with x-dead-letter-exchange = \(exchange)"), "\(warren.log)")
            #expect(warren.log.contains("has a dead-letter route of its own"))
            try await client.publish(ids: ["plain-1", "plain-2"], to: queue)
            try await client.publish(ids: ["quorum-1", "quorum-2"], to: quorum)
            try await eventually("every message handled") { warren.lines("handled").count == 4 }
            await stop(warren)
            #expect(warren.lines("handled").sorted() == ["plain-1", "plain-2", "quorum-1", "quorum-2"])
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(quorum) == 0)
        }
    }

    /// A dead-letter route to the default exchange without a key of its
    /// own routes by each message's key, which may name no queue: that is
    /// no route, and it is refused like any other difference.
    @Test func aDeadLetterRouteWithoutAKeyIsNoRouteOfItsOwnAndIsRefused() async throws {
        try await withNames { client, _, _ in
            // A short name: RabbitMQ cuts its refusal at 255 bytes, and a cut
            // one is refused whatever it says (this must be refused for its content).
            let queue = "dlk.\(UInt32.random(in: 0...UInt32.max))"
            try await client.connection.declareQueue(queue, on: 1, arguments: FieldTable([
                ("x-dead-letter-exchange", .string("")), ("x-max-length", .int64(100))]))
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true", extra: "max_length = 100"))
            let code = await warren.waitForExit()
            _ = try? await client.connection.deleteQueue(queue, on: 1)
            _ = try? await client.connection.deleteQueue(queue + ".dead", on: 1)
            #expect(code == 78, "\(warren.log)")
            #expect(warren.log.contains("exists with x-dead-letter-routing-key = none"), "\(warren.log)")
            #expect(!warren.log.contains("route of its own"), "\(warren.log)")
        }
    }

    /// A reload refused for one consumer's queue leaves no binding of the
    /// others behind: the broker routes as the running config has it.
    @Test func aRefusedReloadLeavesNoNewBindingBehind() async throws {
        try await withNames { client, queue, exchange in
            let other = queue + ".b"
            func config(keys: String, maxPriority: Int) throws -> String {
                try warrenConfig(queue: queue, command: Self.ledger, extra: """
                    exchange = \(exchange)
                    routing_keys = \(keys)

                    [consumer.zz]
                    queue = \(other)
                    command = true
                    max_priority = \(maxPriority)
                    """)
            }
            let warren = try WarrenBinary(config: try config(keys: "old", maxPriority: 5))
            try await running(warren)
            try (try config(keys: "old new", maxPriority: 10)).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("the reload refused") { warren.log.contains("reload failed") }
            #expect(warren.log.contains("x-max-priority = 5, but warren declares it with x-max-priority = 10"), "\(warren.log)")
            try await publish(client, ids: ["via-old"], exchange: exchange, routingKey: "old")
            try await publish(client, ids: ["via-new"], exchange: exchange, routingKey: "new")
            try await eventually("the old key's message handled") { warren.lines("handled") == ["via-old"] }
            try await Task.sleep(for: .milliseconds(500))
            await stop(warren)
            #expect(warren.lines("handled") == ["via-old"], "the refused config's key routed nothing")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A routing key taken out of the config stops routing after a reload;
    /// those kept go on, and no message is lost on the way.
    @Test func aReloadRemovesTheBindingsItsConfigNoLongerHas() async throws {
        try await withNames { client, queue, exchange in
            func config(keys: String) throws -> String {
                try warrenConfig(queue: queue, command: Self.ledger, extra: "exchange = \(exchange)\nrouting_keys = \(keys)")
            }
            let warren = try WarrenBinary(config: try config(keys: "kept dropped"))
            try await running(warren)
            try await publish(client, ids: ["kept-1"], exchange: exchange, routingKey: "kept")
            try await publish(client, ids: ["dropped-1"], exchange: exchange, routingKey: "dropped")
            try await eventually("both keys route") { Set(warren.lines("handled")) == ["kept-1", "dropped-1"] }
            try (try config(keys: "kept")).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            try await eventually("the dropped key unbound once the old consumers stopped consuming") {
                warren.log.contains("removed a binding the previous config made")
            }
            try await publish(client, ids: ["kept-2"], exchange: exchange, routingKey: "kept")
            try await publish(client, ids: ["dropped-2"], exchange: exchange, routingKey: "dropped")
            try await eventually("the kept key routes") { warren.lines("handled").contains("kept-2") }
            try await Task.sleep(for: .milliseconds(500))
            await stop(warren)
            #expect(warren.lines("handled").sorted() == ["dropped-1", "kept-1", "kept-2"], "the dropped key routed nothing after the reload")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// A broker that never answers the reload's `queue.unbind` (heartbeats
    /// off, so nothing else would notice) costs the bound, not the reload:
    /// warren drops the connection, connects again and removes them then;
    /// no message is lost.
    @Test func aReloadWhoseUnbindTheBrokerNeverAnswersGivesUpAfterTheBound() async throws {
        try await withNames { client, queue, exchange in
            let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
            defer { proxy.stop() }
            func config(keys: String) throws -> String {
                try warrenConfig(queue: queue, command: Self.ledger, extra: "exchange = \(exchange)\nrouting_keys = \(keys)")
                    .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f")
                    .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 0\nreconnect_min = 100ms\nreconnect_max = 200ms")
            }
            let warren = try WarrenBinary(config: try config(keys: "kept dropped"))
            try await running(warren)
            proxy.blackHoleWhenClientSends(classID: 50, methodID: 50)
            try (try config(keys: "kept")).replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            let clock = ContinuousClock()
            let reloaded = clock.now
            warren.signal(SIGHUP)
            try await eventually("the unbind given up", timeout: .seconds(30)) {
                warren.log.contains("the broker did not answer queue.unbind")
            }
            #expect(clock.now - reloaded < .seconds(15), "gave up after \(clock.now - reloaded)")
            #expect(warren.log.contains("key 'dropped'"), "the log names the binding: \(warren.log)")
            proxy.cutAll()
            proxy.mode = .pass
            try await eventually("unbound on the next connection", timeout: .seconds(20)) {
                warren.log.contains("removed a binding the previous config made")
            }
            try await publish(client, ids: ["kept-1"], exchange: exchange, routingKey: "kept")
            try await publish(client, ids: ["dropped-1"], exchange: exchange, routingKey: "dropped")
            try await eventually("the kept key routes") { warren.lines("handled").contains("kept-1") }
            try await Task.sleep(for: .milliseconds(500))
            await stop(warren)
            #expect(warren.lines("handled") == ["kept-1"], "the dropped key routed nothing after the reload")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// An exclusive consumer keeps a second warren out; the second stands
    /// by, subscribing again with backoff, and takes over once the first stops.
    @Test func anExclusiveConsumerKeepsTheOtherOutUntilItStops() async throws {
        try await withTestQueue { client, queue in
            let config = try warrenConfig(queue: queue, command: Self.ledger, extra: "exclusive = true")
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 5s\nreconnect_min = 100ms\nreconnect_max = 200ms")
            let first = try WarrenBinary(config: config)
            try await running(first)
            let second = try WarrenBinary(config: config)
            try await eventually("the second is refused") { second.log.contains("in exclusive use") }
            let before = (1...10).map { "x-\($0)" }
            try await client.publish(ids: before, to: queue)
            try await eventually("the first handled them") { first.lines("handled").count == before.count }
            await stop(first)
            try await eventually("the second consumes") { second.log.contains("NOTICE running") }
            let after = (1...10).map { "y-\($0)" }
            try await client.publish(ids: after, to: queue)
            try await eventually("the second handled them") { second.lines("handled").count == after.count }
            await stop(second)
            #expect(first.lines("handled").sorted() == before.sorted())
            #expect(second.lines("handled").sorted() == after.sorted())
        }
    }

    // MARK: The broker's acknowledgement timeout

    @Test func theBrokerClosingAChannelForAnAckTimeoutIsLoggedAsThatWithTheFix() async throws {
        try await withTestQueue { client, queue in
            // Channels opened from now on time out after 2 s, checked every second (not every minute).
            let restore = "application:set_env(rabbit, consumer_timeout, 3600000), application:set_env(rabbit, channel_tick_interval, 60000)."
            try FaultTests.rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 2000), application:set_env(rabbit, channel_tick_interval, 1000).")
            do {
                // The config says 30m, the broker 2 s: the check passes, and the broker closes the channel.
                let warren = try WarrenBinary(config: try warrenConfig(
                    queue: queue, command: #"sh -c 'if [ ! -e {dir}/slow ]; then touch {dir}/slow; sleep 8; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/handled'"#,
                    prefetch: 2, concurrency: 2, consumerTimeout: "30m"))
                try await running(warren)
                try await client.publish(ids: ["slow-1"], to: queue)
                try await eventually("the broker closed the channel", timeout: .seconds(20)) {
                    warren.log.contains("delivery acknowledgement on channel")
                }
                try await eventually("handled after the redelivery", timeout: .seconds(30)) { try await client.count(queue) == 0 && warren.lines("handled").count >= 1 }
                try await Task.sleep(for: .seconds(8))
                await stop(warren)
                #expect(warren.log.contains("a message stayed unacknowledged longer than the broker's consumer_timeout"), "\(warren.log)")
                #expect(warren.log.contains("set [broker] consumer_timeout to the broker's real value"))
                #expect(Set(warren.lines("handled")) == ["slow-1"])
                #expect(try await client.count(queue) == 0)
            } catch {
                try FaultTests.rabbitmqctl("eval", restore)
                throw error
            }
            try FaultTests.rabbitmqctl("eval", restore)
        }
    }
}

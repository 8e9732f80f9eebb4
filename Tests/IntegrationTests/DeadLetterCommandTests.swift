import AMQP
import Foundation
import Glibc
import Testing

/// `warren dlq`, the built binary against the real broker: dead letters
/// made by real handler failures, read without reordering or losing them,
/// replayed with confirms (killed midway too), purged only when told.
@Suite(.serialized) struct DeadLetterCommandTests {
    /// Fails as its message id says: `data*` exits 65, `slow*` outlives its
    /// 1 s timeout, `signal*` kills itself with SIGKILL, anything else exits
    /// 65. Each says so on stderr first, which becomes `x-warren-last-stderr`.
    static let failingHandler = #"sh -c 'echo "failing $WARREN_MESSAGE_ID" >&2; case "$WARREN_MESSAGE_ID" in slow*) sleep 30;; signal*) kill -KILL $$;; *) exit 65;; esac'"#

    /// Runs warren with `failingHandler` (no retries) until every one of
    /// `ids` is dead-lettered, then stops it; returns the config file's path.
    /// `declareFirst`: the messages are published once warren declared the queue.
    static func deadLetter(_ ids: [String], client: TestClient, queue: String, concurrency: Int = 4,
                           extraConfig: String = "", declareFirst: Bool = false) async throws -> String {
        if !declareFirst { try await client.publish(ids: ids, to: queue) }
        let warren = try WarrenBinary(config: try warrenConfig(
            queue: queue, command: failingHandler, concurrency: concurrency,
            extra: "max_attempts = 1\ntimeout = 1s\n" + extraConfig))
        if declareFirst {
            try await eventually("the queues declared") { try await Self.exists(queue + ".dead", client: client) }
            try await client.publish(ids: ids, to: queue)
        }
        try await eventually("every message dead-lettered", timeout: .seconds(120)) {
            try await client.count(queue + ".dead") == ids.count
        }
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0, "\(warren.log)")
        return warren.configPath
    }

    /// Whether the queue exists (a passive declare; the channel is opened again after a 404).
    static func exists(_ name: String, client: TestClient) async throws -> Bool {
        do {
            _ = try await client.connection.declareQueue(name, on: 1, passive: true)
            return true
        } catch where error.replyCode == 404 {
            try await client.connection.openChannel(1)
            try await client.connection.enableConfirms(on: 1)
            return false
        }
    }

    /// A config for a consumer on `queue` whose dead-letter queue the test
    /// fills itself (declared here), for what needs a known queue order.
    static func configWithDeadLetters(_ ids: [String], client: TestClient, queue: String, queueType: String = "classic",
                                      headers: FieldTable? = nil, extra: String = "") async throws -> String {
        try await client.connection.declareQueue(queue + ".dead", on: 1, durable: true,
                                                 arguments: FieldTable([("x-queue-type", .string(queueType))]))
        try await client.publish(ids: ids, to: queue + ".dead", headers: headers)
        let path = try WarrenBinary.makeDirectory() + "/warren.ini"
        try warrenConfig(queue: queue, command: "/bin/true", extra: extra).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    struct Run {
        var code: Int32?
        var stdout: String
        var stderr: String
        /// `--json` output, one object a line.
        var objects: [[String: Any]] {
            stdout.split(separator: "\n").map { line in
                (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] ?? ["unparsed": String(line)]
            }
        }
        var ids: [String] { objects.map { $0["message_id"] as? String ?? "?" } }
    }

    /// Runs `warren dlq ARGUMENTS --config CONFIG` to its end.
    static func dlq(_ arguments: [String], config: String) async throws -> Run {
        let warren = try WarrenBinary(config: "", arguments: ["dlq"] + arguments + ["--config", config], separateStdout: true)
        let code = await warren.waitForExit()
        return Run(code: code, stdout: warren.stdout, stderr: warren.log)
    }

    @Test func listAndShowDescribeDeadLettersOfRealFailures() async throws {
        try await withTestQueue { client, queue in
            let hostile = "evil\u{1b}[2J\nfake-row"
            let config = try await Self.deadLetter(["data-1", "slow-1", "signal-1", hostile], client: client, queue: queue)

            let listed = try await Self.dlq(["list", "--json"], config: config)
            #expect(listed.code == 0, "\(listed.stderr)")
            #expect(Set(listed.ids) == ["data-1", "slow-1", "signal-1", hostile], "\(listed.stdout)")
            let byId = Dictionary(listed.objects.map { ($0["message_id"] as? String ?? "?", $0) }) { a, _ in a }
            let data = try #require(byId["data-1"])
            #expect(data["exit_code"] as? Int == 65)
            #expect(data["signal"] is NSNull)
            #expect(data["timed_out"] as? Bool == false)
            #expect(data["attempts"] as? Int == 1)
            #expect(data["queue"] as? String == queue)
            #expect(data["consumer"] as? String == "test")
            #expect(data["exchange"] as? String == "")
            #expect(data["routing_key"] as? String == queue)
            #expect(data["last_stderr"] as? String == "failing data-1")
            #expect(data["body_size"] as? Int == 6)
            let when = try #require(data["dead_lettered_at"] as? Int)
            #expect(abs(when - Int(Date().timeIntervalSince1970)) < 600)
            #expect(byId["slow-1"]?["timed_out"] as? Bool == true)
            #expect(byId["signal-1"]?["signal"] as? Int == 9)
            #expect(byId["signal-1"]?["exit_code"] is NSNull)

            let table = try await Self.dlq(["list"], config: config)
            #expect(table.code == 0, "\(table.stderr)")
            let lines = table.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            #expect(lines.count == 5, "a header and one line per dead letter:\n\(table.stdout)")
            #expect(lines.first?.hasPrefix("POS") == true)
            for (id, failure) in [("data-1", "exit 65"), ("slow-1", "timeout"), ("signal-1", "signal 9")] {
                #expect(lines.contains { $0.contains(id) && $0.contains(failure) && $0.contains(queue) }, "\(table.stdout)")
            }
            #expect(!table.stdout.contains("\u{1b}"), "an escape sequence from the queue reached the terminal")
            #expect(lines.contains { $0.contains(#"evil\x1b[2J\nfake-row"#) }, "\(table.stdout)")

            let shown = try await Self.dlq(["show", "--id", "data-1"], config: config)
            #expect(shown.code == 0, "\(shown.stderr)")
            #expect(shown.stdout.contains("message id:"), "\(shown.stdout)")
            #expect(shown.stdout.contains("failure:") && shown.stdout.contains("exit 65"))
            #expect(shown.stdout.contains("last stderr:") && shown.stdout.contains("failing data-1"))
            #expect(shown.stdout.contains("x-warren-reason:"))
            #expect(shown.stdout.contains("body (6 bytes):\ndata-1\n"), "\(shown.stdout)")
            let byEscapedId = try await Self.dlq(["show", "--json", "--id", #"evil\x1b[2J\nfake-row"#], config: config)
            #expect(byEscapedId.ids == [hostile], "the id as the table prints it selects the message: \(byEscapedId.stdout)")
            #expect(byEscapedId.objects.first?["body"] as? String == hostile)
            let missing = try await Self.dlq(["show", "--id", "nope"], config: config)
            #expect(missing.code == 1)

            let left = try await client.drain(queue + ".dead").map(\.id)
            #expect(left == listed.ids, "reading lost or reordered a dead letter")
        }
    }

    @Test func readingNeverReordersOrLosesAClassicDeadLetterQueue() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...60).map { "d-\($0)" }
            let config = try await Self.configWithDeadLetters(ids, client: client, queue: queue)
            let first = try await Self.dlq(["list", "--json", "--limit", "1000"], config: config)
            #expect(first.code == 0, "\(first.stderr)")
            #expect(first.ids == ids)
            #expect(first.objects.map { $0["position"] as? Int ?? 0 } == Array(1...60))
            let head = try await Self.dlq(["list", "--json", "--limit", "10"], config: config)
            #expect(head.ids == Array(ids.prefix(10)))
            let table = try await Self.dlq(["list", "--limit", "10"], config: config)
            #expect(table.stdout.contains("(50 more not shown; raise --limit)"), "\(table.stdout)")
            let middle = try await Self.dlq(["show", "--json", "--id", "d-37"], config: config)
            #expect(middle.ids == ["d-37"])
            #expect(middle.objects.first?["position"] as? Int == 37)
            let again = try await Self.dlq(["list", "--json", "--limit", "1000"], config: config)
            #expect(again.ids == ids, "a second reading found another order")
            let consumed = try await client.drain(queue + ".dead").map(\.id)
            #expect(consumed == ids, "a consumer after the readings found another order")
        }
    }

    /// A quorum queue (RabbitMQ 3.10) returns a burst of requeued messages
    /// in an order of its own, so only the messages are kept, not their
    /// order (README, "Dead letters").
    @Test func readingNeverLosesOrDuplicatesAQuorumDeadLetterQueue() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...60).map { "d-\($0)" }
            let config = try await Self.configWithDeadLetters(ids, client: client, queue: queue, queueType: "quorum")
            let first = try await Self.dlq(["list", "--json", "--limit", "1000"], config: config)
            #expect(first.code == 0, "\(first.stderr)")
            #expect(first.ids == ids, "the first reading sees the queue's own order")
            let head = try await Self.dlq(["list", "--json", "--limit", "10"], config: config)
            #expect(head.ids.count == 10 && Set(head.ids).isSubset(of: Set(ids)))
            let middle = try await Self.dlq(["show", "--json", "--id", "d-37"], config: config)
            #expect(middle.ids == ["d-37"])
            let again = try await Self.dlq(["list", "--json", "--limit", "1000"], config: config)
            #expect(again.ids.sorted() == ids.sorted() && again.ids.count == 60, "\(again.ids)")
            // A quorum queue applies returns after the command's connection
            // closed (through its Raft log): the count catches up, or one was lost.
            try await eventually("every message back in the queue") { try await client.count(queue + ".dead") == 60 }
            let consumed = try await client.drain(queue + ".dead").map(\.id)
            #expect(consumed.sorted() == ids.sorted() && consumed.count == 60, "\(consumed)")
        }
    }

    @Test func replayReturnsEachMessageToItsQueueWithAttemptsReset() async throws {
        try await withTestQueue { client, queue in
            // Failed three times (exit 1 is retried), then dead-lettered.
            let ids = ["r-1", "r-2", "r-3"]
            try await client.publish(ids: ids, to: queue)
            let retries = "max_attempts = 3\nretry_delay = 100ms\nretry_delay_max = 100ms"
            let failing = try WarrenBinary(config: try warrenConfig(queue: queue, command: "sh -c 'exit 1'", extra: retries))
            try await eventually("dead-lettered after 3 attempts") { try await client.count(queue + ".dead") == 3 }
            failing.signal(SIGTERM)
            #expect(await failing.waitForExit() == 0)
            // One the daemon did not write: no x-warren-queue, so it goes to the consumer's queue.
            try await client.publish(ids: ["bare"], to: queue + ".dead", headers: FieldTable([("tenant", .string("acme"))]))
            let config = failing.configPath

            let one = try await Self.dlq(["replay", "--id", "r-2"], config: config)
            #expect(one.code == 0, "\(one.stderr)")
            #expect(one.stdout.contains("replayed r-2 -> \(queue)"), "\(one.stdout)")
            #expect(try await client.count(queue) == 1)
            let rest = try await Self.dlq(["replay", "--json"], config: config)
            #expect(rest.code == 0, "\(rest.stderr)")
            #expect(Set(rest.ids) == ["r-1", "r-3", "bare"])
            #expect(rest.objects.allSatisfy { $0["outcome"] as? String == "replayed" && $0["queue"] as? String == queue })
            #expect(try await client.count(queue + ".dead") == 0)

            // Handled again from attempt 1, seeing where it was first published
            // and no other header of warren's.
            let scripts = try WarrenBinary.makeDirectory()
            try #"""
                echo "$WARREN_MESSAGE_ID attempt=$WARREN_ATTEMPT key=$WARREN_ROUTING_KEY tenant=$WARREN_HEADER_TENANT" $(env | grep '^WARREN_HEADER_X_WARREN_' | cut -d= -f1 | sort) >> "$1"
                """#.write(toFile: scripts + "/handler.sh", atomically: true, encoding: .utf8)
            let handling = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh \(scripts)/handler.sh \(scripts)/handled", extra: retries))
            func handled() -> [String] {
                ((try? String(contentsOfFile: scripts + "/handled", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            do {
                try await eventually("all handled") { handled().count == 4 }
            } catch {
                Issue.record("handled: \(handled())\n\(handling.log)")
                throw error
            }
            handling.signal(SIGTERM)
            #expect(await handling.waitForExit() == 0)
            let origin = " WARREN_HEADER_X_WARREN_EXCHANGE WARREN_HEADER_X_WARREN_ROUTING_KEY"
            #expect(Set(handled()) == Set(ids.map { "\($0) attempt=1 key=\(queue) tenant=\(origin)" }
                                         + ["bare attempt=1 key=\(queue) tenant=acme"]), "\(handled())")
        }
    }

    @Test func replayKilledMidwayLosesNoMessageAndDuplicatesNoneInItsQueue() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...1000).map { "k-\($0)" }
            let config = try await Self.deadLetter(ids, client: client, queue: queue, concurrency: 8)
            let replay = try WarrenBinary(config: "", arguments: ["dlq", "replay", "--config", config], separateStdout: true)
            try await eventually("a part replayed", timeout: .seconds(60)) {
                replay.stdout.split(separator: "\n").count >= 300
            }
            replay.signal(SIGKILL)
            _ = await replay.waitForExit()
            let reported = Set(replay.stdout.split(separator: "\n").filter { $0.hasPrefix("replayed ") }
                .map { String($0.split(separator: " ")[1]) })

            // The broker requeues what the killed connection held as soon as
            // its socket closes; a lost message keeps the sum short for good.
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(10)
            while try await client.count(queue) + client.count(queue + ".dead") < ids.count, clock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let inQueue = try await client.drain(queue).map(\.id)
            let dead = try await client.drain(queue + ".dead").map(\.id)
            #expect(inQueue.count == Set(inQueue).count, "a message is twice in its queue")
            #expect(dead.count == Set(dead).count, "a message is twice in the dead-letter queue")
            #expect(Set(inQueue).union(dead) == Set(ids), "a message was lost")
            #expect(Set(inQueue).isSubset(of: Set(ids)))
            #expect(!inQueue.isEmpty && !dead.isEmpty, "the kill came before or after the replay: \(inQueue.count) replayed")
            // Reported replayed means confirmed and acked: in its queue, not dead.
            #expect(reported.isSubset(of: Set(inQueue)))
            // Replay handles one message at a time: only the one between its
            // confirm and its ack (or its publish and confirm) at the kill.
            let both = Set(inQueue).intersection(dead)
            #expect(both.count <= 1, "only the message between publish and ack at the kill may be in both: \(both.sorted())")
        }
    }

    @Test func aDeadLetterTheBrokerOrTheConfigRefusesStaysDeadLettered() async throws {
        try await withTestQueue { client, queue in
            // A second consumer sharing the dead-letter queue, whose queue does not exist (never declared).
            let config = try await Self.configWithDeadLetters(["first"], client: client, queue: queue,
                                                              extra: "\n[consumer.gone]\nqueue = \(queue).gone\ncommand = /bin/true\ndead_letter_queue = \(queue).dead")
            try await client.publish(ids: ["orphan"], to: queue + ".dead",
                                     headers: FieldTable([("x-warren-queue", .string(queue + ".gone"))]))
            try await client.publish(ids: ["stranger"], to: queue + ".dead",
                                     headers: FieldTable([("x-warren-queue", .string(queue + ".elsewhere"))]))
            try await client.publish(ids: ["last"], to: queue + ".dead")
            try await client.connection.declareQueue(queue + ".elsewhere", on: 1, durable: false, autoDelete: false)
            let replay = try await Self.dlq(["replay", "--consumer", "test"], config: config)
            _ = try? await client.connection.deleteQueue(queue + ".elsewhere", on: 1)
            #expect(replay.code == 1, "a refused copy makes the exit code 1")
            #expect(replay.stdout.contains("refused  orphan -> \(queue).gone"), "\(replay.stdout)")
            #expect(replay.stdout.contains("refused  stranger -> \(queue).elsewhere: no consumer in the config that dead-letters to '\(queue).dead' consumes"), "\(replay.stdout)")
            #expect(replay.stdout.contains("refused  orphan -> \(queue).gone: "), "the broker's refusal: \(replay.stdout)")
            #expect(!replay.stdout.contains("refused  orphan -> \(queue).gone: no consumer"), "\(replay.stdout)")
            #expect(replay.stdout.contains("replayed 2 from '\(queue).dead'; 2 refused"), "\(replay.stdout)")
            #expect(try await client.drain(queue + ".dead").map(\.id) == ["orphan", "stranger"],
                    "a dead letter is acked only after its copy was confirmed")
            #expect(Set(try await client.drain(queue).map(\.id)) == ["first", "last"])
        }
    }

    @Test func thePasswordComesFromPasswordFileLikeTheDaemonsAndIsNeverPrinted() async throws {
        try await withTestQueue { client, queue in
            let user = "warren-dlq-\(UInt32.random(in: 0...UInt32.max))"
            let password = "Dlq-\(UInt64.random(in: 0...UInt64.max))-s3cret"
            try FaultTests.rabbitmqctl("add_user", user, password)
            try FaultTests.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            defer { try? FaultTests.rabbitmqctl("delete_user", user) }
            try await client.connection.declareQueue(queue + ".dead", on: 1, durable: true)
            try await client.publish(ids: ["s-1"], to: queue + ".dead")
            let base = try #require(URL(string: TestBroker.url))
            let directory = try WarrenBinary.makeDirectory()
            let config = directory + "/warren.ini"
            try warrenConfig(queue: queue, command: "/bin/true")
                .replacingOccurrences(of: "url = \(TestBroker.url)",
                                      with: "url = amqp://\(user)@127.0.0.1:\(base.port ?? 5672)/%2f\npassword_file = \(directory)/amqp-password")
                .write(toFile: config, atomically: true, encoding: .utf8)
            try (password + "\n").write(toFile: directory + "/amqp-password", atomically: true, encoding: .utf8)
            let listed = try await Self.dlq(["show", "--json"], config: config)
            #expect(listed.code == 0, "\(listed.stderr)")
            #expect(listed.ids == ["s-1"])
            #expect(!listed.stdout.contains(password) && !listed.stderr.contains(password))

            try ("not-" + password + "\n").write(toFile: directory + "/amqp-password", atomically: true, encoding: .utf8)
            let refused = try await Self.dlq(["list"], config: config)
            #expect(refused.code == 1)
            #expect(refused.stderr.contains("refused login as '\(user)'"), "\(refused.stderr)")
            #expect(!refused.stdout.contains(password) && !refused.stderr.contains(password), "\(refused.stderr)")
            #expect(try await client.count(queue + ".dead") == 1)
        }
    }

    @Test func purgeDropsNothingWithoutYes() async throws {
        try await withTestQueue { client, queue in
            let ids = ["p-1", "p-2", "p-3", "p-4"]
            let config = try await Self.configWithDeadLetters(ids, client: client, queue: queue)
            let refused = try await Self.dlq(["purge"], config: config)
            #expect(refused.code == 64)
            #expect(refused.stderr.contains("--yes"), "\(refused.stderr)")
            #expect(refused.stderr.contains("all 4 messages"), "\(refused.stderr)")
            #expect(try await client.count(queue + ".dead") == 4)
            let unknown = try await Self.dlq(["purge", "--yes", "--consumer", "other"], config: config)
            #expect(unknown.code == 64)
            #expect(unknown.stderr.contains("no [consumer.other]"), "\(unknown.stderr)")
            #expect(try await client.count(queue + ".dead") == 4)

            let one = try await Self.dlq(["purge", "--yes", "--id", "p-2"], config: config)
            #expect(one.code == 0, "\(one.stderr)")
            #expect(one.stdout == "purged 1 messages from '\(queue).dead'\n")
            let listed = try await Self.dlq(["list", "--json"], config: config)
            #expect(listed.ids == ["p-1", "p-3", "p-4"], "the others stay, in order")
            let all = try await Self.dlq(["purge", "--yes", "--consumer", "test"], config: config)
            #expect(all.code == 0, "\(all.stderr)")
            #expect(all.stdout == "purged 3 messages from '\(queue).dead'\n")
            #expect(try await client.count(queue + ".dead") == 0)
        }
    }

    /// A forged `x-warren-queue`: only the queue of a consumer that
    /// dead-letters to this queue is a target (README, "replay"). Another
    /// consumer of the file with a dead-letter queue of its own could never
    /// have put a message here, nor could a queue the file does not name.
    @Test func replayGoesOnlyToQueuesOfConsumersSharingTheDeadLetterQueue() async throws {
        try await withTestQueue { client, queue in
            let extra = """

                [consumer.sharing]
                queue = \(queue).sharing
                command = /bin/true
                dead_letter_queue = \(queue).dead

                [consumer.neighbour]
                queue = \(queue).neighbour
                command = /bin/true
                """
            let config = try await Self.configWithDeadLetters([], client: client, queue: queue, extra: extra)
            for name in [queue + ".sharing", queue + ".neighbour", queue + ".nowhere"] {
                try await client.connection.declareQueue(name, on: 1, durable: true)
            }
            for (id, target) in [("shared", ".sharing"), ("forged", ".neighbour"), ("stranger", ".nowhere")] {
                try await client.publish(ids: [id], to: queue + ".dead", headers: FieldTable([("x-warren-queue", .string(queue + target))]))
            }
            let replay = try await Self.dlq(["replay", "--consumer", "test"], config: config)
            let neighbour = try await client.count(queue + ".neighbour")
            let nowhere = try await client.count(queue + ".nowhere")
            let shared = try await client.drain(queue + ".sharing").map(\.id)
            for name in [queue + ".sharing", queue + ".neighbour", queue + ".nowhere"] {
                _ = try? await client.connection.deleteQueue(name, on: 1)
            }
            #expect(replay.code == 1, "\(replay.stdout)\(replay.stderr)")
            #expect(replay.stdout.contains("replayed shared -> \(queue).sharing"), "\(replay.stdout)")
            #expect(replay.stdout.contains("refused  forged -> \(queue).neighbour: no consumer in the config that dead-letters to"), "\(replay.stdout)")
            #expect(replay.stdout.contains("refused  stranger -> \(queue).nowhere: no consumer in the config that dead-letters to"), "\(replay.stdout)")
            #expect(shared == ["shared"])
            #expect(neighbour == 0 && nowhere == 0, "a forged header carried a message into another queue")
            #expect(try await client.drain(queue + ".dead").map(\.id) == ["forged", "stranger"])
        }
    }

    /// RabbitMQ 3.10 here: the 4.x path (x-delivery-limit = -1) is not run.
    /// The version is read from the broker, and a quorum consumer's
    /// dead-letter queue is declared as before: the type, no limit argument.
    @Test func onRabbitMQ3AQuorumDeadLetterQueueGetsNoDeliveryLimitArgument() async throws {
        try await withTestQueue { client, queue in
            let version = try #require(client.connection.serverVersion)
            #expect(version.hasPrefix("3."), "\(version)")
            #expect(BrokerVersionCheck.major(version) == 3)
            // warren declares the queue itself, as a quorum queue.
            _ = try await client.connection.deleteQueue(queue, on: 1)
            let config = try await Self.deadLetter(["q-1"], client: client, queue: queue,
                                                   extraConfig: "queue_type = quorum", declareFirst: true)
            // Declared again as warren on 3.x must: refused if it held any other argument.
            _ = try await client.connection.declareQueue(queue + ".dead", on: 1, durable: true,
                                                         arguments: FieldTable([("x-queue-type", .string("quorum"))]))
            let listed = try await Self.dlq(["list", "--json"], config: config)
            #expect(listed.code == 0, "\(listed.stderr)")
            #expect(listed.ids == ["q-1"])
            #expect(!listed.stderr.contains("delivery limit"), "no warning on RabbitMQ 3: \(listed.stderr)")
        }
    }

    /// A dead letter of a message that went through a delay queue: its
    /// first death is the delay's TTL (`expired` in `<queue>.retry.1`), its
    /// last the one that made it a dead letter. Made by the broker itself.
    @Test func aBrokerMadeDeadLetterAfterARetryShowsItsLastDeathAndIsReplayed() async throws {
        try await withTestQueue { client, queue in
            _ = try await client.connection.deleteQueue(queue, on: 1)
            try await client.connection.declareQueue(queue, on: 1, durable: true, arguments: FieldTable([
                ("x-dead-letter-exchange", .string("")), ("x-dead-letter-routing-key", .string(queue + ".dead"))]))
            try await client.connection.declareQueue(queue + ".retry.1", on: 1, durable: true, arguments: FieldTable([
                ("x-message-ttl", .int64(50)), ("x-dead-letter-exchange", .string("")), ("x-dead-letter-routing-key", .string(queue))]))
            let config = try await Self.configWithDeadLetters([], client: client, queue: queue)
            try await client.publish(ids: ["b-1"], to: queue + ".retry.1")
            try await eventually("back from its delay") { try await client.count(queue) == 1 }
            let (delivery, _) = try #require(try await client.connection.get(queue: queue, on: 1))
            client.connection.nack(delivery, requeue: false)
            try await eventually("dead-lettered by the broker") { try await client.count(queue + ".dead") == 1 }

            let listed = try await Self.dlq(["list", "--json"], config: config)
            #expect(listed.code == 0, "\(listed.stderr)")
            #expect(listed.objects.first?["reason"] as? String == "broker: rejected", "\(listed.stdout)")
            #expect(listed.objects.first?["queue"] as? String == queue, "\(listed.stdout)")
            let replay = try await Self.dlq(["replay"], config: config)
            #expect(replay.code == 0, "\(replay.stdout)\(replay.stderr)")
            #expect(replay.stdout.contains("replayed b-1 -> \(queue)\n"), "\(replay.stdout)")
            #expect(try await client.drain(queue).map(\.id) == ["b-1"])
            #expect(try await client.count(queue + ".dead") == 0)
        }
    }

    /// A transient dead letter's copy is persistent: a classic queue keeps
    /// it over a broker restart, and the dead letter is gone by then.
    @Test func aReplayedCopyIsPersistent() async throws {
        try await withTestQueue { client, queue in
            let config = try await Self.configWithDeadLetters([], client: client, queue: queue)
            try await client.connection.publish(Array("t-1".utf8), routingKey: queue + ".dead", on: 1,
                                                properties: MessageProperties(deliveryMode: 1, messageId: "t-1"))
            let replay = try await Self.dlq(["replay"], config: config)
            #expect(replay.code == 0, "\(replay.stderr)")
            let (copy, _) = try #require(try await client.connection.get(queue: queue, on: 1))
            client.connection.ack(copy)
            #expect(copy.properties.messageId == "t-1")
            #expect(copy.properties.deliveryMode == 2)
        }
    }

    /// `warren dlq replay | head -1`: the reader leaves after one line. The
    /// replay stops after the message it was reporting, its ack sent: no
    /// message is lost, none is both replayed and still dead-lettered.
    @Test func replayIntoAClosedPipeStopsCleanlyWithNoDuplicate() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...200).map { "h-\($0)" }
            let config = try await Self.configWithDeadLetters(ids, client: client, queue: queue)
            let directory = try WarrenBinary.makeDirectory()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", #""$0" dlq replay --config "$1" 2> "$2/stderr" | head -1 > "$2/head"; echo "${PIPESTATUS[0]}" > "$2/status""#,
                                 WarrenBinary.path, config, directory]
            try process.run()
            process.waitUntilExit()
            let status = try String(contentsOfFile: directory + "/status", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let stderr = (try? String(contentsOfFile: directory + "/stderr", encoding: .utf8)) ?? ""
            let head = (try? String(contentsOfFile: directory + "/head", encoding: .utf8)) ?? ""
            #expect(status == "1", "not killed by SIGPIPE (141), stopped with 1: \(status) \(stderr)")
            #expect(stderr.contains("stdout was closed"), "\(stderr)")
            #expect(head.hasPrefix("replayed h-1 -> \(queue)"), "\(head)")
            let inQueue = try await client.drain(queue).map(\.id)
            let dead = try await client.drain(queue + ".dead").map(\.id)
            #expect(inQueue.count == Set(inQueue).count && dead.count == Set(dead).count)
            #expect(Set(inQueue).isDisjoint(with: dead), "both replayed and dead-lettered: \(Set(inQueue).intersection(dead).sorted())")
            #expect(Set(inQueue).union(dead) == Set(ids), "a message was lost")
            #expect(inQueue.contains("h-1") && !dead.isEmpty, "\(inQueue.count) replayed")
        }
    }

    /// A list keeps no body: 200 messages of 1 MiB listed whole must not
    /// make `warren dlq list` hold 200 MiB. Its peak resident size (VmHWM,
    /// read from /proc while it runs; the peak only grows) stays under a
    /// quarter of the bodies.
    @Test func listingBigDeadLettersHoldsNoBody() async throws {
        try await withTestQueue { client, queue in
            let config = try await Self.configWithDeadLetters([], client: client, queue: queue)
            let body = [UInt8](repeating: 0x61, count: 1 << 20)
            for index in 1...200 {
                try await client.connection.publish(body, routingKey: queue + ".dead", on: 1,
                                                    properties: MessageProperties(deliveryMode: 1, messageId: "big-\(index)"))
            }
            let warren = try WarrenBinary(config: "", arguments: ["dlq", "list", "--json", "--limit", "200", "--config", config],
                                          separateStdout: true)
            var peakKiB = 0
            while kill(warren.pid, 0) == 0 {
                if let status = try? String(contentsOfFile: "/proc/\(warren.pid)/status", encoding: .utf8),
                   let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
                   let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
                    peakKiB = max(peakKiB, kib)
                }
                try await Task.sleep(for: .milliseconds(5))
                if let status = try? String(contentsOfFile: "/proc/\(warren.pid)/stat", encoding: .utf8),
                   status.split(separator: " ").dropFirst(2).first == "Z" { break }
            }
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let listed = Run(code: 0, stdout: warren.stdout, stderr: warren.log)
            #expect(listed.ids == (1...200).map { "big-\($0)" })
            #expect(listed.objects.allSatisfy { $0["body_size"] as? Int == 1 << 20 })
            #expect(peakKiB > 0, "VmHWM was read")
            print("warren dlq list of 200 MiB: peak resident size \(peakKiB) KiB")
            #expect(peakKiB < 50 * 1024, "peak resident size \(peakKiB) KiB for 200 MiB of bodies listed")
            #expect(try await client.count(queue + ".dead") == 200)
        }
    }
}

/// The major version in a broker's `version` property.
enum BrokerVersionCheck {
    static func major(_ version: String) -> Int? { Int(version.split(separator: ".").first ?? "") }
}

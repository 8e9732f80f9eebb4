import AMQP
import Foundation
import Glibc
import Logging
import Testing

/// A quorum queue on a three-node cluster: the node leading it crashes
/// (`kill -9`) under load and comes back. Runs under `make test-cluster`, which starts the
/// three nodes (scripts/cluster.sh); `make test` has one node only, and
/// two cores are not enough for three more beside the other suites.
@Suite(.serialized, .enabled(if: TestCluster.urls != nil, "needs the three nodes of `make test-cluster`"))
struct ClusterTests {
    static var urls: [String]? { TestCluster.urls }
    static var directory: String { TestCluster.directory }

    /// scripts/cluster.sh with `arguments`; its output (stdout and stderr).
    /// Run on a thread of its own and reaped by its pid: it may take
    /// seconds, which must not hold a cooperative thread (the publisher
    /// and the fault run side by side on two cores), and Foundation's
    /// `Process` was seen to leave such a child unreaped, the test hung.
    @discardableResult
    static func cluster(_ arguments: [String], expectSuccess: Bool = true) async -> String {
        let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let (status, output) = await withCheckedContinuation { (done: CheckedContinuation<(Int32, String), Never>) in
            Thread.detachNewThread { done.resume(returning: spawnAndWait([root + "/scripts/cluster.sh"] + arguments)) }
        }
        if expectSuccess { #expect(status == 0, "cluster.sh \(arguments) failed (\(status)): \(output)") }
        return output
    }

    private static func spawnAndWait(_ argv: [String]) -> (Int32, String) {
        let out = "/tmp/warren-cluster-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { unlink(out) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { return (-1, "posix_spawn: \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        // Exited: its code; killed: 128 + the signal, as a shell says.
        return ((status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    static func connect(_ url: String) async throws -> AMQPConnection {
        var options = try ConnectionOptions(url: url)
        options.connectionName = "warren-cluster-tests"
        let connection = try await AMQPConnection.connect(options, logger: Logger(label: "test"))
        try await connection.openChannel(1)
        try await connection.enableConfirms(on: 1)
        return connection
    }

    /// The node leading the queue, by its name in `list_queues`, asked of node `n`.
    static func leader(of queue: String, askingNode n: Int, expectSuccess: Bool = true) async -> Int? {
        let name = await cluster(["ctl", directory, "\(n)", "list_queues", "name", "leader", "--no-table-headers"],
                                 expectSuccess: expectSuccess)
            .split(separator: "\n").first { $0.hasPrefix(queue + "\t") }?.split(separator: "\t").last.map(String.init)
        return (1...3).first { name?.hasPrefix("warren-cluster-\($0)-") == true }
    }

    @Test func theNodeLeadingTheQuorumQueueCrashingLosesNothingAndEveryWarrenGoesOn() async throws {
        let urls = try #require(Self.urls)
        let queue = "test.cluster.\(UInt32.random(in: 0...UInt32.max))"
        let command = #"sh -c 'sleep 0.005; echo "$WARREN_MESSAGE_ID $(date +%s.%N)" >> {dir}/handled'"#
        let config = """
            [broker]
            url = \(urls.joined(separator: " "))
            heartbeat = 2s
            reconnect_min = 100ms
            reconnect_max = 1s
            consumer_timeout = 0

            [consumer.test]
            queue = \(queue)
            command = \(command)
            queue_type = quorum
            prefetch = 8
            concurrency = 4
            retry_delay = 100ms
            """
        let a = try WarrenBinary(config: config)
        try await eventually("the first warren consumes", timeout: .seconds(60)) { a.log.contains("NOTICE running") }

        // Which node leads the queue (A declared it): it is the one to crash.
        // B connects to it first, so at least one warren loses its connection and must fail over.
        let leader = try #require(await Self.leader(of: queue, askingNode: 1), "no leader found")
        let survivor = leader == 1 ? 2 : 1
        let rotated = Array(urls[(leader - 1)...] + urls[..<(leader - 1)])
        let b = try WarrenBinary(config: config.replacingOccurrences(of: "url = \(urls.joined(separator: " "))",
                                                                     with: "url = \(rotated.joined(separator: " "))"))
        try await eventually("the second warren consumes", timeout: .seconds(60)) { b.log.contains("NOTICE running") }

        // Publish through a node that stays up, a message every 10 ms, before, during and after the fault.
        let publisher = try await Self.connect(urls[survivor - 1])
        let clock = ContinuousClock()
        let events = try await withThrowingTaskGroup(of: [(String, Double)].self) { group in
            group.addTask {
                var ids: [(String, Double)] = []
                let end = clock.now + .seconds(24)
                var n = 0
                while clock.now < end {
                    n += 1
                    let id = "c-\(n)"
                    do {
                        try await publisher.publish(Array(id.utf8), routingKey: queue, on: 1,
                                                    properties: MessageProperties(deliveryMode: 2, messageId: id))
                        ids.append((id, Self.now()))
                    } catch {
                        // Not confirmed: not counted (it may or may not be in the queue).
                        try? await publisher.openChannel(1, confirms: true)
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
                return ids
            }
            group.addTask {
                try await Task.sleep(for: .seconds(4))
                let stopping = Self.now()
                await Self.cluster(["kill", Self.directory, "\(leader)"])
                let stopped = Self.now()
                // A node that is up leads the queue now.
                var moved = -1.0
                while Self.now() - stopped < 6 {
                    // Asked while the cluster elects: a failed answer is asked again.
                    if let now = await Self.leader(of: queue, askingNode: survivor, expectSuccess: false), now != leader {
                        moved = Self.now()
                        break
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
                try await Task.sleep(for: .seconds(max(0, 6 - (Self.now() - stopped))))
                let starting = Self.now()
                await Self.cluster(["restart", Self.directory, "\(leader)"])
                return [("stopping", stopping), ("stopped", stopped), ("moved", moved), ("starting", starting), ("started", Self.now())]
            }
            return try await group.reduce(into: [(String, Double)]()) { $0 += $1 }
        }
        let marks = Dictionary(uniqueKeysWithValues: events.filter { !$0.0.hasPrefix("c-") })
        let published = events.filter { $0.0.hasPrefix("c-") }.map(\.0)
        let publishTimes = events.filter { $0.0.hasPrefix("c-") }.map(\.1).sorted()
        let publishPause = zip(publishTimes.dropFirst(), publishTimes).map { $0 - $1 }.max() ?? 0
        await publisher.close()

        func handled() -> [(id: String, at: Double)] {
            (a.lines("handled") + b.lines("handled")).compactMap { line in
                let parts = line.split(separator: " ")
                guard parts.count == 2, let at = Double(parts[1]) else { return nil }
                return (String(parts[0]), at)
            }
        }
        try await eventually("every confirmed message handled", timeout: .seconds(90)) {
            Set(handled().map(\.id)).isSuperset(of: published)
        }
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(await a.waitForExit() == 0, "\(a.log)")
        #expect(await b.waitForExit() == 0, "\(b.log)")

        let all = handled()
        let ids = all.map(\.id)
        let duplicates = ids.count - Set(ids).count
        let lost = Set(published).subtracting(ids)
        let times = all.map(\.at).sorted()
        let gaps = zip(times.dropFirst(), times).map { (from: $1, length: $0 - $1) }
        let longest = gaps.max { $0.length < $1.length }
        let pause = longest?.length ?? 0
        let stopping = marks["stopping", default: 0]
        let resumed = times.first { $0 > (marks["stopped"] ?? 0) }.map { $0 - stopping } ?? -1
        let byA = Set(a.lines("handled").map { String($0.split(separator: " ")[0]) }).count
        let byB = Set(b.lines("handled").map { String($0.split(separator: " ")[0]) }).count
        func handledAfterCrash(_ warren: WarrenBinary) -> Int {
            warren.lines("handled").filter { line in
                line.split(separator: " ").last.flatMap { Double($0) }.map { $0 > marks["stopped", default: .infinity] } ?? false
            }.count
        }
        print("cluster: leader node \(leader) killed (kill -9) for 6 s under load: published \(published.count) (confirmed), "
              + "handled \(Set(ids).count), twice or more \(duplicates), lost \(lost.count); "
              + "by warren A \(byA), by B \(byB); longest pause in consumption \(String(format: "%.2f", pause)) s, "
              + "from \(String(format: "%.2f", (longest?.from ?? 0) - stopping)) s after the kill "
              + "(a new leader \(String(format: "%.2f", marks["moved", default: 0] - stopping)) s after it; the restart took "
              + "\(String(format: "%.2f", marks["started", default: 0] - marks["starting", default: 0])) s); first message handled "
              + "\(String(format: "%.2f", resumed)) s after the kill; longest pause in confirmed publishing "
              + "\(String(format: "%.2f", publishPause)) s")
        #expect(lost.isEmpty, "lost: \(lost.sorted())")
        // Twice only what was in flight on the crashed node: at most a
        // prefetch of deliveries (handled, their ack not yet through) per warren.
        #expect(duplicates <= 2 * 8, "\(duplicates) handled more than once")
        #expect(marks["moved", default: -1] > 0, "no node that is up took the lead of the queue within 6 s")
        // Both warrens go on: the one on the crashed node fails over to another URL.
        #expect(handledAfterCrash(a) > 0 && handledAfterCrash(b) > 0,
                "after the crash A handled \(handledAfterCrash(a)), B \(handledAfterCrash(b))")
        #expect(b.log.contains("connection to the broker lost"), "B was connected to the crashed node: \(b.log)")
        #expect(published.count > 500, "\(published.count) published")
        // The queue's other two nodes serve it: consumption resumes while the stopped node is still down.
        let firstAfterStop = times.first { $0 > (marks["stopped"] ?? 0) } ?? .infinity
        #expect(firstAfterStop < marks["starting", default: 0], "consumption resumed only once the node was back")
        #expect(pause < 6, "consumption paused \(pause) s")
        let verify = try await Self.connect(urls[survivor - 1])
        #expect(try await verify.declareQueue(queue, on: 1, passive: true).messageCount == 0)
        for name in [queue, queue + ".dead"] + (1...4).map({ "\(queue).retry.\($0)" }) {
            _ = try? await verify.deleteQueue(name, on: 1)
        }
        await verify.close()
    }
}

/// The cluster `make test-cluster` started (scripts/test-cluster.sh).
enum TestCluster {
    static var urls: [String]? {
        guard let value = getenv("WARREN_TEST_CLUSTER_URLS") else { return nil }
        return String(cString: value).split(separator: " ").map(String.init)
    }

    static var directory: String {
        getenv("WARREN_TEST_CLUSTER_DIR").map { String(cString: $0) } ?? ""
    }
}

import AMQP
import Foundation
import Glibc
import Logging
import Testing

/// A quorum queue on a three-node cluster: the node leading it stops under
/// load and comes back. Runs under `make test-cluster`, which starts the
/// three nodes (scripts/cluster.sh); `make test` has one node only, and
/// two cores are not enough for three more beside the other suites.
@Suite(.serialized, .enabled(if: TestCluster.urls != nil, "needs the three nodes of `make test-cluster`"))
struct ClusterTests {
    static var urls: [String]? { TestCluster.urls }
    static var directory: String { TestCluster.directory }

    /// rabbitmqctl against node `n` (1-3); its output.
    @discardableResult
    static func ctl(_ n: Int, _ arguments: String...) throws -> String {
        let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: root + "/scripts/cluster.sh")
        process.arguments = ["ctl", directory, "\(n)"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "rabbitmqctl \(arguments) on node \(n) failed: \(output)")
        return output
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

    @Test func stoppingTheNodeThatLeadsTheQuorumQueueLosesNothingAndPausesBriefly() async throws {
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
        let b = try WarrenBinary(config: config)
        try await eventually("the second warren consumes", timeout: .seconds(60)) { b.log.contains("NOTICE running") }

        // Which node leads the queue: it is the one to stop.
        let leaderName = try Self.ctl(1, "list_queues", "name", "leader", "--no-table-headers")
            .split(separator: "\n").first { $0.hasPrefix(queue + "\t") }?.split(separator: "\t").last.map(String.init)
        let leader = try #require((1...3).first { leaderName?.hasPrefix("warren-cluster-\($0)-") == true },
                                  "no leader found: \(String(describing: leaderName))")
        let survivor = leader == 1 ? 2 : 1

        // Publish through a node that stays up, a message every 10 ms, before, during and after the fault.
        let publisher = try await Self.connect(urls[survivor - 1])
        let clock = ContinuousClock()
        let events = try await withThrowingTaskGroup(of: [(String, Double)].self) { group in
            group.addTask {
                var ids: [(String, Double)] = []
                let end = clock.now + .seconds(20)
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
                try Self.ctl(leader, "stop_app")
                let stopped = Self.now()
                try await Task.sleep(for: .seconds(6))
                let starting = Self.now()
                try Self.ctl(leader, "start_app")
                return [("stopping", stopping), ("stopped", stopped), ("starting", starting), ("started", Self.now())]
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
        print("cluster: leader node \(leader) stopped for 6 s under load: published \(published.count) (confirmed), "
              + "handled \(Set(ids).count), twice or more \(duplicates), lost \(lost.count); "
              + "by warren A \(byA), by B \(byB); longest pause in consumption \(String(format: "%.2f", pause)) s, "
              + "from \(String(format: "%.2f", (longest?.from ?? 0) - stopping)) s after stop_app began "
              + "(stop_app took \(String(format: "%.2f", marks["stopped", default: 0] - stopping)) s, start_app "
              + "\(String(format: "%.2f", marks["started", default: 0] - marks["starting", default: 0])) s); first message handled after "
              + "stop_app returned: \(String(format: "%.2f", resumed)) s after it began; longest pause in confirmed publishing "
              + "\(String(format: "%.2f", publishPause)) s")
        #expect(lost.isEmpty, "lost: \(lost.sorted())")
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

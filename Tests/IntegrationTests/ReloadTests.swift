import Foundation
import Glibc
import Testing

/// SIGHUP: a valid file swaps the consumers without exiting, losing or
/// repeating a message; an invalid one changes nothing.
@Suite(.serialized) struct ReloadTests {
    @Test func aValidReloadSwapsConsumersWithoutLosingOrRepeatingAMessage() async throws {
        try await withTestQueue { client, queue in
            func config(_ label: String) throws -> String {
                try warrenConfig(queue: queue, command: #"sh -c 'sleep 0.3; echo "\#(label) $WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                                 prefetch: 10, concurrency: 2)
            }
            let notify = try SystemdNotifyTests.NotifySocket(abstract: true)
            let warren = try WarrenBinary(config: try config("A"), environment: ["NOTIFY_SOCKET": notify.name])
            let first = (1...20).map { "r-\($0)" }
            try await client.publish(ids: first, to: queue)
            try await eventually("A is working") { warren.lines("finished").count >= 2 }
            var seen = notify.drain()

            // Reload with a new handler.
            try config("B").replacingOccurrences(of: "{dir}", with: warren.directory)
                .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            let second = (1...10).map { "s-\($0)" }
            try await eventually("reloaded") { warren.log.contains("reloaded: the new consumers consume") }
            try await client.publish(ids: second, to: queue)
            try await eventually("everything processed", timeout: .seconds(40)) { warren.lines("finished").count >= 30 }
            try await eventually("the old consumers drained") { warren.log.contains("the replaced consumers have drained") }
            seen += notify.drain()

            // An invalid file: logged, nothing changes.
            try "[consumer.x]\nqueue = \n".write(toFile: warren.configPath, atomically: true, encoding: .utf8)
            warren.signal(SIGHUP)
            try await eventually("the problem logged") { warren.log.contains("the config file is not valid; keeping the running config") }
            try await client.publish(ids: ["after-bad"], to: queue)
            try await eventually("still consuming with B") { warren.lines("finished").contains("B after-bad") }

            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let finished = warren.lines("finished")
            let ids = finished.map { String($0.split(separator: " ")[1]) }
            #expect(ids.count == Set(ids).count, "a message ran twice: \(finished)")
            #expect(Set(ids) == Set(first + second + ["after-bad"]), "a message was lost")
            #expect(finished.contains { $0.hasPrefix("A ") } && finished.contains { $0.hasPrefix("B ") })
            #expect(second.allSatisfy { finished.contains("B \($0)") }, "messages published after the reload go to the new handler")
            #expect(try await client.count(queue) == 0)
            #expect(seen.contains { $0.contains("RELOADING=1") })
            let reloadIndex = seen.firstIndex { $0.contains("RELOADING=1") } ?? seen.count
            #expect(seen[reloadIndex...].contains { $0.contains("READY=1") }, "READY=1 after the reload: \(seen)")
            #expect(!seen.contains { $0.contains("STOPPING=1") }, "the old consumers' drain is not the process stopping")
        }
    }

    @Test func aStopRightAfterAReloadLetsRunningHandlersFinishWithinTheirGrace() async throws {
        try await withTestQueue { client, queue in
            let config = try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/started; sleep 4; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                concurrency: 2, grace: "30s")
            let warren = try WarrenBinary(config: config)
            try await client.publish(ids: ["slow-1", "slow-2"], to: queue)
            try await eventually("both handlers run") { warren.lines("started").count == 2 }
            warren.signal(SIGHUP)
            try await Task.sleep(for: .milliseconds(500))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(warren.lines("finished").sorted() == ["slow-1", "slow-2"], "\(warren.log)")
            #expect(warren.lines("started").count == 2, "a message ran twice")
            #expect(!warren.log.contains("terminating running handlers"), "one stop signal ended handlers inside their grace")
            #expect(try await client.count(queue) == 0)
        }
    }

    /// Runs a reload to a file that cannot start, then checks that the old
    /// consumers never stopped: a message published afterwards is handled by
    /// the old handler, and the process still stops cleanly.
    func reloadThatCannotStart(change: (String) -> String, published queue: String, client: TestClient) async throws -> WarrenBinary {
        let config = try warrenConfig(queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                                      extra: "retry_delay = 1s")
        let warren = try WarrenBinary(config: config)
        try await client.publish(ids: ["before"], to: queue)
        try await eventually("running") { warren.lines("finished") == ["before"] }
        try change(config).replacingOccurrences(of: "{dir}", with: warren.directory)
            .write(toFile: warren.configPath, atomically: true, encoding: .utf8)
        warren.signal(SIGHUP)
        try await eventually("the reload failed", timeout: .seconds(40)) { warren.log.contains("reload failed") }
        try await client.publish(ids: ["after"], to: queue)
        try await eventually("the old consumers still work") { warren.lines("finished") == ["before", "after"] }
        #expect(!warren.log.contains("reloaded: the new consumers consume"))
        warren.signal(SIGTERM)
        #expect(await warren.waitForExit() == 0, "\(warren.log)")
        #expect(try await client.count(queue) == 0)
        return warren
    }

    @Test func aReloadWhoseDelayQueuesAreRefusedKeepsTheRunningConsumers() async throws {
        try await withTestQueue { client, queue in
            let warren = try await reloadThatCannotStart(change: {
                $0.replacingOccurrences(of: "retry_delay = 1s", with: "retry_delay = 2s")
            }, published: queue, client: client)
            #expect(warren.log.contains("x-message-ttl"), "the log names the refused argument")
        }
    }

    @Test func aReloadWithAWrongPasswordKeepsTheRunningConsumers() async throws {
        try await withTestQueue { client, queue in
            let warren = try await reloadThatCannotStart(change: {
                $0.replacingOccurrences(of: "guest:guest@", with: "guest:wrong-secret@")
            }, published: queue, client: client)
            #expect(warren.log.contains("cannot connect"))
            #expect(!warren.log.contains("wrong-secret"), "the password reached the log")
        }
    }
}

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
            try await eventually("reloaded") { warren.log.contains("reloading: new consumers start") }
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
}

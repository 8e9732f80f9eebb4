import Foundation
import Glibc
import Testing

/// The notify protocol, against a datagram socket of the test's own standing
/// in for systemd.
@Suite(.serialized) struct SystemdNotifyTests {
    /// A bound AF_UNIX datagram socket; an abstract name when `name` starts with `@`.
    final class NotifySocket: @unchecked Sendable {
        // @unchecked: `fd` is set once in init and only read after; recv on
        // one descriptor from the test's one task at a time.
        let fd: Int32
        let name: String

        init(abstract: Bool) throws {
            let base = "warren-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            name = abstract ? "@" + base : "/tmp/" + base
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(name.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in bytes.enumerated() { raw[index] = byte }
                if abstract { raw[0] = 0 }
            }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
            }
            guard rc == 0 else { throw CancellationError() }
        }

        deinit {
            close(fd)
            if !name.hasPrefix("@") { unlink(name) }
        }

        /// Every datagram that arrived so far.
        func drain() -> [String] {
            var messages: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count <= 0 { return messages }
                messages.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
        }
    }

    @Test(arguments: [true, false])
    func readyOnlyOnceConsumingThenWatchdogPingsThenStopping(abstract: Bool) async throws {
        try await withTestQueue { client, queue in
            let notify = try NotifySocket(abstract: abstract)
            try await client.publish(ids: ["n1"], to: queue)
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: #"sh -c 'sleep 1.5; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#),
                environment: ["NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "400000"])
            var seen: [String] = []
            try await eventually("READY=1") {
                seen += notify.drain()
                return seen.contains { $0.contains("READY=1") }
            }
            // When READY=1 arrived, the consumer was already consuming.
            let info = try await client.connection.declareQueue(queue, on: 1, passive: true)
            #expect(info.consumerCount == 1)
            #expect(seen.first { $0.contains("READY=1") }?.contains("STATUS=running") == true)
            try await eventually("watchdog pings") {
                seen += notify.drain()
                return seen.filter { $0 == "WATCHDOG=1" }.count >= 3
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            seen += notify.drain()
            let draining = seen.filter { $0.contains("STATUS=draining") }
            #expect(draining.allSatisfy { $0.contains("STOPPING=1") })
            #expect(draining.first?.contains("1 in flight") == true, "\(seen)")
            #expect(seen.contains { $0.contains("EXTEND_TIMEOUT_USEC=") })
            #expect(seen.contains { $0.contains("STATUS=closing") })
            #expect(warren.lines("finished") == ["n1"])
        }
    }

    @Test func statusFollowsTheMessagesInFlightWhileRunning() async throws {
        try await withTestQueue { client, queue in
            let notify = try NotifySocket(abstract: true)
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: #"sh -c 'sleep 2.5; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#),
                environment: ["NOTIFY_SOCKET": notify.name])
            var seen: [String] = []
            try await eventually("READY=1") {
                seen += notify.drain()
                return seen.contains { $0.contains("READY=1") }
            }
            #expect(seen.contains { $0.contains("STATUS=running, 0 in flight") }, "\(seen)")
            try await client.publish(ids: ["r1"], to: queue)
            try? await eventually("STATUS with the running handler", timeout: .seconds(10)) {
                seen += notify.drain()
                return seen.contains { $0.contains("STATUS=running, 1 in flight") }
            }
            #expect(seen.contains { $0.contains("STATUS=running, 1 in flight") }, "\(seen)\n\(warren.log)")
            try await eventually("the handler finished", timeout: .seconds(10)) { warren.lines("finished") == ["r1"] }
            try await eventually("STATUS back to none in flight") {
                seen += notify.drain()
                return seen.last { $0.contains("STATUS=") }?.contains("STATUS=running, 0 in flight") == true
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
        }
    }

    @Test func noPingsForAnotherProcessesWatchdog() async throws {
        try await withTestQueue { _, queue in
            let notify = try NotifySocket(abstract: true)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true"),
                                          environment: ["NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
            var seen: [String] = []
            try await eventually("READY=1") {
                seen += notify.drain()
                return seen.contains { $0.contains("READY=1") }
            }
            try await Task.sleep(for: .milliseconds(600))
            seen += notify.drain()
            #expect(!seen.contains("WATCHDOG=1"))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
        }
    }
}

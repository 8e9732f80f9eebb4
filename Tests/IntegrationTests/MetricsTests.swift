import Foundation
import Glibc
import Testing

/// `/metrics`, `/healthz` and `/readyz` of a running warren.
@Suite(.serialized) struct MetricsTests {
    static func get(_ url: String) -> (status: Int, body: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "-m", "5", "-w", "\n%{http_code}", url]
        let pipe = Pipe()
        process.standardOutput = pipe
        try? process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        let status = Int(text.split(separator: "\n").last ?? "") ?? 0
        return (status, String(text.split(separator: "\n").dropLast().joined(separator: "\n")))
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func metricsCountOutcomesAndHealthAndReadinessFollowTheLifecycle() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["ok-1", "ok-2", "bad"], to: queue)
            let port = Self.freePort()
            let base = "http://127.0.0.1:\(port)"
            let config = try warrenConfig(
                queue: queue,
                command: #"sh -c 'if [ "$WARREN_MESSAGE_ID" = bad ]; then sleep 2; exit 65; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#)
                .replacingOccurrences(of: "[log]", with: "[metrics]\nlisten = 127.0.0.1:\(port)\n\n[log]")
            let warren = try WarrenBinary(config: config)
            try await eventually("the good ones done") { warren.lines("finished").count == 2 }
            // The slow one is running: the in-flight gauge, refreshed every second while running, shows it.
            try await eventually("the running handler in the gauge", timeout: .seconds(1.8)) {
                Self.get(base + "/metrics").body.contains("warren_in_flight 1.0")
            }
            #expect(Self.get(base + "/healthz").status == 200)
            #expect(Self.get(base + "/readyz").status == 200)
            try await eventually("the bad one dead-lettered") { try await client.count(queue + ".dead") == 1 }
            let metrics = Self.get(base + "/metrics")
            #expect(metrics.status == 200)
            let text = metrics.body
            #expect(text.contains(#"warren_outcomes_total{consumer="test",outcome="ack"} 2"#), "\(text)")
            #expect(text.contains(#"warren_outcomes_total{consumer="test",outcome="dead_letter"} 1"#))
            #expect(text.contains(#"warren_deliveries_total{consumer="test"} 3"#))
            #expect(text.contains(#"warren_dead_letter_publishes_total{consumer="test"} 1"#))
            #expect(text.contains(#"warren_lifecycle_state{state="running"} 1"#))
            #expect(text.contains("warren_ready 1"), "the gauge says what /readyz says")
            #expect(text.contains(#"warren_consumer_prefetch{consumer="test"} 16"#))
            #expect(text.contains("warren_handler_duration_seconds_bucket"))
            #expect(text.contains("warren_in_flight"))

            // While draining, not ready (a slow handler keeps the drain going).
            try await client.publish(ids: ["bad"], to: queue)
            try await Task.sleep(for: .milliseconds(500))
            warren.signal(SIGTERM)
            try await eventually("not ready while draining") { Self.get(base + "/readyz").status == 503 }
            #expect(Self.get(base + "/metrics").body.contains("warren_ready 0"), "the gauge says what /readyz says")
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            // A clean stop is clean in the log too: the metrics server shuts down, it is not cut off.
            let errors = warren.log.split(separator: "\n").filter { $0.contains("ERROR") && !$0.contains("dead-lettered") }
            #expect(errors.isEmpty, "\(errors)")
        }
    }
}

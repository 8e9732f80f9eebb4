import AMQP
import Foundation
import Glibc
import Testing

/// Rounds of random faults under load, SIGTERM at random moments included,
/// with a ledger per round. `make chaos` runs many rounds
/// (WARREN_CHAOS_ROUNDS); `make test` runs a short version.
@Suite(.serialized) struct ChaosTests {
    enum Fault: String, CaseIterable {
        case closeAllConnections = "close all connections"
        case brokerRestart = "broker stop_app/start_app"
        case killWarren = "kill -9 warren, start another"
        case stopWarren = "SIGTERM warren, start another"
        case resetConnections = "reset every connection"
        case silentNetwork = "black-hole the network for 2.5 s"
    }

    struct Ledger: CustomStringConvertible {
        var published = 0, ackedOnce = 0, duplicated = 0, stillQueued = 0, lost = 0
        static func + (a: Ledger, b: Ledger) -> Ledger {
            Ledger(published: a.published + b.published, ackedOnce: a.ackedOnce + b.ackedOnce, duplicated: a.duplicated + b.duplicated,
                   stillQueued: a.stillQueued + b.stillQueued, lost: a.lost + b.lost)
        }
        var description: String {
            "published \(published), processed once \(ackedOnce), processed more than once \(duplicated), still queued \(stillQueued), lost \(lost)"
        }
    }

    static var rounds: Int {
        if let value = getenv("WARREN_CHAOS_ROUNDS"), let rounds = Int(String(cString: value)), rounds > 0 { return rounds }
        return 2
    }

    @Test func randomFaultsUnderLoadLoseNothing() async throws {
        var total = Ledger()
        var generator = SystemRandomNumberGenerator()
        for round in 1...Self.rounds {
            let faults = (0..<2).map { _ in Fault.allCases.randomElement(using: &generator)! }
            let ledger = try await runRound(round, faults: faults)
            print("chaos round \(round) [\(faults.map(\.rawValue).joined(separator: ", "))]: \(ledger)")
            #expect(ledger.lost == 0, "round \(round) lost messages")
            total = total + ledger
        }
        print("chaos total over \(Self.rounds) rounds: \(total)")
        #expect(total.lost == 0)
    }

    @Test func randomFaultsUnderLoadLoseNothingWithPersistentWorkers() async throws {
        var total = Ledger()
        var generator = SystemRandomNumberGenerator()
        for round in 1...Self.rounds {
            let faults = (0..<2).map { _ in Fault.allCases.randomElement(using: &generator)! }
            let ledger = try await runRound(round, faults: faults, persistent: true)
            print("chaos round \(round), persistent workers [\(faults.map(\.rawValue).joined(separator: ", "))]: \(ledger)")
            #expect(ledger.lost == 0, "round \(round) lost messages")
            total = total + ledger
        }
        print("chaos total over \(Self.rounds) rounds, persistent workers: \(total)")
        #expect(total.lost == 0)
    }

    func runRound(_ round: Int, faults: [Fault], persistent: Bool = false) async throws -> Ledger {
        var ledger = Ledger()
        let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
        defer { proxy.stop() }
        try await withTestQueue("chaos\(round)") { client, queue in
            let ids = (1...200).map { "c\(round)-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let ledgerDirectory = try WarrenBinary.makeDirectory()
            let command = persistent
                ? try PersistentWorkerTests.worker(handle: "time.sleep(0.01 * (os.getpid() % 3))\nnote(\"finished\", mid)\nanswer()")
                    .replacingOccurrences(of: "{dir}", with: ledgerDirectory)
                : #"sh -c 'sleep 0.0$(($$ % 3)); echo "$WARREN_MESSAGE_ID" >> \#(ledgerDirectory)/finished'"#
            let config = try warrenConfig(
                queue: queue, command: command, prefetch: 10, concurrency: 4, grace: "5s", killAfter: "1s",
                extra: "retry_delay = 100ms" + (persistent ? "\nmode = persistent" : ""))
                .replacingOccurrences(of: "url = \(TestBroker.url)", with: "url = amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f")
                .replacingOccurrences(of: "heartbeat = 5s", with: "heartbeat = 1s\nreconnect_min = 100ms\nreconnect_max = 1s")
            var warren = try WarrenBinary(config: config)
            func finished() -> [String] {
                ((try? String(contentsOfFile: ledgerDirectory + "/finished", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
            for fault in faults {
                try await Task.sleep(for: .milliseconds(Int.random(in: 100...600)))
                switch fault {
                case .closeAllConnections:
                    try FaultTests.rabbitmqctl("close_all_connections", "chaos")
                case .brokerRestart:
                    try FaultTests.rabbitmqctl("stop_app")
                    try await Task.sleep(for: .milliseconds(500))
                    try FaultTests.rabbitmqctl("start_app")
                case .killWarren:
                    warren.signal(SIGKILL)
                    _ = await warren.waitForExit()
                    warren = try WarrenBinary(config: config)
                    let started = warren
                    try await eventually("the new warren runs") { started.log.contains("NOTICE running") }
                case .stopWarren:
                    warren.signal(SIGTERM)
                    let code = await warren.waitForExit()
                    #expect(code == 0, "a SIGTERM during chaos exited \(String(describing: code)): \(warren.log)")
                    warren = try WarrenBinary(config: config)
                    let started = warren
                    try await eventually("the new warren runs") { started.log.contains("NOTICE running") }
                case .resetConnections:
                    proxy.cutAll()
                case .silentNetwork:
                    proxy.mode = .blackHole
                    try await Task.sleep(for: .milliseconds(2500))
                    proxy.cutAll()
                    proxy.mode = .pass
                }
            }
            let checker = try await TestClient()
            try await eventually("the round finished", timeout: .seconds(90)) {
                let ready = try await checker.count(queue)
                return Set(finished()).count == ids.count && ready == 0
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let left = try await checker.drain(queue).map(\.id)
            await checker.close()
            let done = finished()
            if persistent {
                let workers = ((try? String(contentsOfFile: ledgerDirectory + "/pids", encoding: .utf8)) ?? "")
                    .split(separator: "\n").compactMap { pid_t($0) }
                #expect(!workers.isEmpty)
                // Those of a SIGKILLed warren die with it, then wait for init to reap them.
                try? await eventually("every worker is gone", timeout: .seconds(10)) { workers.allSatisfy(isGone) }
                for pid in workers where !isGone(pid) {
                    Issue.record("worker \(pid) outlived its warren (state \(state(of: pid) ?? "-"), parent \(parent(of: pid) ?? 0))")
                }
            }
            var counts: [String: Int] = [:]
            for id in done { counts[id, default: 0] += 1 }
            ledger.published = ids.count
            ledger.ackedOnce = ids.filter { counts[$0] == 1 }.count
            ledger.duplicated = ids.filter { (counts[$0] ?? 0) > 1 }.count
            ledger.stillQueued = left.count
            ledger.lost = ids.filter { counts[$0] == nil && !left.contains($0) }.count
        }
        return ledger
    }
}

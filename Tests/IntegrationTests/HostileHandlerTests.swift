import Foundation
import Glibc
import Testing

/// Handlers that misbehave towards warren itself: flooding output, leaving
/// processes outside their group, or starting when warren is out of
/// descriptors. None of them may cost another message an attempt.
@Suite(.serialized) struct HostileHandlerTests {
    @Test func aFloodingHandlerIsKilledAtItsTimeoutWithoutStallingTheOthersOrFloodingTheLog() async throws {
        try await withTestQueue { client, queue in
            let others = (1...5).map { "a\($0)" }
            try await client.publish(ids: ["spam"] + others, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'b=$(cat); echo "$b" >> {dir}/started; if [ "$b" = spam ]; then yes; else echo "ok $b"; echo "$b" >> {dir}/finished; fi'"#,
                prefetch: 6, concurrency: 2, killAfter: "2s", extra: "timeout = 3s\nretry_delay = 60s"))
            try await eventually("spam started") { warren.lines("started").contains("spam") }
            let clock = ContinuousClock()
            let spamStarted = clock.now
            try await eventually("spam timed out", timeout: .seconds(30)) {
                warren.log.split(separator: "\n").contains { $0.contains("handler timed out") && $0.contains("message_id=spam") }
            }
            let spamRan = clock.now - spamStarted
            try await eventually("the others finished") { Set(warren.lines("finished")) == Set(others) }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)

            // timeout 3 s + kill_after 2 s is the most it may take; it took 11 s when the loop was stuck in its pipe.
            #expect(spamRan < .seconds(6), "the flooding handler ran \(spamRan) with timeout = 3s")
            let log = warren.log.split(separator: "\n")
            let timedOut = log.filter { $0.contains("handler timed out") }
            #expect(timedOut.count == 1 && timedOut.allSatisfy { $0.contains("message_id=spam") }, "\(timedOut)")
            #expect(warren.lines("finished").sorted() == others, "each aN acked exactly once")
            #expect(warren.lines("started").filter { $0 != "spam" }.sorted() == others, "no aN ran twice")
            let spamLines = log.filter { $0.contains("message_id=spam") && $0.contains("stream=stdout") }
            // 64 KiB of "y\n" is 32768 lines; then one notice.
            #expect(spamLines.count <= 32768 + 1, "\(spamLines.count) log lines for one message")
            #expect(log.contains { $0.contains("further stdout of this handler is not logged (over 65536 bytes)") })
            let retried = try await client.drain(queue + ".retry.1")
            #expect(retried.map(\.id) == ["spam"], "only the flooding handler is retried")
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
        }
    }

    @Test func processesThatLeaveTheHandlersGroupAreReapedAndKilledWhenItFinishes() async throws {
        let scripts = try WarrenBinary.makeDirectory()
        // s: setsid; t: coreutils timeout (its own group); d: a double fork
        // whose middle process exits at once, while the handler still runs;
        // long: a detached sleeper. The short pause lets the background
        // process leave the group before the handler ends.
        let script = #"""
        case "$WARREN_MESSAGE_ID" in
          s-*) setsid sleep 0.3 & echo $! >> "$1/pids" ;;
          t-*) timeout 10 sleep 0.3 & echo $! >> "$1/pids" ;;
          d-*) f="$1/d.$WARREN_MESSAGE_ID"
               ( setsid sh -c 'sleep 0.3 & echo $! > "$1.tmp"; mv "$1.tmp" "$1"' x "$f" & )
               while [ ! -e "$f" ]; do sleep 0.01; done
               cat "$f" >> "$1/pids" ;;
          long) setsid sleep 300 & echo $! >> "$1/long" ;;
        esac
        sleep 0.05
        echo "$WARREN_MESSAGE_ID" >> "$1/finished"
        """#
        try script.write(toFile: scripts + "/handler.sh", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            let ids = (1...20).map { "s-\($0)" } + (1...10).map { "t-\($0)" } + (1...10).map { "d-\($0)" } + ["long"]
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh \(scripts)/handler.sh {dir}", prefetch: 50, concurrency: 8))
            try await eventually("all handlers finished") { Set(warren.lines("finished")) == Set(ids) }
            try await eventually("the pids recorded") { warren.lines("pids").count == 40 && warren.lines("long").count == 1 }
            try await Task.sleep(for: .seconds(2))

            let zombies = childrenOf(warren.pid).filter { $0.state == "Z" }
            #expect(zombies.isEmpty, "zombies under warren: \(zombies)")
            let pids = warren.lines("pids").compactMap { pid_t($0) }
            for pid in pids { #expect(isGone(pid), "process \(pid) left by a handler is still there (\(state(of: pid) ?? "-"))") }
            let long = try #require(warren.lines("long").first.flatMap { pid_t($0) })
            #expect(isGone(long), "the detached sleeper \(long) outlived its handler (\(state(of: long) ?? "-"))")

            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            #expect(warren.lines("finished").count == ids.count, "each message ran once")
            #expect(try await client.count(queue) == 0)
        }
    }

    @Test func aProcessThatLeftTheGroupThroughAKilledStragglerIsKilledToo() async throws {
        // The handler exits at once, leaving a worker in its group; that
        // worker had started a sleeper in a session of its own. Killing the
        // group hands the sleeper to warren, which must kill it too.
        let command = #"sh -c '( sh -c "setsid sleep 300 & echo \$! >> {dir}/escaped; sleep 300" & ); sleep 0.3; echo done >> {dir}/finished'"#
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["one"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: command, concurrency: 1))
            try await eventually("the handler finished") { warren.lines("finished") == ["done"] }
            let sleeper = try #require(warren.lines("escaped").first.flatMap { pid_t($0) })
            try await eventually("the escaped sleeper is gone", timeout: .seconds(5)) { isGone(sleeper) }
            #expect(childrenOf(warren.pid).filter { $0.state == "Z" }.isEmpty)
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            if !isGone(sleeper) { kill(sleeper, SIGKILL) }
        }
    }

    @Test func runningOutOfDescriptorsRequeuesMessagesWithoutSpendingTheirAttempts() async throws {
        try await withTestQueue { client, queue in
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID $WARREN_ATTEMPT" >> {dir}/finished; sleep 0.05'"#,
                prefetch: 40, concurrency: 40, extra: "max_attempts = 2\nretry_delay = 100ms"))
            try await eventually("consuming") { warren.log.contains("consuming") }
            // Room for a handler or two (each holds 4 descriptors, 7 while
            // it starts) beside what warren already holds. New descriptors
            // take the lowest free numbers, so the room is the free numbers
            // below the limit.
            var limit = rlimit()
            #expect(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, "warren inherits this limit")
            let held = Set(openDescriptors(of: warren.pid))
            var low = 0
            while low - held.filter({ $0 < low }).count < 12 { low += 1 }
            try setDescriptorLimit(of: warren.pid, soft: UInt64(low), hard: UInt64(limit.rlim_max))

            let ids = (1...200).map { "fd-\($0)" }
            try await client.publish(ids: ids, to: queue)
            try await eventually("some processed") { !warren.lines("finished").isEmpty }
            try await Task.sleep(for: .seconds(5))
            #expect(try await client.count(queue + ".dead") == 0, "a message was dead-lettered for warren's own shortage")
            for level in 1...2 {
                #expect(try await client.count(queue + ".retry.\(level)") == 0, "a message was retried for warren's own shortage")
            }
            let warnings = warren.log.split(separator: "\n").filter { $0.contains("out of descriptors") }
            #expect(warnings.count >= 1 && warnings.count <= 2, "the shortage was reported \(warnings.count) times:\n\(warnings.prefix(5).joined(separator: "\n"))")

            // The limit comes back: everything is processed, each once, at attempt 1.
            try setDescriptorLimit(of: warren.pid, soft: UInt64(limit.rlim_cur), hard: UInt64(limit.rlim_max))
            try await eventually("all processed", timeout: .seconds(30)) { warren.lines("finished").count >= ids.count }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let finished = warren.lines("finished")
            #expect(Set(finished) == Set(ids.map { "\($0) 1" }), "every message once, at attempt 1")
            #expect(finished.count == ids.count)
            #expect(try await client.count(queue) == 0)
            #expect(try await client.count(queue + ".dead") == 0)
        }
    }
}

/// The direct children of `pid`, with their state letter (a zombie is `Z`).
func childrenOf(_ pid: pid_t) -> [(pid: pid_t, state: Character)] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { name -> (pid: pid_t, state: Character)? in
        guard let child = pid_t(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 1, pid_t(fields[1]) == pid, let state = fields[0].first else { return nil }
        return (child, state)
    }
}

func state(of pid: pid_t) -> String? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    return String(stat[stat.index(close, offsetBy: 2)])
}

func openDescriptors(of pid: pid_t) -> [Int] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).compactMap { Int($0) }
}

/// prlimit(1) on another process (Swift's Glibc does not export prlimit(2)).
func setDescriptorLimit(of pid: pid_t, soft: UInt64, hard: UInt64) throws {
    let tool = Process()
    tool.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
    tool.arguments = ["--pid", "\(pid)", "--nofile=\(soft):\(hard)"]
    try tool.run()
    tool.waitUntilExit()
    #expect(tool.terminationStatus == 0, "prlimit --pid \(pid) --nofile=\(soft):\(hard) failed")
}

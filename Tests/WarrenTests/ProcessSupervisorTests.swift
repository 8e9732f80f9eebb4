import Glibc
import Synchronization
import Testing
@testable import Warren

/// Real child processes: stdin, output lines, exit codes, process groups.
@Suite struct ProcessSupervisorTests {
    static let supervisor = {
        ProcessSupervisor.prepareProcess()
        return try! ProcessSupervisor()
    }()

    final class Lines: Sendable {
        let lines = Mutex<[(ProcessSupervisor.Stream, String)]>([])
        var all: [(ProcessSupervisor.Stream, String)] { lines.withLock { $0 } }
        var sink: ProcessSupervisor.LineSink { { stream, line in self.lines.withLock { $0.append((stream, line)) } } }
    }

    func run(_ argv: [String], input: String = "", killAfter: Duration = .seconds(1), lines: Lines = Lines()) async throws -> ProcessSupervisor.Termination {
        try await Self.supervisor.run(argv, environment: ["PATH=/usr/bin:/bin", "X=1"], input: Array(input.utf8),
                                      killAfter: killAfter, sink: lines.sink)
    }

    @Test func theBodyArrivesOnStdinAndOutputIsLoggedLineByLine() async throws {
        let lines = Lines()
        let result = try await run(["sh", "-c", "read a; echo \"got $a\"; echo oops >&2; printf 'no newline'"], input: "hello\n", lines: lines)
        #expect(result.status == .exited(0))
        #expect(!result.terminated)
        let texts = lines.all.map { "\($0.0.rawValue): \($0.1)" }
        #expect(texts.contains("stdout: got hello"))
        #expect(texts.contains("stderr: oops"))
        #expect(texts.contains("stdout: no newline"))
        #expect(result.lastErrorLine == "oops")
    }

    @Test func exitCodesAndSignalsAreReported() async throws {
        #expect(try await run(["sh", "-c", "exit 75"]).status == .exited(75))
        #expect(try await run(["sh", "-c", "kill -SEGV $$"]).status == .signaled(SIGSEGV))
    }

    @Test func aLargeBodyIsWrittenWithoutBlocking() async throws {
        let lines = Lines()
        let body = String(repeating: "x", count: 1_000_000)
        let result = try await run(["wc", "-c"], input: body, lines: lines)
        #expect(result.status == .exited(0))
        #expect(lines.all.first?.1.trimmingCharacters() == "1000000")
    }

    @Test func aCommandThatIgnoresStdinDoesNotHurtWarren() async throws {
        let result = try await run(["true"], input: String(repeating: "y", count: 500_000))
        #expect(result.status == .exited(0))
    }

    @Test func theEnvironmentIsExactlyWhatWasGiven() async throws {
        let lines = Lines()
        _ = try await run(["sh", "-c", "echo \"X=$X\""], lines: lines)
        #expect(lines.all.map(\.1) == ["X=1"])
    }

    @Test func aMissingProgramIsASpawnErrorNotACrash() async throws {
        await #expect(throws: ProcessSupervisor.SpawnError.self) { try await run(["/nonexistent/handler"]) }
    }

    @Test func cancellationTerminatesTheWholeProcessGroupAndWaitsForIt() async throws {
        let pidFile = "/tmp/warren-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let clock = ContinuousClock()
        let started = clock.now
        let task = Task {
            // Ignores SIGTERM, and so does its child: only SIGKILL ends them.
            try await run(["sh", "-c", "trap '' TERM; sleep 300 & echo $! > \(pidFile); wait; wait"], killAfter: .milliseconds(700))
        }
        try await waitForFile(pidFile)
        let child = pid_t(try String(readingFile: pidFile).trimmingCharacters())!
        task.cancel()
        let result = try await task.value
        let elapsed = clock.now - started
        #expect(result.terminated)
        #expect(result.status == .signaled(SIGKILL))
        #expect(elapsed >= .milliseconds(600))
        #expect(isGone(child), "the child in the handler's process group must be gone")
    }

    @Test func aFloodingHandlerDoesNotStallTheOthersAndItsLogIsCapped() async throws {
        let flood = Lines()
        let floodPid = Mutex<pid_t>(0)
        // Logging a line costs time (a write under a lock); here, 50 µs.
        let slowSink: ProcessSupervisor.LineSink = { stream, line in
            usleep(50)
            flood.sink(stream, line)
        }
        let flooding = Task {
            try await Self.supervisor.run(["yes"], environment: ["PATH=/usr/bin:/bin"], input: [], killAfter: .seconds(1),
                                          onStart: { pid in floodPid.withLock { $0 = pid } }, sink: slowSink)
        }
        defer { flooding.cancel() }
        try await until("the flood is read") { !flood.all.isEmpty }
        // Another handler starts, runs and is reported while the flood goes on.
        let done = Mutex(false)
        let quick = Task {
            let result = try await run(["echo", "ok"])
            done.withLock { $0 = true }
            return result
        }
        let quickFinished = (try? await until("the quick handler is reported", timeout: .seconds(20)) { done.withLock { $0 } }) != nil
        if !quickFinished {
            // Free the stuck supervisor so the suite can go on.
            kill(-floodPid.withLock { $0 }, SIGKILL)
        }
        #expect(try await quick.value.status == .exited(0))
        // The supervisor went round to the quick handler before it had logged
        // the flood's whole budget: its work per turn is bounded.
        #expect(flood.all.count < 32768, "the quick handler waited for \(flood.all.count) lines of the flood")
        flooding.cancel()
        let flooded = try await flooding.value
        #expect(flooded.terminated)
        let lines = flood.all
        // 64 KiB of "y\n" is 32768 lines, then one notice; nothing after it.
        #expect(lines.count == 32768 + 1, "\(lines.count) lines logged")
        #expect(lines.last?.1 == "[warren: further stdout of this handler is not logged (over 65536 bytes)]")
    }

    @Test func withoutAPidfdAChildIsStillWatchedReportedAndTerminated() async throws {
        let supervisor = try ProcessSupervisor(outputLimit: 64 * 1024, openPidfd: { _ in errno = EMFILE; return -1 })
        let lines = Lines()
        let exited = try await supervisor.run(["sh", "-c", "echo hi; exit 3"], environment: [], input: [], killAfter: .seconds(1),
                                              sink: lines.sink)
        #expect(exited.status == .exited(3))
        #expect(lines.all.map(\.1).contains("hi"))
        #expect(lines.all.contains { $0.1.contains("no pidfd for this handler (Too many open files)") })
        let task = Task {
            try await supervisor.run(["sleep", "300"], environment: ["PATH=/usr/bin:/bin"], input: [], killAfter: .seconds(1)) { _, _ in }
        }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        let terminated = try await task.value
        #expect(terminated.terminated)
        #expect(terminated.status == .signaled(SIGTERM))
    }

    @Test func aShortOfDescriptorsSpawnIsWarrensShortageButAMissingProgramIsNot() async throws {
        await #expect { try await run(["/nonexistent/handler"]) } throws: { error in
            !(error as! ProcessSupervisor.SpawnError).resourceShortage
        }
        #expect(ProcessSupervisor.SpawnError.isShortage(EMFILE))
        #expect(ProcessSupervisor.SpawnError.isShortage(EAGAIN))
        #expect(!ProcessSupervisor.SpawnError.isShortage(ENOENT))
        #expect(!ProcessSupervisor.SpawnError.isShortage(EACCES))
    }

    @Test func processesThatLeftTheGroupAreKilledAndReapedOnceTheHandlerFinishes() async throws {
        let pidFile = "/tmp/warren-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let result = try await run(["sh", "-c", "setsid sleep 300 > /dev/null 2>&1 & echo $! > \(pidFile); exit 0"])
        #expect(result.status == .exited(0))
        let child = pid_t(try String(readingFile: pidFile).trimmingCharacters())!
        try await until("the process that left the group is killed and reaped") { isGone(child) }
    }

    @Test func aProcessThatLeftTheGroupOfATimedOutHandlerDoesNotEscapeTheWatchdog() async throws {
        let pidFile = "/tmp/warren-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let task = Task {
            try await run(["sh", "-c", "setsid sleep 300 > /dev/null 2>&1 & echo $! > \(pidFile); sleep 300"])
        }
        try await waitForFile(pidFile)
        let child = pid_t(try String(readingFile: pidFile).trimmingCharacters())!
        try await Task.sleep(for: .milliseconds(100))  // time to leave the group
        task.cancel()
        #expect(try await task.value.terminated)
        try await until("the process that left the group is killed and reaped") { isGone(child) }
    }

    @Test func childrenOfThisProcessAreFoundBothWays() async throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("sleep"), strdup("5"), nil]
        defer { for pointer in argv { free(pointer) } }
        #expect(posix_spawnp(&pid, "sleep", nil, nil, argv, nil) == 0)
        defer { kill(pid, SIGKILL); waitpid(pid, nil, 0) }
        #expect(SupervisorLoop.hasChildrenFiles)
        #expect(SupervisorLoop.childrenOfThisProcess(except: [])?.contains(pid) == true)
        #expect(SupervisorLoop.childrenFromProcScan()?.contains(pid) == true)
    }

    @Test func processesLeftBehindByAFinishedHandlerAreKilled() async throws {
        let pidFile = "/tmp/warren-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let result = try await run(["sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > \(pidFile); exit 0"])
        #expect(result.status == .exited(0))
        let child = pid_t(try String(readingFile: pidFile).trimmingCharacters())!
        #expect(isGone(child))
    }
}

/// Polls `condition` until it holds; records an issue and throws after `timeout`.
func until(_ what: String, timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out after \(timeout) waiting for: \(what)")
    throw CancellationError()
}

func waitForFile(_ path: String, lines: Int = 1, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let text = try? String(readingFile: path), text.split(separator: "\n").count >= lines { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("\(path) did not get \(lines) line(s) within \(timeout)")
    throw CancellationError()
}

/// A process is gone when /proc has no entry for it. A zombie (`Z`) is not
/// gone: it holds its pid until its parent reaps it.
func isGone(_ pid: pid_t) -> Bool {
    guard let stat = try? String(readingFile: "/proc/\(pid)/stat") else { return true }
    guard let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)] == "X"
}

extension String {
    init(readingFile path: String) throws {
        guard let file = fopen(path, "r") else { throw CancellationError() }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        self = String(decoding: bytes, as: UTF8.self)
    }

    func trimmingCharacters() -> String {
        String(self.drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }
}

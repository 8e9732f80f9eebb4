import Glibc
import Synchronization
import Testing
@testable import Warren

/// Real child processes: stdin, output lines, exit codes, process groups.
@Suite struct ProcessSupervisorTests {
    static let supervisor = ProcessSupervisor()

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
        let child = pid_t(try String(contentsOfFile: pidFile).trimmingCharacters())!
        task.cancel()
        let result = try await task.value
        let elapsed = clock.now - started
        #expect(result.terminated)
        #expect(result.status == .signaled(SIGKILL))
        #expect(elapsed >= .milliseconds(600))
        #expect(isGone(child), "the child in the handler's process group must be gone")
    }

    @Test func processesLeftBehindByAFinishedHandlerAreKilled() async throws {
        let pidFile = "/tmp/warren-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(pidFile) }
        let result = try await run(["sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $! > \(pidFile); exit 0"])
        #expect(result.status == .exited(0))
        let child = pid_t(try String(contentsOfFile: pidFile).trimmingCharacters())!
        #expect(isGone(child))
    }
}

func waitForFile(_ path: String, lines: Int = 1, timeout: Duration = .seconds(10)) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let text = try? String(contentsOfFile: path), text.split(separator: "\n").count >= lines { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("\(path) did not get \(lines) line(s) within \(timeout)")
    throw CancellationError()
}

/// A process is gone when /proc has no entry for it, or only a zombie's.
func isGone(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat") else { return true }
    guard let close = stat.lastIndex(of: ")") else { return true }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state == "Z" || state == "X"
}

extension String {
    init(contentsOfFile path: String) throws {
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

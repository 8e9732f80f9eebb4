import AMQP
import Testing
@testable import Warren

/// A command whose stdout is a reply: kept whole and not logged, stderr
/// logged as ever; past the limit, flagged and drained, so the command is
/// never blocked on a full pipe.
@Suite struct StdoutCaptureTests {
    func run(_ script: String, capture: Int, lines: ProcessSupervisorTests.Lines) async throws -> ProcessSupervisor.Termination {
        try await ProcessSupervisorTests.supervisor.run(["sh", "-c", script], environment: ["PATH=/usr/bin:/bin"],
                                                        input: MessageBody(Array("in".utf8)), killAfter: .seconds(1),
                                                        captureStdout: capture, sink: lines.sink)
    }

    @Test func capturedStdoutIsKeptByteForByteAndNotLogged() async throws {
        let lines = ProcessSupervisorTests.Lines()
        let result = try await run("cat; printf '\\n\\001two\\r\\n'; echo oops >&2", capture: 1000, lines: lines)
        #expect(result.status == .exited(0))
        #expect(result.output == Array("in\n\u{1}two\r\n".utf8))
        #expect(!result.outputOverLimit)
        #expect(lines.all.map { "\($0.0.rawValue): \($0.1)" } == ["stderr: oops"])
    }

    @Test func stdoutOverTheLimitIsFlaggedAndReadToTheEndWithoutBlockingTheCommand() async throws {
        let lines = ProcessSupervisorTests.Lines()
        // Four megabytes: far more than a pipe holds, so the command would
        // hang on a full pipe if the rest were not read.
        let result = try await run("head -c 4194304 /dev/zero; echo done >&2", capture: 100_000, lines: lines)
        #expect(result.status == .exited(0))
        #expect(result.outputOverLimit)
        #expect(result.output?.isEmpty == true, "nothing of an over-long output is kept")
        #expect(lines.all.map(\.1) == ["done"])
    }

    /// A command may enlarge its pipe (F_SETPIPE_SZ) and exit with far
    /// more in it than 64 reads take: every byte is read, up to the end.
    @Test func stdoutLeftInAnEnlargedPipeAfterTheCommandExitedIsCapturedWhole() async throws {
        let lines = ProcessSupervisorTests.Lines()
        let result = try await run("python3 -c 'import fcntl,sys;fcntl.fcntl(1,1031,1<<20);sys.stdout.write(\"x\"*900000)'",
                                   capture: 1 << 20, lines: lines)
        #expect(result.status == .exited(0))
        #expect(result.output?.count == 900_000)
        #expect(!result.outputIncomplete)
    }

    /// A process that left the group and still holds stdout could write
    /// more: the output is incomplete, never published as a reply.
    @Test func stdoutStillHeldByAProcessOutsideTheGroupMarksTheOutputIncomplete() async throws {
        let lines = ProcessSupervisorTests.Lines()
        let result = try await run("printf part; setsid sh -c 'sleep 2' & sleep 0.2", capture: 1000, lines: lines)
        #expect(result.status == .exited(0))
        #expect(result.outputIncomplete)
    }

    @Test func withoutCaptureStdoutIsLoggedAndNotKept() async throws {
        let lines = ProcessSupervisorTests.Lines()
        let result = try await ProcessSupervisorTests.supervisor.run(["sh", "-c", "echo hi"], environment: [], input: [],
                                                                     killAfter: .seconds(1), sink: lines.sink)
        #expect(result.output == nil)
        #expect(lines.all.map(\.1) == ["hi"])
    }
}

import AMQP
import Glibc
import Synchronization
import Testing
@testable import Warren

/// Long-lived workers under the process supervisor, without a broker: many
/// messages on one stdin, answers as protocol lines in order, stderr tagged
/// with the message written last, end of file, terminate, a failed spawn.
@Suite struct SupervisedWorkerTests {
    /// Everything a worker link heard, and a way to wait for its exit.
    final class Heard: Sendable {
        /// Guards what was heard and who waits for the exit.
        private let state = Mutex<(events: [ProcessSupervisor.WorkerEvent], stderr: [String],
                                   waiter: CheckedContinuation<ProcessSupervisor.Termination, Never>?)>(([], [], nil))

        func link(_ supervisor: ProcessSupervisor) -> ProcessSupervisor.WorkerLink {
            ProcessSupervisor.WorkerLink(id: supervisor.newRequestID(), events: { event in
                let waiter = self.state.withLock { state -> CheckedContinuation<ProcessSupervisor.Termination, Never>? in
                    state.events.append(event)
                    guard case .exited = event else { return nil }
                    defer { state.waiter = nil }
                    return state.waiter
                }
                if case .exited(let termination, _, _) = event { waiter?.resume(returning: termination) }
            }, stderr: { line, _, tag in self.state.withLock { $0.stderr.append("\(tag ?? "-"): \(line)") } })
        }

        var lines: [String] {
            state.withLock { $0.events }.compactMap {
                if case .stdout(.line(let bytes)) = $0 { String(decoding: bytes, as: UTF8.self) } else { nil }
            }
        }

        var stderr: [String] { state.withLock { $0.stderr } }

        func exit() async -> ProcessSupervisor.Termination {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> ProcessSupervisor.Termination? in
                    for case .exited(let termination, _, _) in state.events { return termination }
                    state.waiter = continuation
                    return nil
                }
                if let done { continuation.resume(returning: done) }
            }
        }
    }

    static let supervisor = ProcessSupervisorTests.supervisor

    @Test func messagesGoOutOnOneStdinAndAnswersComeBackInOrderUntilEndOfFile() async throws {
        let heard = Heard()
        let link = heard.link(Self.supervisor)
        let pid = try await Self.supervisor.startWorker(
            ["sh", "-c", "echo ready; while read line; do echo \"seen $line\" >&2; echo \"answer $line\"; done; exit 7"],
            environment: ["PATH=/usr/bin:/bin"], link: link)
        #expect(pid > 0)
        for n in 1...3 { Self.supervisor.write(MessageBody(Array("m\(n)\n".utf8)), to: link.id, tag: "t\(n)") }
        Self.supervisor.closeInput(of: link.id)
        let termination = await heard.exit()
        #expect(termination.status == .exited(7))
        #expect(heard.lines == ["ready", "answer m1", "answer m2", "answer m3"])
        #expect(heard.stderr.count == 3)
        #expect(heard.stderr.allSatisfy { $0.hasPrefix("t") }, "each stderr line tagged with a message: \(heard.stderr)")
    }

    @Test func aTerminatedWorkerIsReportedAsTerminatedWithItsGroupGone() async throws {
        let heard = Heard()
        let link = heard.link(Self.supervisor)
        _ = try await Self.supervisor.startWorker(["sh", "-c", "sleep 300 & echo $!; wait"], environment: ["PATH=/usr/bin:/bin"],
                                                  link: link)
        while heard.lines.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        let child = try #require(pid_t(heard.lines[0]))
        Self.supervisor.terminate(link.id, killAfter: .seconds(1))
        let termination = await heard.exit()
        #expect(termination.terminated)
        #expect(termination.status == .signaled(SIGTERM))
        #expect(kill(child, 0) != 0, "the worker's child outlived its group")
    }

    @Test func aCommandThatCannotRunIsASpawnErrorNamingIt() async {
        let heard = Heard()
        do {
            _ = try await Self.supervisor.startWorker(["/nonexistent/worker"], environment: [], link: heard.link(Self.supervisor))
            Issue.record("a missing program started")
        } catch {
            #expect(error.description.contains("cannot run '/nonexistent/worker'"), "\(error.description)")
            #expect(!error.resourceShortage)
        }
        do {
            _ = try await Self.supervisor.startWorker(["no-such-program-anywhere"], environment: [], link: heard.link(Self.supervisor))
            Issue.record("a missing program started")
        } catch {
            #expect(error.description.contains("No such file"), "\(error.description)")
        }
    }
}

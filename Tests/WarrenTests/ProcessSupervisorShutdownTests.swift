import Glibc
import Synchronization
import Testing
@testable import Warren

/// `shutdown()`: what runs is killed and reported, the thread ends, its
/// descriptors go, and a later spawn is refused with an error that says why.
@Suite struct ProcessSupervisorShutdownTests {
    /// Runs `body` with a supervisor of its own; returns a weak reference to
    /// its inbox, to show that nothing (no thread) holds it afterwards.
    func withSupervisor(_ body: (ProcessSupervisor) async throws -> Void) async throws -> () -> AnyObject? {
        ProcessSupervisor.prepareProcess()
        let supervisor = try ProcessSupervisor()
        weak let inbox = supervisor.inbox
        try await body(supervisor)
        return { inbox }
    }

    @Test func shutdownKillsARunningHandlerReportsItAndEndsTheThread() async throws {
        let inbox = try await withSupervisor { supervisor in
            let started = Mutex<pid_t>(0)
            let task = Task {
                // Ignores SIGTERM: only SIGKILL ends it.
                try await supervisor.run(["sh", "-c", "trap '' TERM; sleep 300"], environment: ["PATH=/usr/bin:/bin"],
                                         input: [], killAfter: .seconds(60), onStart: { pid in started.withLock { $0 = pid } },
                                         sink: { _, _ in })
            }
            try await until("the handler started") { started.withLock { $0 } != 0 }
            let thread = try #require(await supervisor.stop())
            let result = try await task.value
            #expect(result.terminated)
            #expect(result.status == .signaled(SIGKILL), "killed at once, not after kill_after (60 s)")
            #expect(isGone(started.withLock { $0 }))
            #expect(!ProcessSupervisor.threads.withLock { $0.contains(thread) })
            try await until("the supervisor thread has ended") { access("/proc/self/task/\(thread)", F_OK) != 0 }
        }
        try await until("the thread let go of the inbox, whose pipe closes with it") { inbox() == nil }
    }

    @Test func aSpawnAfterShutdownIsRefusedAsWarrensOwnShortageSayingWhy() async throws {
        _ = try await withSupervisor { supervisor in
            await supervisor.shutdown()
            await #expect {
                try await supervisor.run(["true"], environment: [], input: [], killAfter: .seconds(1), sink: { _, _ in })
            } throws: { error in
                let error = error as! ProcessSupervisor.SpawnError
                return error.resourceShortage && error.description.contains("shut down")
            }
            #expect(await supervisor.stop() == nil, "a second shutdown returns at once")
        }
    }

    @Test func anIdleSupervisorShutsDownAndLetsGoOfItsDescriptors() async throws {
        let inbox = try await withSupervisor { supervisor in
            let thread = try #require(await supervisor.stop())
            try await until("the supervisor thread has ended") { access("/proc/self/task/\(thread)", F_OK) != 0 }
        }
        try await until("the thread let go of the inbox, whose pipe closes with it") { inbox() == nil }
    }
}

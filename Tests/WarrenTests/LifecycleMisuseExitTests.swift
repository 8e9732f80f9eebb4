import Testing
@testable import Warren

/// The transitions that must never happen: each stops the process (an exit
/// test runs it in a child). A suite of its own because scripts/test.sh
/// runs it in a test process of its own, first: the main run makes its
/// process a child subreaper (the process supervisor's tests), and an
/// orphan that comes back to it and exits is a zombie that swift-testing's
/// exit-test monitor finds before its own child, for ever (`waitid(P_ALL,
/// WNOWAIT)`), so an exit test there can hang.
@Suite struct LifecycleMisuseExitTests {
    @Test func theWorkersEndingBeforeADrainIsAProgrammingError() async {
        // Their buffers close only when draining begins.
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .starting)
            _ = machine.workersDone()
        }
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .running)
            _ = machine.workersDone()
        }
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .reconnecting)
            _ = machine.workersDone()
        }
    }

    @Test func theWorkersEndingTwiceIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .closing)
            _ = machine.workersDone()
        }
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .stopped(exitCode: 0))
            _ = machine.workersDone()
        }
    }

    @Test func closedBeforeClosingIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .running)
            _ = machine.closed()
        }
    }

    @Test func failingAfterTheFirstStartIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .reconnecting)
            _ = machine.failed()
        }
    }
}

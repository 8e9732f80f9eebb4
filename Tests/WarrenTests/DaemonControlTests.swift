import Testing
import Warren

/// The process around its runtimes, event by event: which runtime a signal
/// reaches, when a reload's new consumers take over, when the process exits.
@Suite struct DaemonControlTests {
    /// A reload started generation 2 and it consumes: 1 is retired and draining.
    func reloaded() -> DaemonControl {
        var control = DaemonControl()
        #expect(control.reloadSignal() == .loadConfig)
        #expect(control.configLoaded() == .start(2, paused: false))
        #expect(control.runtimeReady(2) == .promote(2, retired: 1))
        return control
    }

    @Test func aStopSignalWhileRunningDrainsTheOneRuntimeAndArmsTheBackstop() {
        var control = DaemonControl()
        #expect(control.stopSignal() == [.armBackstop(quit: false), .stop([1])])
        #expect(control.phase == .stopping)
    }

    @Test func aSecondStopSignalReachesEveryRuntimeToSkipTheirGrace() {
        var control = DaemonControl()
        _ = control.stopSignal()
        #expect(control.stopSignal() == [.stop([1])])
    }

    @Test func aStopAfterAReloadLeavesTheRetiredRuntimeToItsOwnDrain() {
        var control = reloaded()
        #expect(control.stopSignal() == [.armBackstop(quit: false), .stop([2])],
                "generation 1 is draining already; a second stop would end its handlers")
        #expect(control.stopSignal() == [.stop([1, 2])], "the second stop signal skips every grace period")
    }

    @Test func quitReachesEveryRuntimeEvenOnesAlreadyDraining() {
        var control = reloaded()
        #expect(control.quitSignal() == [.armBackstop(quit: true), .quit([1, 2])])
        #expect(control.quitSignal() == [.quit([1, 2])])
    }

    @Test func theOldRuntimeGoesOnUntilTheNewOneConsumes() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        #expect(control.configLoaded() == .start(2, paused: false))
        #expect(control.phase == .reloading(candidate: 2))
        #expect(control.current == 1, "nothing retires before the new consumers consume")
        #expect(control.runtimeReady(1) == nil, "the current runtime reconnecting is no news")
        #expect(control.runtimeReady(2) == .promote(2, retired: 1))
        #expect(control.current == 2)
        #expect(control.runtimeReady(2) == nil, "ready again after a reconnect changes nothing")
    }

    @Test func newConsumersThatCannotStartAreDroppedAndTheOldOnesGoOn() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        _ = control.configLoaded()
        #expect(control.runtimeEnded(2, code: 1) == [.reloadFailed(2, code: 1)])
        #expect(control.phase == .running)
        #expect(control.current == 1)
        #expect(control.alive == [1])
        #expect(control.reloadSignal() == .loadConfig, "the next reload may try again")
    }

    @Test func newConsumersThatDoNotConsumeInTimeAreAbandoned() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        _ = control.configLoaded()
        #expect(control.candidateTimedOut(2) == .abandon(2))
        #expect(control.runtimeReady(2) == nil, "too late: it is stopping")
        #expect(control.current == 1)
        #expect(control.runtimeEnded(2, code: 0) == [.replacedEnded(2, code: 0)])
        #expect(control.candidateTimedOut(2) == nil)
    }

    @Test func anInvalidFileKeepsTheCurrentConfig() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        #expect(control.configInvalid() == .keepCurrent)
        #expect(control.phase == .running)
    }

    @Test func oneReloadAtATimeAndNoneWhileStopping() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        _ = control.configLoaded()
        guard case .ignoreReload = control.reloadSignal() else { Issue.record("a second reload started"); return }
        _ = control.stopSignal()
        guard case .ignoreReload = control.reloadSignal() else { Issue.record("a reload while stopping"); return }
    }

    @Test func aStopDuringAReloadStopsTheNewConsumersToo() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        _ = control.configLoaded()
        #expect(control.stopSignal() == [.armBackstop(quit: false), .stop([1, 2])])
        #expect(control.runtimeReady(2) == nil, "no promotion once stopping")
        #expect(control.runtimeEnded(2, code: 0) == [.replacedEnded(2, code: 0)])
        #expect(control.runtimeEnded(1, code: 0) == [.exit(0)])
    }

    @Test func theProcessExitsWhenTheLastRuntimeEndsWithTheCurrentOnesCode() {
        var control = reloaded()
        _ = control.stopSignal()
        #expect(control.runtimeEnded(2, code: 0) == [], "the retired runtime still drains")
        #expect(control.runtimeEnded(1, code: 1) == [.replacedEnded(1, code: 1), .exit(0)])
    }

    @Test func theCurrentRuntimeEndingOnItsOwnStopsTheProcess() {
        var control = reloaded()
        #expect(control.runtimeEnded(2, code: 1) == [.armBackstop(quit: false)],
                "the retired one is draining already: nothing to stop, but its drain is bounded")
        #expect(control.phase == .stopping)
        #expect(control.runtimeEnded(1, code: 0) == [.replacedEnded(1, code: 0), .exit(1)])
    }

    @Test func theCurrentRuntimeEndingDuringAReloadStopsTheCandidate() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        _ = control.configLoaded()
        #expect(control.runtimeEnded(1, code: 1) == [.armBackstop(quit: false), .stop([2])])
        #expect(control.runtimeEnded(2, code: 0) == [.replacedEnded(2, code: 0), .exit(1)])
    }

    @Test func anEndReportedTwiceIsIgnored() {
        var control = DaemonControl()
        _ = control.stopSignal()
        #expect(control.runtimeEnded(1, code: 0) == [.exit(0)])
        #expect(control.runtimeEnded(1, code: 0) == [])
    }

    // MARK: Pause and resume

    @Test func sigtstpPausesTheRuntimeAndSigcontResumesIt() {
        var control = DaemonControl()
        #expect(control.pauseSignal() == [.pause([1])])
        #expect(control.paused)
        #expect(control.phase == .running, "paused is no phase: still connected, still running")
        #expect(control.resumeSignal() == [.resume([1])])
        #expect(!control.paused)
    }

    @Test func sigtstpTwiceIsOnePause() {
        var control = DaemonControl()
        #expect(control.pauseSignal() == [.pause([1])])
        #expect(control.pauseSignal() == [], "paused already: nothing more")
        #expect(control.resumeSignal() == [.resume([1])], "one SIGCONT undoes it")
    }

    @Test func sigcontWhenNotPausedDoesNothing() {
        var control = DaemonControl()
        #expect(control.resumeSignal() == [])
        #expect(!control.paused)
        var reloading = DaemonControl()
        _ = reloading.reloadSignal()
        _ = reloading.configLoaded()
        #expect(reloading.resumeSignal() == [])
    }

    @Test func aPauseDuringAReloadPausesTheNewConsumersToo() {
        var control = DaemonControl()
        _ = control.reloadSignal()
        #expect(control.configLoaded() == .start(2, paused: false))
        #expect(control.pauseSignal() == [.pause([1, 2])])
        #expect(control.runtimeReady(2) == .promote(2, retired: 1), "a paused candidate that is set up takes over")
        #expect(control.resumeSignal() == [.resume([2])], "the retired runtime drains: nothing to resume there")
    }

    @Test func aReloadWhilePausedStartsTheNewConsumersPaused() {
        var control = DaemonControl()
        _ = control.pauseSignal()
        #expect(control.reloadSignal() == .loadConfig)
        #expect(control.configLoaded() == .start(2, paused: true))
        #expect(control.runtimeReady(2) == .promote(2, retired: 1))
        #expect(control.resumeSignal() == [.resume([2])])
    }

    @Test func aStopWhilePausedIsAnOrdinaryDrainThatExitsZero() {
        var control = DaemonControl()
        _ = control.pauseSignal()
        #expect(control.stopSignal() == [.armBackstop(quit: false), .stop([1])])
        #expect(control.runtimeEnded(1, code: 0) == [.exit(0)])
    }

    @Test func pauseAndResumeWhileStoppingChangeNothing() {
        var control = DaemonControl()
        _ = control.pauseSignal()
        _ = control.stopSignal()
        #expect(control.resumeSignal() == [], "a drain is under way: nothing to consume again")
        #expect(!control.paused)
        #expect(control.pauseSignal() == [], "the drain goes on")
        #expect(control.stopSignal() == [.stop([1])], "a second stop still skips the grace period")
    }
}

import Glibc
import Testing
@testable import Warren

/// A handler's way from running to reported, on a manual clock: each test
/// is a table of (time, event, actions expected, stage after).
@Suite struct ChildPhaseTests {
    typealias A = ChildPhase.Action
    typealias S = ChildPhase.Stage

    enum Event {
        case terminate(killAfterMs: Int64)
        case tick
        case leaderExited(ProcessSupervisor.ExitStatus)
        case group(alive: Bool)
    }

    /// Feeds the rows in order and checks each one's actions and stage.
    func play(_ rows: [(at: Int64, Event, [A], S)], sourceLocation: SourceLocation = #_sourceLocation) {
        var phase = ChildPhase()
        for (index, row) in rows.enumerated() {
            let actions: [A]
            switch row.1 {
            case .terminate(let killAfter): actions = phase.terminate(now: row.at, killAfterMs: killAfter)
            case .tick: actions = phase.tick(now: row.at)
            case .leaderExited(let status): phase.leaderExited(status); actions = []
            case .group(let alive): actions = phase.groupChecked(alive: alive, now: row.at)
            }
            #expect(actions == row.2, "row \(index)", sourceLocation: sourceLocation)
            #expect(phase.stage == row.3, "row \(index)", sourceLocation: sourceLocation)
        }
    }

    @Test func aLeaderThatExitsWithAnEmptyGroupIsReportedAsItExited() {
        play([
            (0, .tick, [], .running),
            (5, .leaderExited(.exited(3)), [], .running),
            (5, .group(alive: false), [.report(.exited(3), terminated: false)], .finished),
        ])
    }

    @Test func terminateSendsSigtermThenSigkillAtTheDeadlineNotBefore() {
        play([
            (100, .terminate(killAfterMs: 700), [.signal(SIGTERM)], .terminating(killAt: 800)),
            (799, .tick, [], .terminating(killAt: 800)),
            (800, .tick, [.signal(SIGKILL)], .killing(giveUpAt: 2800)),
            (900, .tick, [], .killing(giveUpAt: 2800)),
            (910, .leaderExited(.signaled(SIGKILL)), [], .killing(giveUpAt: 2800)),
            (910, .group(alive: false), [.report(.signaled(SIGKILL), terminated: true)], .finished),
        ])
    }

    @Test func aLeaderThatObeysSigtermIsReportedTerminatedWithoutSigkill() {
        play([
            (0, .terminate(killAfterMs: 1000), [.signal(SIGTERM)], .terminating(killAt: 1000)),
            (20, .leaderExited(.signaled(SIGTERM)), [], .terminating(killAt: 1000)),
            (20, .group(alive: false), [.report(.signaled(SIGTERM), terminated: true)], .finished),
            (1000, .tick, [], .finished),
        ])
    }

    @Test func aSecondTerminateChangesNothing() {
        play([
            (0, .terminate(killAfterMs: 1000), [.signal(SIGTERM)], .terminating(killAt: 1000)),
            (500, .terminate(killAfterMs: 10), [], .terminating(killAt: 1000)),
        ])
    }

    @Test func membersLeftInTheGroupAreKilledAtOnceAndWaitedForTwoSeconds() {
        play([
            (0, .leaderExited(.exited(0)), [], .running),
            (10, .group(alive: true), [.noteLeftInGroup, .signal(SIGKILL)], .killing(giveUpAt: 2010)),
            (20, .group(alive: true), [], .killing(giveUpAt: 2010)),
            (30, .group(alive: false), [.report(.exited(0), terminated: false)], .finished),
        ])
    }

    @Test func aGroupThatOutlivesSigkillIsGivenUpOnAndReported() {
        play([
            (0, .leaderExited(.exited(1)), [], .running),
            (0, .group(alive: true), [.noteLeftInGroup, .signal(SIGKILL)], .killing(giveUpAt: 2000)),
            (1999, .group(alive: true), [], .killing(giveUpAt: 2000)),
            (2000, .group(alive: true), [.noteGaveUp, .report(.exited(1), terminated: false)], .finished),
        ])
    }

    @Test func aTerminatedLeaderWhoseGroupLingersWaitsForTheSigkillDeadline() {
        play([
            (0, .terminate(killAfterMs: 500), [.signal(SIGTERM)], .terminating(killAt: 500)),
            (10, .leaderExited(.signaled(SIGTERM)), [], .terminating(killAt: 500)),
            (10, .group(alive: true), [], .terminating(killAt: 500)),
            (500, .tick, [.signal(SIGKILL)], .killing(giveUpAt: 2500)),
            (510, .group(alive: false), [.report(.signaled(SIGTERM), terminated: true)], .finished),
        ])
    }

    @Test func aTerminateWhileLeftMembersAreBeingKilledSendsSigtermAndReportsTerminated() {
        play([
            (0, .leaderExited(.exited(0)), [], .running),
            (0, .group(alive: true), [.noteLeftInGroup, .signal(SIGKILL)], .killing(giveUpAt: 2000)),
            (5, .terminate(killAfterMs: 100), [.signal(SIGTERM)], .killing(giveUpAt: 2000)),
            (200, .tick, [], .killing(giveUpAt: 2000)),
            (300, .group(alive: false), [.report(.exited(0), terminated: true)], .finished),
        ])
    }

    @Test func aTerminateAfterTheReportIsIgnored() {
        play([
            (0, .leaderExited(.exited(0)), [], .running),
            (0, .group(alive: false), [.report(.exited(0), terminated: false)], .finished),
            (1, .terminate(killAfterMs: 100), [], .finished),
        ])
    }

    @Test func onlyATerminatingPhaseHasADeadlineAndOnlyAnExitedLeaderWaitsForItsGroup() {
        var phase = ChildPhase()
        #expect(phase.deadline == nil && !phase.waitingForGroup)
        _ = phase.terminate(now: 0, killAfterMs: 50)
        #expect(phase.deadline == 50 && !phase.waitingForGroup)
        phase.leaderExited(.exited(0))
        #expect(phase.waitingForGroup)
        _ = phase.tick(now: 50)
        #expect(phase.deadline == nil)
    }

}

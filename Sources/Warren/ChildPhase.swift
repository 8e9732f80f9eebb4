import Glibc

/// Where one handler's process group is between its start and its report,
/// as a value: the supervisor thread feeds it events stamped with the time
/// (monotonic milliseconds) and carries out the actions it returns, so kill
/// escalation is tested on a manual clock, without processes or sleeps.
///
/// Two things move independently: the signals sent to the group (`stage`)
/// and the leader's exit (`leader`). The handler is finished only when the
/// leader has exited and its group is empty, or, after SIGKILL, when
/// `giveUpAfterMs` has passed (a member stuck in the kernel is not waited
/// for without end).
struct ChildPhase: Equatable {
    enum Stage: Equatable {
        /// Nothing sent to the group.
        case running
        /// SIGTERM sent because a terminate was asked for; SIGKILL at `killAt`.
        case terminating(killAt: Int64)
        /// SIGKILL sent; the group is waited for until `giveUpAt`.
        case killing(giveUpAt: Int64)
        /// Reported; nothing more happens.
        case finished
    }

    enum Action: Equatable {
        /// To the whole process group.
        case signal(Int32)
        /// Tell the handler's log: the leader exited but left members in its group.
        case noteLeftInGroup
        /// Tell the handler's log: the group outlived SIGKILL by `giveUpAfterMs`.
        case noteGaveUp
        /// The handler is done: answer whoever waits for it.
        case report(ProcessSupervisor.ExitStatus, terminated: Bool)
    }

    /// How long a SIGKILLed group is waited for.
    static let giveUpAfterMs: Int64 = 2000

    private(set) var stage: Stage = .running
    /// The leader's status, once reaped.
    private(set) var leader: ProcessSupervisor.ExitStatus? = nil
    /// A terminate was asked for (cancelled: timeout, shutdown): reported as `terminated`.
    private(set) var terminateRequested = false

    /// When this phase needs a `tick`: the SIGKILL deadline, if one is set.
    var deadline: Int64? {
        if case .terminating(let killAt) = stage { return killAt }
        return nil
    }

    /// The leader is gone and its group is waited for: checked by polling.
    var waitingForGroup: Bool { leader != nil && stage != .finished }

    /// Asked to end the handler: SIGTERM now, SIGKILL after `killAfterMs`.
    /// A group already being killed is sent SIGTERM too but keeps its
    /// deadline; a second request changes nothing.
    mutating func terminate(now: Int64, killAfterMs: Int64) -> [Action] {
        guard !terminateRequested, stage != .finished else { return [] }
        terminateRequested = true
        if stage == .running { stage = .terminating(killAt: now + killAfterMs) }
        return [.signal(SIGTERM)]
    }

    /// Time passed: a group still there at its SIGKILL deadline is killed.
    mutating func tick(now: Int64) -> [Action] {
        guard case .terminating(let killAt) = stage, now >= killAt else { return [] }
        stage = .killing(giveUpAt: now + Self.giveUpAfterMs)
        return [.signal(SIGKILL)]
    }

    /// The leader was reaped with `status`.
    mutating func leaderExited(_ status: ProcessSupervisor.ExitStatus) {
        precondition(leader == nil, "ChildPhase: leaderExited twice (stage \(stage))")
        leader = status
    }

    /// After the leader exited: whether its group still has members. A group
    /// left behind without a terminate is SIGKILLed at once; a terminated
    /// one is killed at its deadline (`tick`); an empty one is reported.
    mutating func groupChecked(alive: Bool, now: Int64) -> [Action] {
        guard let status = leader, stage != .finished else {
            preconditionFailure("ChildPhase: groupChecked before the leader exited or after the report (stage \(stage))")
        }
        var actions: [Action] = []
        if alive {
            if stage == .running {
                stage = .killing(giveUpAt: now + Self.giveUpAfterMs)
                actions += [.noteLeftInGroup, .signal(SIGKILL)]
            }
            guard case .killing(let giveUpAt) = stage, now >= giveUpAt else { return actions }
            actions.append(.noteGaveUp)
        }
        stage = .finished
        actions.append(.report(status, terminated: terminateRequested))
        return actions
    }
}

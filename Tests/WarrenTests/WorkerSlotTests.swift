import Testing
@testable import Warren

/// A persistent worker slot's way through starts, messages, failures and
/// the drain: each test is a table of (event, actions expected, state after).
@Suite struct WorkerSlotTests {
    typealias A = WorkerSlot.Action
    typealias S = WorkerSlot.State

    enum Event {
        case begin, spawned, spawnFailed(String), line(WorkerLine), take(String), withdrawn, watchdog, exited(String)
        case alarm(Int), drain, shutdown, overMemory, closedPipe(String), exitedUnread(String)
    }

    static let ready = WorkerLine.ready
    static func answer(_ id: String, _ verdict: WorkerAnswer.Verdict = .ack, reason: String? = nil) -> WorkerLine {
        .answer(WorkerAnswer(id: id, verdict: verdict, reason: reason))
    }
    static func retried(_ why: String) -> A { .settle(.retry(Failure(reason: why))) }

    /// Feeds the rows in order and checks each one's actions and state.
    @discardableResult
    func play(maxMessages: Int = 0, _ rows: [(Event, [A], S)], sourceLocation: SourceLocation = #_sourceLocation) -> WorkerSlot {
        var slot = WorkerSlot(maxMessages: maxMessages)
        for (index, row) in rows.enumerated() {
            let actions: [A]
            switch row.0 {
            case .begin: actions = slot.begin()
            case .spawned: actions = slot.spawned()
            case .spawnFailed(let why): actions = slot.spawnFailed(why)
            case .line(let line): actions = slot.line(line)
            case .take(let id): actions = slot.messageTaken(id: id)
            case .withdrawn: actions = slot.messageWithdrawn()
            case .watchdog: actions = slot.watchdogStopped()
            case .exited(let status): actions = slot.exited(status)
            case .alarm(let token): actions = slot.alarm(token)
            case .drain: actions = slot.drain()
            case .shutdown: actions = slot.shutdown()
            case .overMemory: actions = slot.overMemory()
            case .closedPipe(let pipe): actions = slot.closedPipe(pipe)
            case .exitedUnread(let status): actions = slot.exited(status, unread: true)
            }
            #expect(actions == row.1, "row \(index)", sourceLocation: sourceLocation)
            #expect(slot.state == row.2, "row \(index)", sourceLocation: sourceLocation)
        }
        return slot
    }

    @Test func aMessageIsAskedForOnlyOnceTheWorkerSaysReadyAndAnAckSettlesIt() {
        play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.line(Self.answer("2", .dead_letter, reason: "bad order")),
             [.answered(.deadLetter(Failure(reason: "bad order"))), .requestMessage], .ready),
        ])
    }

    @Test func theStartupTimerNoLongerCountsOnceReady() {
        play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.alarm(1), [], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.exited("exit code 0"), [.exitedIdle("exit code 0"), .spawn], .starting),
            // The first worker's startup timer, late, must not end the second's start.
            (.alarm(1), [], .starting),
        ])
    }

    @Test func aWorkerSilentPastStartupTimeoutIsTerminatedAndRestartedAfterABackoff() {
        play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.alarm(1), [.startFailed("not ready within startup_timeout"), .terminate], .ending(.replace)),
            (.exited("killed by signal 15"),
             [.startFailed("exited before finishing a message (killed by signal 15)"), .arm(.backoff(attempt: 0), token: 2)], .backingOff),
            (.alarm(2), [.spawn], .starting),
        ])
    }

    @Test func aCrashLoopAtStartupBacksOffLongerEachTimeUntilAWorkerIsReady() {
        play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.exited("exit code 1"), [.startFailed("exited before it was ready (exit code 1)"), .arm(.backoff(attempt: 0), token: 2)], .backingOff),
            (.alarm(2), [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 3)], .starting),
            (.exited("exit code 1"), [.startFailed("exited before it was ready (exit code 1)"), .arm(.backoff(attempt: 1), token: 4)], .backingOff),
            (.alarm(4), [.spawn], .starting),
            (.spawnFailed("cannot run 'x'"), [.startFailed("cannot run 'x'"), .arm(.backoff(attempt: 2), token: 5)], .backingOff),
            (.alarm(5), [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 6)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
        ])
    }

    @Test func aWorkerThatExitsRightAfterReadyIsRestartedWithBackoffNotAtOnce() {
        let slot = play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.exited("exit code 0"), [.exitedIdle("exit code 0"), .startFailed("exited before finishing a message (exit code 0)"),
                                      .arm(.backoff(attempt: 0), token: 3)], .backingOff),
        ])
        #expect(slot.failedStarts == 1)
    }

    @Test func aWorkerDyingWithAMessageRetriesItAndOneThatHadWorkedIsReplacedAtOnce() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.exited("killed by signal 9"), [Self.retried("the worker died holding message 2 (killed by signal 9)"), .spawn], .starting),
        ])
    }

    @Test func aWorkerDyingOnItsFirstMessageRetriesItAndBacksOff() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.exited("exit code 3"), [Self.retried("the worker died holding message 1 (exit code 3)"),
                                      .startFailed("exited before finishing a message (exit code 3)"),
                                      .arm(.backoff(attempt: 0), token: 2)], .backingOff),
        ])
    }

    /// The message fails only once the worker has gone: until then it may
    /// still be working on it, and a retry must not run it beside it.
    @Test func anAnswerToAnotherIdIsAProtocolErrorThatRetriesTheMessageOnceTheWorkerHasGone() {
        let why = "expected the answer to message 1, got an answer to message 7"
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("7")), [.protocolError(why), .terminate], .ending(.replace)),
            (.line(Self.answer("7")), [], .ending(.replace)),
            (.exited("killed by signal 15"),
             [Self.retried("protocol error: \(why)"), .startFailed("exited before finishing a message (killed by signal 15)"),
              .arm(.backoff(attempt: 0), token: 2)], .backingOff),
        ])
    }

    @Test func theAnswerToTheMessageInHandStandsEvenAfterAProtocolErrorOrTheWatchdog() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(.invalid(why: "not JSON", excerpt: "warning: x")),
             [.protocolError("expected the answer to message 1, got a line that is not JSON: warning: x"), .terminate], .ending(.replace)),
            // The work was done: acked once, and nothing is settled at the
            // exit; a worker that finished a message is replaced at once.
            (.line(Self.answer("1")), [.answered(.ack)], .ending(.replace)),
            (.line(Self.answer("1")), [], .ending(.replace)),
            (.exited("killed by signal 15"), [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.watchdog, [.terminate], .ending(.replace)),
            (.line(Self.answer("2", .retry, reason: "late")), [.answered(.retry(Failure(reason: "late")))], .ending(.replace)),
        ])
    }

    @Test func aMessageTheWorkerNeverReadGoesBackWithoutAnAttempt() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            // It exited after its answer, before reading the next message.
            (.exitedUnread("exit code 0"), [.release, .spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("3"), [.send(id: "3")], .busy(id: "3")),
            (.closedPipe("stdin"), [.protocolError("the worker closed its stdin but did not exit (holding message 3)"), .terminate],
             .ending(.replace)),
            (.exitedUnread("killed by signal 15"),
             [.release, .startFailed("exited before finishing a message (killed by signal 15)"), .arm(.backoff(attempt: 0), token: 3)],
             .backingOff),
        ])
    }

    @Test func aWorkerThatClosesAPipeAndLivesOnIsReplacedAndItsMessageRetriedOnceItHasGone() {
        let why = "the worker closed its stdout but did not exit"
        play([
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.closedPipe("stdout"), [.protocolError(why + " (holding message 1)"), .terminate], .ending(.replace)),
            (.closedPipe("stdin"), [], .ending(.replace)),
            (.exited("killed by signal 15"), [Self.retried("protocol error: " + why + " (holding message 1)"),
                                              .startFailed("exited before finishing a message (killed by signal 15)"),
                                              .arm(.backoff(attempt: 0), token: 3)], .backingOff),
            (.alarm(3), [.spawn], .starting),
            (.closedPipe("stdout"), [.protocolError(why), .terminate], .ending(.replace)),
        ])
    }

    @Test func aPipeClosedByAWorkerOnItsWayOutIsNoError() {
        play(maxMessages: 1, [
            (.begin, [.spawn], .starting),
            (.spawned, [.arm(.startup, token: 1)], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .closeInput, .arm(.escalation, token: 3)], .ending(.recycle)),
            (.closedPipe("stdout"), [], .ending(.recycle)),
        ])
    }

    @Test func aMessageWaitsForAWorkerOnlyWhenOneComesWithoutATimer() {
        var slot = WorkerSlot(maxMessages: 1)
        _ = slot.begin()
        #expect(slot.expectsAWorkerSoon, "starting")
        _ = slot.line(Self.ready)
        _ = slot.messageTaken(id: "1")
        _ = slot.line(Self.answer("1"))
        #expect(slot.state == .ending(.recycle))
        #expect(slot.expectsAWorkerSoon, "recycled: the next one starts when this one has gone")
        _ = slot.exited("exit code 0")
        _ = slot.line(Self.ready)
        _ = slot.watchdogStopped()
        #expect(slot.state == .ready, "nothing in hand: the watchdog has nothing to stop")
        _ = slot.line(Self.answer("9"))
        #expect(slot.state == .ending(.replace))
        #expect(!slot.expectsAWorkerSoon, "replaced before it finished a message: a backoff follows")
        _ = slot.exited("killed by signal 15")
        #expect(slot.state == .backingOff)
        #expect(!slot.expectsAWorkerSoon)
        _ = slot.drain()
        #expect(!slot.expectsAWorkerSoon)
    }

    @Test func garbageOnStdoutIsAProtocolErrorWithTheLinesStart() {
        let garbage = WorkerLine(Array("hello world".utf8))
        guard case .invalid(_, let excerpt) = garbage else {
            Issue.record("'hello world' was read as the protocol")
            return
        }
        #expect(excerpt == "hello world")
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.line(garbage), [.protocolError(WorkerSlot.describe(garbage, expected: "nothing (no message in hand)")), .terminate],
             .ending(.replace)),
        ])
    }

    @Test func anythingButReadyAtStartupIsAProtocolErrorAndAFailedStart() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.answer("1")), [.protocolError("expected {\"ready\":true}, got an answer to message 1"), .terminate], .ending(.replace)),
            (.exited("exit code 0"), [.startFailed("exited before finishing a message (exit code 0)"), .arm(.backoff(attempt: 0), token: 1)],
             .backingOff),
        ])
    }

    @Test func theWatchdogTerminatesTheWorkerAndTheMessageIsRetriedWhenItHasGone() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.watchdog, [.terminate], .ending(.replace)),
            (.exited("killed by signal 15"),
             [.settle(.retry(Failure(reason: "the worker was terminated holding the message (killed by signal 15)", timedOut: true))), .spawn],
             .starting),
        ])
    }

    @Test func maxMessagesRecyclesTheWorkerAfterItsAnswerAndANewOneStartsWhenItHasGone() {
        play(maxMessages: 2, [
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.line(Self.answer("2")), [.answered(.ack), .closeInput, .arm(.escalation, token: 2)], .ending(.recycle)),
            (.exited("exit code 0"), [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("3"), [.send(id: "3")], .busy(id: "3")),
        ])
    }

    @Test func aWorkerOverMaxMemoryIsRecycledAndOneIgnoringEndOfFileIsTerminatedAfterKillAfter() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            // Measured as its answer comes: no next message is asked for.
            (.overMemory, [], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .closeInput, .arm(.escalation, token: 2)], .ending(.recycle)),
            (.alarm(2), [.terminate], .ending(.recycle)),
            (.exited("killed by signal 15"), [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("2"), [.send(id: "2")], .busy(id: "2")),
            (.line(Self.answer("2")), [.answered(.ack), .requestMessage], .ready),
        ])
    }

    @Test func aDrainLetsTheMessageInHandFinishThenClosesStdinAndEnds() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.drain, [], .busy(id: "1")),
            (.line(Self.answer("1")), [.answered(.ack), .closeInput, .arm(.escalation, token: 2)], .ending(.drain)),
            (.exited("exit code 0"), [.finish], .done),
        ])
    }

    @Test func aDrainClosesAnIdleWorkersStdinAndTerminatesItAfterKillAfter() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.drain, [.closeInput, .arm(.escalation, token: 2)], .ending(.drain)),
            (.alarm(2), [.terminate], .ending(.drain)),
            (.exited("killed by signal 15"), [.finish], .done),
        ])
    }

    @Test func theEndOfTheGraceTerminatesAWorkerWaitingOutItsKillAfterAtOnce() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.drain, [.closeInput, .arm(.escalation, token: 2)], .ending(.drain)),
            (.shutdown, [.terminate], .ending(.drain)),
            (.alarm(2), [], .ending(.drain)),
            (.exited("killed by signal 15"), [.finish], .done),
        ])
    }

    @Test func aQuitWithAMessageInHandLeavesItToTheWatchdogAndEndsWhenTheWorkerHasGone() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.shutdown, [], .busy(id: "1")),
            (.watchdog, [.terminate], .ending(.replace)),
            (.exited("killed by signal 15"),
             [.settle(.retry(Failure(reason: "the worker was terminated holding the message (killed by signal 15)", timedOut: true))), .finish],
             .done),
        ])
    }

    @Test func aDrainDuringABackoffOrAStartStartsNothingMore() {
        play([
            (.begin, [.spawn], .starting),
            (.exited("exit code 1"), [.startFailed("exited before it was ready (exit code 1)"), .arm(.backoff(attempt: 0), token: 1)], .backingOff),
            (.drain, [.finish], .done),
        ])
        play([
            (.begin, [.spawn], .starting),
            (.drain, [.closeInput, .arm(.escalation, token: 1)], .ending(.drain)),
            (.line(Self.ready), [], .ending(.drain)),
            (.exited("exit code 0"), [.finish], .done),
        ])
    }

    @Test func aMessageThatCouldNotBeSentLeavesTheWorkerIdle() {
        play([
            (.begin, [.spawn], .starting),
            (.line(Self.ready), [.becameReady, .requestMessage], .ready),
            (.take("1"), [.send(id: "1")], .busy(id: "1")),
            (.withdrawn, [], .ready),
            (.shutdown, [.closeInput, .arm(.escalation, token: 2), .terminate], .ending(.drain)),
        ])
    }
}

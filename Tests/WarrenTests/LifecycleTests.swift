import Testing
@testable import Warren

/// Every event in every state, as the table in Lifecycle.swift says.
@Suite struct LifecycleTests {
    typealias S = Lifecycle.State

    static let allStates: [S] = [
        .starting(inFlight: 0), .starting(inFlight: 2), .running(inFlight: 0), .running(inFlight: 3),
        .draining(inFlight: 0, terminating: false), .draining(inFlight: 2, terminating: false),
        .draining(inFlight: 2, terminating: true), .closing, .reconnecting(inFlight: 0), .reconnecting(inFlight: 2),
        .stopped(exitCode: 0),
    ]

    func run(_ state: S, _ event: (inout Lifecycle) -> Lifecycle.Action) -> (Lifecycle.Action, S) {
        var machine = Lifecycle(state: state)
        let action = event(&machine)
        return (action, machine.state)
    }

    @Test func startsInStartingWithNothingInFlight() {
        #expect(Lifecycle().state == .starting(inFlight: 0))
    }

    @Test func startedMovesStartingToRunningAndNotifiesReady() {
        #expect(run(.starting(inFlight: 2)) { $0.started() } == (.notifyReady, .running(inFlight: 2)))
    }

    @Test func startedAfterAReconnectIsRunningAgain() {
        #expect(run(.reconnecting(inFlight: 1)) { $0.started() } == (.notifyReady, .running(inFlight: 1)))
    }

    @Test(arguments: allStates.filter {
        switch $0 { case .starting, .reconnecting: return false; default: return true }
    })
    func startedIsIgnoredOutsideStartingAndReconnecting(state: S) {
        #expect(run(state) { $0.started() } == (.none, state))
    }

    @Test func dispatchedDeliveriesCountAsInFlight() {
        #expect(run(.starting(inFlight: 0)) { $0.dispatched(1) } == (.none, .starting(inFlight: 1)))
        #expect(run(.running(inFlight: 3)) { $0.dispatched(5) } == (.none, .running(inFlight: 8)))
        #expect(run(.reconnecting(inFlight: 1)) { $0.dispatched(1) } == (.none, .reconnecting(inFlight: 2)))
        #expect(run(.running(inFlight: 3)) { $0.dispatched(0) } == (.none, .running(inFlight: 3)))
    }

    @Test func dispatchesCountedLateInADrainAreStillInFlight() {
        #expect(run(.draining(inFlight: 0, terminating: false)) { $0.dispatched(2) } == (.none, .draining(inFlight: 2, terminating: false)))
    }

    @Test func aDispatchAfterTheCloseBeganIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .closing)
            _ = machine.dispatched(1)
        }
    }

    @Test func finishedHandlersCountDownWhileRunning() {
        #expect(run(.running(inFlight: 3)) { $0.released(1) } == (.none, .running(inFlight: 2)))
        #expect(run(.starting(inFlight: 1)) { $0.released(1) } == (.none, .starting(inFlight: 0)))
    }

    @Test func lastHandlerFinishingWhileDrainingStartsTheClose() {
        #expect(run(.draining(inFlight: 2, terminating: false)) { $0.released(1) } == (.none, .draining(inFlight: 1, terminating: false)))
        #expect(run(.draining(inFlight: 1, terminating: false)) { $0.released(1) } == (.close, .closing))
        #expect(run(.draining(inFlight: 1, terminating: true)) { $0.released(1) } == (.close, .closing))
    }

    @Test func handlersFinishingWhileReconnectingCountDown() {
        #expect(run(.reconnecting(inFlight: 2)) { $0.released(1) } == (.none, .reconnecting(inFlight: 1)))
        #expect(run(.reconnecting(inFlight: 3)) { $0.released(3) } == (.none, .reconnecting(inFlight: 0)))
    }

    @Test func finishedHandlersAreIgnoredWhenClosingOrStopped() {
        #expect(run(.closing) { $0.released(1) } == (.none, .closing))
        #expect(run(.stopped(exitCode: 0)) { $0.released(1) } == (.none, .stopped(exitCode: 0)))
    }

    @Test func releasingEveryUnstartedDeliveryWithNothingRunningClosesAtOnce() {
        #expect(run(.draining(inFlight: 5, terminating: false)) { $0.released(5) } == (.close, .closing))
        #expect(run(.draining(inFlight: 0, terminating: false)) { $0.released(0) } == (.close, .closing))
        #expect(run(.draining(inFlight: 5, terminating: false)) { $0.released(3) } == (.none, .draining(inFlight: 2, terminating: false)))
    }

    @Test func stopSignalWhileRunningBeginsTheDrain() {
        #expect(run(.running(inFlight: 4)) { $0.stopRequested() } == (.beginDrain, .draining(inFlight: 4, terminating: false)))
        #expect(run(.starting(inFlight: 0)) { $0.stopRequested() } == (.beginDrain, .draining(inFlight: 0, terminating: false)))
    }

    @Test func stopSignalWhileReconnectingDrainsWithoutWaitingForTheBroker() {
        #expect(run(.reconnecting(inFlight: 1)) { $0.stopRequested() } == (.beginDrain, .draining(inFlight: 1, terminating: false)))
        #expect(run(.reconnecting(inFlight: 0)) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(inFlight: 0, terminating: true)))
    }

    @Test func secondStopSignalSkipsTheRestOfTheGracePeriod() {
        #expect(run(.draining(inFlight: 2, terminating: false)) { $0.stopRequested() } == (.terminateHandlers, .draining(inFlight: 2, terminating: true)))
    }

    @Test(arguments: [S.draining(inFlight: 2, terminating: true), .closing, .stopped(exitCode: 0)])
    func furtherStopSignalsChangeNothing(state: S) {
        #expect(run(state) { $0.stopRequested() } == (.none, state))
    }

    @Test func quitWhileRunningDrainsAndTerminatesAtOnce() {
        #expect(run(.running(inFlight: 2)) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(inFlight: 2, terminating: true)))
        #expect(run(.starting(inFlight: 0)) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(inFlight: 0, terminating: true)))
    }

    @Test func quitWhileDrainingTerminatesOnce() {
        #expect(run(.draining(inFlight: 2, terminating: false)) { $0.quitRequested() } == (.terminateHandlers, .draining(inFlight: 2, terminating: true)))
        #expect(run(.draining(inFlight: 2, terminating: true)) { $0.quitRequested() } == (.none, .draining(inFlight: 2, terminating: true)))
    }

    @Test func quitIsIgnoredWhenClosingOrStopped() {
        #expect(run(.closing) { $0.quitRequested() } == (.none, .closing))
        #expect(run(.stopped(exitCode: 0)) { $0.quitRequested() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func graceExpiryTerminatesHandlersOnlyWhileDraining() {
        #expect(run(.draining(inFlight: 1, terminating: false)) { $0.graceExpired() } == (.terminateHandlers, .draining(inFlight: 1, terminating: true)))
        for state in Self.allStates where state != .draining(inFlight: 1, terminating: false) {
            if case .draining(_, false) = state { continue }
            #expect(run(state) { $0.graceExpired() } == (.none, state))
        }
    }

    @Test func closedWhileClosingStopsWithExitZero() {
        #expect(run(.closing) { $0.closed() } == (.exit(0), .stopped(exitCode: 0)))
        #expect(run(.stopped(exitCode: 0)) { $0.closed() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func closedBeforeClosingIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .running(inFlight: 0))
            _ = machine.closed()
        }
    }

    @Test func moreSettledThanDispatchedIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .running(inFlight: 0))
            _ = machine.released(1)
        }
    }

    @Test func connectionLostWhileRunningReconnectsAndKeepsHandlersRunning() {
        #expect(run(.running(inFlight: 2)) { $0.connectionLost() } == (.reconnect, .reconnecting(inFlight: 2)))
        #expect(run(.starting(inFlight: 0)) { $0.connectionLost() } == (.reconnect, .reconnecting(inFlight: 0)))
    }

    @Test func connectionLostWhileDrainingLetsHandlersFinish() {
        #expect(run(.draining(inFlight: 1, terminating: false)) { $0.connectionLost() } == (.none, .draining(inFlight: 1, terminating: false)))
    }

    @Test func connectionLostWhileClosingIsAStillCleanStop() {
        #expect(run(.closing) { $0.connectionLost() } == (.exit(0), .stopped(exitCode: 0)))
    }

    @Test func connectionLostAgainWhileReconnectingChangesNothing() {
        #expect(run(.reconnecting(inFlight: 1)) { $0.connectionLost() } == (.none, .reconnecting(inFlight: 1)))
        #expect(run(.stopped(exitCode: 0)) { $0.connectionLost() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func aFirstStartThatCannotSucceedExitsOne() {
        #expect(run(.starting(inFlight: 0)) { $0.failed() } == (.exit(1), .stopped(exitCode: 1)))
    }

    @Test func failingAfterTheFirstStartIsAProgrammingError() async {
        await #expect(processExitsWith: .failure) {
            var machine = Lifecycle(state: .reconnecting(inFlight: 0))
            _ = machine.failed()
        }
    }

    @Test func aFullDrainWalksTheWholeTable() {
        var machine = Lifecycle()
        #expect(machine.started() == .notifyReady)
        #expect(machine.dispatched(3) == .none)
        #expect(machine.stopRequested() == .beginDrain)
        #expect(machine.released(1) == .none)  // one was waiting in a buffer
        #expect(machine.dispatched(1) == .none)  // arrived before the buffers closed, counted late
        #expect(machine.released(1) == .none)  // and released with them
        #expect(machine.released(1) == .none)
        #expect(machine.released(1) == .close)
        #expect(machine.closed() == .exit(0))
        #expect(machine.state == .stopped(exitCode: 0))
    }
}

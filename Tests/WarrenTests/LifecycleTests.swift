import Testing
@testable import Warren

/// Every event in every state, as the table in Lifecycle.swift says.
@Suite struct LifecycleTests {
    typealias S = Lifecycle.State

    static let allStates: [S] = [
        .starting, .running, .reconnecting, .draining(terminating: false), .draining(terminating: true), .closing,
        .stopped(exitCode: 0),
    ]

    func run(_ state: S, _ event: (inout Lifecycle) -> Lifecycle.Action) -> (Lifecycle.Action, S) {
        var machine = Lifecycle(state: state)
        let action = event(&machine)
        return (action, machine.state)
    }

    @Test func startsInStarting() {
        #expect(Lifecycle().state == .starting)
    }

    @Test func startedMovesStartingToRunningAndNotifiesReady() {
        #expect(run(.starting) { $0.started() } == (.notifyReady, .running))
    }

    @Test func startedAfterAReconnectIsRunningAgain() {
        #expect(run(.reconnecting) { $0.started() } == (.notifyReady, .running))
    }

    @Test(arguments: allStates.filter {
        switch $0 { case .starting, .reconnecting: return false; default: return true }
    })
    func startedIsIgnoredOutsideStartingAndReconnecting(state: S) {
        #expect(run(state) { $0.started() } == (.none, state))
    }

    @Test func theWorkersEndingWhileDrainingStartsTheClose() {
        #expect(run(.draining(terminating: false)) { $0.workersDone() } == (.close, .closing))
        #expect(run(.draining(terminating: true)) { $0.workersDone() } == (.close, .closing))
    }

    @Test func stopSignalWhileRunningBeginsTheDrain() {
        #expect(run(.running) { $0.stopRequested() } == (.beginDrain, .draining(terminating: false)))
        #expect(run(.starting) { $0.stopRequested() } == (.beginDrain, .draining(terminating: false)))
    }

    @Test func stopSignalWhileReconnectingDrainsWithoutWaitingForTheBroker() {
        #expect(run(.reconnecting) { $0.stopRequested() } == (.beginDrain, .draining(terminating: false)))
        #expect(run(.reconnecting) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(terminating: true)))
    }

    @Test func secondStopSignalSkipsTheRestOfTheGracePeriod() {
        #expect(run(.draining(terminating: false)) { $0.stopRequested() } == (.terminateHandlers, .draining(terminating: true)))
    }

    @Test(arguments: [S.draining(terminating: true), .closing, .stopped(exitCode: 0)])
    func furtherStopSignalsChangeNothing(state: S) {
        #expect(run(state) { $0.stopRequested() } == (.none, state))
    }

    @Test func quitWhileRunningDrainsAndTerminatesAtOnce() {
        #expect(run(.running) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(terminating: true)))
        #expect(run(.starting) { $0.quitRequested() } == (.beginDrainAndTerminate, .draining(terminating: true)))
    }

    @Test func quitWhileDrainingTerminatesOnce() {
        #expect(run(.draining(terminating: false)) { $0.quitRequested() } == (.terminateHandlers, .draining(terminating: true)))
        #expect(run(.draining(terminating: true)) { $0.quitRequested() } == (.none, .draining(terminating: true)))
    }

    @Test func quitIsIgnoredWhenClosingOrStopped() {
        #expect(run(.closing) { $0.quitRequested() } == (.none, .closing))
        #expect(run(.stopped(exitCode: 0)) { $0.quitRequested() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func graceExpiryTerminatesHandlersOnlyWhileDraining() {
        #expect(run(.draining(terminating: false)) { $0.graceExpired() } == (.terminateHandlers, .draining(terminating: true)))
        for state in Self.allStates where state != .draining(terminating: false) {
            #expect(run(state) { $0.graceExpired() } == (.none, state))
        }
    }

    @Test func closedWhileClosingStopsWithExitZero() {
        #expect(run(.closing) { $0.closed() } == (.exit(0), .stopped(exitCode: 0)))
        #expect(run(.stopped(exitCode: 0)) { $0.closed() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func connectionLostWhileRunningReconnectsAndKeepsHandlersRunning() {
        #expect(run(.running) { $0.connectionLost() } == (.reconnect, .reconnecting))
        #expect(run(.starting) { $0.connectionLost() } == (.reconnect, .reconnecting))
    }

    @Test func connectionLostWhileDrainingLetsHandlersFinish() {
        #expect(run(.draining(terminating: false)) { $0.connectionLost() } == (.none, .draining(terminating: false)))
    }

    @Test func connectionLostWhileClosingIsAStillCleanStop() {
        #expect(run(.closing) { $0.connectionLost() } == (.exit(0), .stopped(exitCode: 0)))
    }

    @Test func connectionLostAgainWhileReconnectingChangesNothing() {
        #expect(run(.reconnecting) { $0.connectionLost() } == (.none, .reconnecting))
        #expect(run(.stopped(exitCode: 0)) { $0.connectionLost() } == (.none, .stopped(exitCode: 0)))
    }

    @Test func aFirstStartThatCannotSucceedExitsOne() {
        #expect(run(.starting) { $0.failed() } == (.exit(1), .stopped(exitCode: 1)))
    }

    @Test func aFirstStartRefusedForTheConfigsSakeExitsWithItsCode() {
        #expect(run(.starting) { $0.failed(exitCode: 78) } == (.exit(78), .stopped(exitCode: 78)))
    }

    @Test func aFullDrainWalksTheWholeTable() {
        var machine = Lifecycle()
        #expect(machine.started() == .notifyReady)
        #expect(machine.connectionLost() == .reconnect)
        #expect(machine.started() == .notifyReady)
        #expect(machine.stopRequested() == .beginDrain)
        #expect(machine.graceExpired() == .terminateHandlers)
        #expect(machine.workersDone() == .close)
        #expect(machine.closed() == .exit(0))
        #expect(machine.state == .stopped(exitCode: 0))
    }
}

/// The process around its runtimes: which runtime speaks for the process,
/// when a reload's new consumers take over, which runtimes a stop signal
/// reaches, and when the process exits.
///
/// A plain value like `Lifecycle`: every event is a `mutating func` that
/// returns what to do, so each case is tested as a table. Runtimes are
/// named by their generation (1 for the first, then one more per reload).
///
/// | phase \ event | stop signal | quit signal | reload signal | candidate ready | candidate ended | candidate timed out | current ended |
/// | --- | --- | --- | --- | --- | --- | --- | --- |
/// | running | arm backstop; stop every runtime not draining yet -> stopping | arm backstop; quit all -> stopping | load the config; valid: start a candidate (paused if paused) -> reloading | - | - | - | arm backstop; stop the others -> stopping |
/// | reloading | as running (the candidate is stopped too) | as running | ignored: one reload at a time | promote it, retire the old current -> running | reload failed, keep current -> running | stop it, keep current -> running | arm backstop; stop the others -> stopping |
/// | stopping | stop every runtime again: skip their grace | quit all | ignored | - | - | - | - |
///
/// Pausing (SIGTSTP) and resuming (SIGCONT) are a flag beside the phase:
///
/// | phase \ event | pause signal | resume signal |
/// | --- | --- | --- |
/// | running, reloading | not paused: pause every runtime not draining (the candidate too) -> paused; paused: nothing | paused: resume every runtime not draining -> not paused; not paused: nothing |
/// | stopping | nothing: the drain goes on (paused or not, it is an ordinary drain) | not paused any more; nothing to resume |
///
/// Each runtime gets exactly one drain per stop request: a runtime retired
/// by a reload is already draining with its own grace period, so the first
/// stop signal after a reload leaves it alone; a second stop signal reaches
/// every runtime and ends their handlers now. Once stopping, the process
/// exits when every runtime has ended, with the exit code of the current one.
///
/// A reload never leaves the process without consumers: the old ones retire
/// only once the new ones consume. New ones that cannot start (a refused
/// login, a queue whose arguments changed, a timeout) are dropped and the
/// old ones go on.
public struct DaemonControl: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        case running
        /// A reload started `candidate`; it is not consuming yet.
        case reloading(candidate: Int)
        case stopping
    }

    public enum Action: Sendable, Equatable {
        /// Stop consuming in these runtimes (SIGTSTP): running handlers finish.
        case pause([Int])
        /// Consume again in these runtimes (SIGCONT).
        case resume([Int])
        /// Arm the last-resort exit timer (SIGQUIT's bound is shorter).
        case armBackstop(quit: Bool)
        /// Drain these runtimes; one already draining skips the rest of its grace.
        case stop([Int])
        /// Terminate the handlers of these runtimes now, requeue everything, close.
        case quit([Int])
        /// Read and validate the config file, then report `configLoaded` or `configInvalid`.
        case loadConfig
        /// Start a runtime with the config just loaded; `paused`: it starts
        /// paused (set up, consuming nothing) because the process is.
        case start(Int, paused: Bool)
        /// The reload was refused: log why, tell systemd the old config runs on.
        case ignoreReload(String)
        /// The old config runs on: tell systemd (after `RELOADING=1`).
        case keepCurrent
        /// `candidate` consumes: it speaks for the process from now; `retired` drains.
        case promote(Int, retired: Int)
        /// The candidate could not start in time: stop it; the current runtime goes on.
        case abandon(Int)
        /// The reload's new consumers ended before consuming: the current runtime goes on.
        case reloadFailed(Int, code: Int32)
        /// A runtime that was replaced (or abandoned) has ended.
        case replacedEnded(Int, code: Int32)
        /// Leave the process with this code.
        case exit(Int32)
    }

    public private(set) var phase: Phase = .running
    /// The runtime that speaks for the process (readiness, systemd, exit code).
    public private(set) var current = 1
    /// Runtimes whose run has not returned.
    public private(set) var alive: Set<Int> = [1]
    /// SIGTSTP came and no SIGCONT since.
    public private(set) var paused = false
    /// Runtimes already told to drain once.
    private var draining: Set<Int> = []
    private var exitCode: Int32 = 1
    private var lastGeneration = 1

    public init() {}

    public mutating func stopSignal() -> [Action] {
        switch phase {
        case .running, .reloading:
            phase = .stopping
            let targets = alive.subtracting(draining)
            draining.formUnion(targets)
            return [.armBackstop(quit: false), .stop(targets.sorted())]
        case .stopping:
            return [.stop(alive.sorted())]
        }
    }

    public mutating func quitSignal() -> [Action] {
        let first = phase != .stopping
        phase = .stopping
        draining.formUnion(alive)
        return (first ? [.armBackstop(quit: true)] : []) + [.quit(alive.sorted())]
    }

    public mutating func pauseSignal() -> [Action] {
        guard phase != .stopping, !paused else { return [] }
        paused = true
        let targets = alive.subtracting(draining)
        return targets.isEmpty ? [] : [.pause(targets.sorted())]
    }

    public mutating func resumeSignal() -> [Action] {
        guard paused else { return [] }
        paused = false
        guard phase != .stopping else { return [] }
        let targets = alive.subtracting(draining)
        return targets.isEmpty ? [] : [.resume(targets.sorted())]
    }

    public mutating func reloadSignal() -> Action {
        switch phase {
        case .running: return .loadConfig
        case .reloading: return .ignoreReload("a reload is under way; send SIGHUP again once it is done")
        case .stopping: return .ignoreReload("warren is stopping")
        }
    }

    /// The file is valid: start its runtime beside the current one.
    public mutating func configLoaded() -> Action {
        guard case .running = phase else { return .ignoreReload("warren is stopping") }
        lastGeneration += 1
        phase = .reloading(candidate: lastGeneration)
        alive.insert(lastGeneration)
        return .start(lastGeneration, paused: paused)
    }

    public mutating func configInvalid() -> Action {
        guard case .running = phase else { return .ignoreReload("warren is stopping") }
        return .keepCurrent
    }

    /// `generation` has every consumer consuming (it may say so again after a reconnect).
    public mutating func runtimeReady(_ generation: Int) -> Action? {
        guard case .reloading(let candidate) = phase, candidate == generation else { return nil }
        let old = current
        current = generation
        draining.insert(old)
        phase = .running
        return .promote(generation, retired: old)
    }

    public mutating func candidateTimedOut(_ generation: Int) -> Action? {
        guard case .reloading(let candidate) = phase, candidate == generation else { return nil }
        phase = .running
        draining.insert(generation)
        return .abandon(generation)
    }

    public mutating func runtimeEnded(_ generation: Int, code: Int32) -> [Action] {
        guard alive.remove(generation) != nil else { return [] }
        var actions: [Action] = []
        if case .reloading(let candidate) = phase, candidate == generation {
            phase = .running
            actions.append(.reloadFailed(generation, code: code))
        } else if generation == current {
            exitCode = code
            if phase != .stopping {
                // The current runtime is done: the process stops, after the others drained.
                phase = .stopping
                let others = alive.subtracting(draining)
                draining.formUnion(others)
                if !alive.isEmpty { actions.append(.armBackstop(quit: false)) }
                if !others.isEmpty { actions.append(.stop(others.sorted())) }
            }
        } else {
            actions.append(.replacedEnded(generation, code: code))
        }
        if phase == .stopping && alive.isEmpty { actions.append(.exit(exitCode)) }
        return actions
    }
}

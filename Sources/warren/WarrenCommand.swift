import ArgumentParser
import Dispatch
import Glibc
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals
import Warren
import WarrenConfig

@main
struct WarrenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren",
        abstract: "Consume RabbitMQ queues, run a command for every message, and stop without losing one.",
        usage: """
            warren [--config <file>]
              warren --check-config <file>
              warren dlq list|show|replay|purge [--config <file>] [--consumer <name>] [--limit <n>] [--id <message-id>]
            """,
        discussion: """
            Exit codes: 0 clean stop, 78 configuration error, 1 anything else fatal.
            Signals: SIGTERM/SIGINT drain (again: skip the grace period), SIGQUIT stop at once,
            SIGHUP reload the config (the running consumers go on until the new ones consume),
            SIGUSR1 log the running handlers, SIGTSTP pause (stop consuming, running handlers
            finish, stay connected, /readyz 503 "paused"; Ctrl-Z too), SIGCONT resume.
            Dead letters: see warren dlq --help.
            """,
        subcommands: [DeadLetterCommand.self])

    @OptionGroup var file: ConfigFileOption
    var config: String { file.config }

    @Option(name: .customLong("check-config"), help: "Validate FILE, print the resolved config (password masked) and exit 0 or 78.")
    var checkConfig: String?

    func run() async throws {
        // From the first moment: SIGTSTP's default would stop warren with its
        // messages unacked and its heartbeats unanswered (see `PauseSignal`).
        signal(SIGTSTP, SIG_IGN)
        let environment = Self.environment()
        if let checkConfig {
            do {
                let loaded = try ConfigLoader.load(path: checkConfig, environment: environment)
                print(ConfigDescription.render(loaded), terminator: "")
                throw ExitCode(0)
            } catch let errors as ConfigErrors {
                writeToStderr(errors.description + "\n")
                throw ExitCode(ConfigLoader.exitCode)
            }
        }

        let loaded: Config
        do {
            loaded = try ConfigLoader.load(path: config, environment: environment)
        } catch {
            writeToStderr(error.description + "\n")
            throw ExitCode(ConfigLoader.exitCode)
        }

        let journal = environment["JOURNAL_STREAM"] != nil
        let level = Logger.Level(rawValue: loaded.log.level.rawValue) ?? .info
        let format: StderrLogHandler.Format = loaded.log.format == .json ? .json : .text
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level, format: format, journal: journal) }
        let logger = Logger(label: "warren")

        let code = await Self.serve(loaded, path: config, environment: environment, logger: logger)
        throw ExitCode(code)
    }

    /// Runs warren until it stops; signals become lifecycle events.
    ///
    /// What each signal does to which runtime, and when a reload's new
    /// consumers take over, is decided by `DaemonControl`; this function
    /// carries its actions out. A reload (SIGHUP) with a valid file starts a
    /// new runtime beside the current one; once every new consumer consumes,
    /// the old runtime retires and drains exactly as on SIGTERM: what had not
    /// started goes back to the queue (and to the new consumers), what was
    /// running finishes and is acked. New consumers that cannot start are
    /// dropped, and the old ones go on.
    static func serve(_ config: Config, path: String, environment: [String: String], logger: Logger) async -> Int32 {
        let notifier = SystemdNotifier.fromEnvironment(logger: logger, shutdown: config.warren.shutdown)
        let registry = config.metrics.map { _ in MetricsServer.bootstrap() }
        let supervisor: ProcessSupervisor?
        do {
            if !config.warren.consumers.isEmpty { ProcessSupervisor.prepareProcess() }
            supervisor = config.warren.consumers.isEmpty ? nil : try ProcessSupervisor()
        } catch {
            logger.critical("\(error.description)")
            return 1
        }
        enum Event: Sendable {
            case signal(UnixSignal)
            /// SIGTSTP, which `UnixSignal` does not name.
            case pauseSignal
            case ready(generation: Int)
            /// A runtime drains or has stopped: if it was replaced, its
            /// successor removes the bindings only its config made.
            case stoppedConsuming(generation: Int)
            case ended(generation: Int, code: Int32)
            case candidateTimedOut(generation: Int)
            /// `resumeSettle` after a SIGCONT; `token`: no SIGTSTP or SIGCONT came since.
            case resumeDue(token: Int)
            /// The metrics server finished its graceful shutdown (or took too long).
            case metricsStopped
        }
        let (events, sink) = AsyncStream<Event>.makeStream()
        func makeRuntime(_ settings: WarrenSettings, generation: Int, replacing previous: WarrenSettings? = nil,
                         paused: Bool = false) -> WarrenRuntime {
            WarrenRuntime(settings: settings, logger: logger, supervisor: supervisor, failFast: generation > 1,
                          replacing: previous, paused: paused) { state in
                switch state {
                case .running: sink.yield(.ready(generation: generation))
                case .draining, .closing, .stopped: sink.yield(.stoppedConsuming(generation: generation))
                default: break
                }
                if let notifier, let runtime = current.speaking(for: generation) {
                    notifier.lifecycleChanged(state, inFlight: runtime.inFlight)
                }
            }
        }
        let current = CurrentRuntime()
        var control = DaemonControl()
        var runtimes: [Int: WarrenRuntime] = [1: makeRuntime(config.warren, generation: 1)]
        current.set(runtimes[1]!, generation: 1)
        var shutdown = [1: config.warren.shutdown]
        /// A replaced generation -> the one that replaced it, until it drains.
        var successor: [Int: Int] = [:]
        var loaded: Config? = nil
        /// Counts SIGTSTP and SIGCONT: a delayed resume acts only if none came after its own.
        var jobControl = 0
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sighup, .sigusr1, .sigcont)
        let pauses = PauseSignal.start { sink.yield(.pauseSignal) }
        defer { pauses.cancel() }
        logger.info("starting", metadata: ["config": "\(config.file)", "consumers": "\(config.warren.consumers.count)"])
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await signal in signals { sink.yield(.signal(signal)) }
            }
            func start(_ generation: Int) {
                let runtime = runtimes[generation]!
                group.addTask { sink.yield(.ended(generation: generation, code: await runtime.runUntilStopped())) }
            }
            /// Once a replaced runtime drains (none of its connections binds
            /// again), its successor removes the bindings only its config made.
            func unbindRetired(replacedBy generation: Int) {
                guard let newer = successor.removeValue(forKey: generation) else { return }
                runtimes[newer]?.removeRetiredBindings()
            }
            start(1)
            // Run as a service so that stopping is a graceful shutdown: a
            // cancelled Hummingbird server logs an error on every clean stop.
            var metricsService: ServiceGroup? = nil
            var metricsRunning = false
            if let settings = config.metrics, let registry {
                let app = MetricsServer.application(settings: settings, registry: registry,
                                                    runtime: { current.get() }, logger: logger)
                let service = ServiceGroup(configuration: .init(services: [app], logger: MetricsServer.quiet(logger)))
                metricsService = service
                metricsRunning = true
                group.addTask {
                    do {
                        try await service.run()
                    } catch is CancellationError {
                    } catch {
                        logger.error("the metrics server stopped; warren goes on without it",
                                     metadata: ["listen": "\(settings.host):\(settings.port)", "error": "\(error)"])
                    }
                    sink.yield(.metricsStopped)
                }
            }
            if let notifier {
                group.addTask { await notifier.refreshStatus { current.speaking() } }
            }
            if let notifier, let interval = SystemdNotifier.watchdogInterval() {
                group.addTask { await notifier.pingWatchdog(every: interval) { current.get() } }
            }
            var code: Int32? = nil
            func perform(_ action: DaemonControl.Action) async {
                switch action {
                case .armBackstop(let quit):
                    // The longest bound of the runtimes still running: a retired
                    // one keeps the grace period of its own config.
                    let bounds = control.alive.compactMap { shutdown[$0] }
                    let longest = bounds.map { (quit ? .zero : $0.gracePeriod) + $0.killAfter }.max() ?? .zero
                    Backstop.arm(after: longest + .seconds(15), logger: logger)
                case .stop(let generations):
                    for generation in generations { runtimes[generation]?.stop() }
                case .quit(let generations):
                    for generation in generations { runtimes[generation]?.quit() }
                case .pause(let generations):
                    for generation in generations { runtimes[generation]?.pause() }
                    notifier?.paused(true, speaking: current.speaking())
                case .resume(let generations):
                    for generation in generations { runtimes[generation]?.resume() }
                    notifier?.paused(false, speaking: current.speaking())
                case .loadConfig:
                    current.setReloading(true)
                    notifier?.reloading()
                    do throws(ConfigErrors) {
                        loaded = try ConfigLoader.load(path: path, environment: environment)
                        for next in [control.configLoaded()] { await perform(next) }
                    } catch {
                        logger.error("SIGHUP: the config file is not valid; keeping the running config", metadata: ["config": "\(path)"])
                        for problem in error.problems { logger.error("\(problem.description)") }
                        await perform(control.configInvalid())
                    }
                case .start(let generation, let paused):
                    guard let fresh = loaded else { return }
                    loaded = nil
                    runtimes[generation] = makeRuntime(fresh.warren, generation: generation, replacing: current.get().settings,
                                                       paused: paused)
                    if paused { logger.notice("reloading while paused: the new consumers start paused too; SIGCONT resumes") }
                    shutdown[generation] = fresh.warren.shutdown
                    logger.notice("reloading: new consumers start; the old ones go on until they consume",
                                  metadata: ["config": "\(path)", "consumers": "\(fresh.warren.consumers.count)"])
                    if fresh.metrics != config.metrics || fresh.log != config.log {
                        logger.warning("[metrics] and [log] changes take effect at the next restart")
                    }
                    start(generation)
                    group.addTask {
                        try? await Task.sleep(for: Self.reloadTimeout)
                        sink.yield(.candidateTimedOut(generation: generation))
                    }
                case .ignoreReload(let reason):
                    logger.warning("SIGHUP: not reloading: \(reason)")
                case .keepCurrent:
                    current.setReloading(false)
                    notifier?.lifecycleChanged(.running, inFlight: current.get().inFlight)
                case .promote(let generation, let retired):
                    guard let runtime = runtimes[generation] else { return }
                    current.set(runtime, generation: generation)
                    logger.notice("reloaded: the new consumers consume; the old ones drain")
                    notifier?.lifecycleChanged(.running, inFlight: current.get().inFlight)
                    runtimes[retired]?.retire()
                    runtime.takeOver()
                    successor[retired] = generation
                case .abandon(let generation):
                    logger.error("reload failed: the new consumers did not all consume within \(Self.reloadTimeout); they stop, and the running ones go on")
                    runtimes[generation]?.stop()
                    current.setReloading(false)
                    notifier?.lifecycleChanged(.running, inFlight: current.get().inFlight)
                case .reloadFailed(let generation, let exitCode):
                    runtimes[generation] = nil
                    logger.error("reload failed: the new consumers could not start (see above); the running ones go on",
                                 metadata: ["exit_code": "\(exitCode)"])
                    current.setReloading(false)
                    notifier?.lifecycleChanged(.running, inFlight: current.get().inFlight)
                case .replacedEnded(let generation, let exitCode):
                    runtimes[generation] = nil
                    logger.notice("the replaced consumers have drained", metadata: ["exit_code": "\(exitCode)"])
                    unbindRetired(replacedBy: generation)
                case .exit(let exitCode):
                    code = exitCode
                    if let service = metricsService, metricsRunning {
                        // A scrape in progress gets a second to finish.
                        await service.triggerGracefulShutdown()
                        group.addTask {
                            try? await Task.sleep(for: .seconds(1))
                            sink.yield(.metricsStopped)
                        }
                    } else {
                        group.cancelAll()
                        sink.finish()
                    }
                }
            }
            for await event in events {
                var actions: [DaemonControl.Action] = []
                switch event {
                case .signal(.sigterm), .signal(.sigint):
                    logger.notice("received a stop signal", metadata: ["draining": "\(control.phase == .stopping)"])
                    // A stop ends a reload under way: the drain is what systemd must see now.
                    current.setReloading(false)
                    actions = control.stopSignal()
                case .signal(.sigquit):
                    logger.notice("received SIGQUIT: stopping at once")
                    current.setReloading(false)
                    actions = control.quitSignal()
                case .signal(.sigusr1):
                    for runtime in runtimes.values { runtime.logInFlight() }
                case .signal(.sighup):
                    actions = [control.reloadSignal()]
                case .pauseSignal:
                    jobControl += 1
                    logger.notice("received SIGTSTP: pausing", metadata: ["paused_already": "\(control.paused)",
                                                                          "stopping": "\(control.phase == .stopping)"])
                    actions = control.pauseSignal()
                case .signal(.sigcont):
                    // systemd sends SIGCONT right after SIGTERM on every stop, and
                    // the two come through different sources, in either order:
                    // resuming a moment later lets a stop sent with it win.
                    guard control.paused, control.phase != .stopping else {
                        logger.debug("received SIGCONT: not paused, nothing to resume")
                        break
                    }
                    jobControl += 1
                    let token = jobControl
                    group.addTask {
                        try? await Task.sleep(for: Self.resumeSettle)
                        sink.yield(.resumeDue(token: token))
                    }
                case .resumeDue(let token):
                    guard token == jobControl, control.paused, control.phase != .stopping else { break }
                    logger.notice("received SIGCONT: resuming")
                    actions = control.resumeSignal()
                case .signal:
                    break
                case .ready(let generation):
                    actions = control.runtimeReady(generation).map { [$0] } ?? []
                case .stoppedConsuming(let generation):
                    unbindRetired(replacedBy: generation)
                case .candidateTimedOut(let generation):
                    actions = control.candidateTimedOut(generation).map { [$0] } ?? []
                case .ended(let generation, let result):
                    actions = control.runtimeEnded(generation, code: result)
                case .metricsStopped:
                    metricsRunning = false
                    if code != nil {
                        group.cancelAll()
                        sink.finish()
                    }
                }
                for action in actions { await perform(action) }
            }
            await supervisor?.shutdown()
            let exitCode = code ?? 1
            logger.info("stopped", metadata: ["exit_code": "\(exitCode)"])
            return exitCode
        }
    }

    /// How long a reload's new consumers have to consume before they are dropped.
    static let reloadTimeout: Duration = .seconds(30)
    /// How long SIGCONT waits before resuming (see `resumeDue`).
    static let resumeSettle: Duration = .milliseconds(200)

    static func environment() -> [String: String] {
        var result: [String: String] = [:]
        for entry in ProcessEnvironment.entries() {
            if let equals = entry.firstIndex(of: "=") {
                result[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
            }
        }
        return result
    }
}

/// `--config FILE`, shared by the daemon and `warren dlq`: the root
/// command parses it wherever it stands (`warren dlq list --config FILE`
/// too), and a subcommand that includes this group gets that value.
struct ConfigFileOption: ParsableArguments {
    @Option(name: .long, help: "The INI config file.")
    var config: String = "/etc/warren/warren.ini"
}

/// The runtime that speaks for the process now (readiness, the systemd
/// watchdog and status); a reload replaces it once its consumers consume.
final class CurrentRuntime: Sendable {
    /// Guards the runtime and its generation, read by the metrics server,
    /// the watchdog pinger and every runtime's observer.
    private let state = Mutex<(runtime: WarrenRuntime?, generation: Int, reloading: Bool)>((nil, 0, false))
    func get() -> WarrenRuntime { state.withLock { $0.runtime! } }
    /// The runtime whose states reach systemd, if it is `generation`'s.
    /// While a reload is under way, none: the old one's would end the
    /// reload (`READY=1`) before the new one consumes.
    func speaking(for generation: Int? = nil) -> WarrenRuntime? {
        state.withLock { state in
            guard !state.reloading, generation == nil || state.generation == generation else { return nil }
            return state.runtime
        }
    }
    func set(_ runtime: WarrenRuntime, generation: Int) { state.withLock { $0 = (runtime, generation, false) } }
    func setReloading(_ reloading: Bool) { state.withLock { $0.reloading = reloading } }
}

/// The last line of defence for guarantee 4 (bounded stop): if warren has
/// not exited well after grace period + kill_after (an in-process handler
/// that ignores cancellation, a broker that stopped answering), exit anyway.
/// Unacked messages are then requeued by the broker when the socket closes.
/// Runs on a Dispatch queue, not the cooperative pool, so a starved pool
/// cannot stop it.
enum Backstop {
    static func arm(after delay: Duration, logger: Logger) {
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(delay.milliseconds))) {
            logger.critical("stop did not finish within its bound; exiting now (the broker requeues unacked messages)")
            _exit(1)
        }
    }
}

/// SIGTSTP, which swift-service-lifecycle's `UnixSignal` does not name. Its
/// default action stops the process (the terminal's Ctrl-Z; a kill -TSTP),
/// which for a daemon holding unacked messages and a heartbeat would be
/// the worst answer: it is ignored first, then served by a Dispatch signal
/// source (which sees it all the same), so it never stops warren. Handlers
/// start with every signal at its default (see `ProcessSupervisor`).
enum PauseSignal {
    static func start(_ received: @escaping @Sendable () -> Void) -> any DispatchSourceSignal {
        signal(SIGTSTP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGTSTP, queue: DispatchQueue(label: "warren.sigtstp"))
        source.setEventHandler(handler: received)
        source.resume()
        return source
    }
}

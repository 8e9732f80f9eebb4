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
        discussion: """
            Exit codes: 0 clean stop, 78 configuration error, 1 anything else fatal.
            Signals: SIGTERM/SIGINT drain (again: skip the grace period), SIGQUIT stop at once,
            SIGUSR1 log the running handlers.
            """)

    @Option(name: .long, help: "The INI config file.")
    var config: String = "/etc/warren/warren.ini"

    @Option(name: .customLong("check-config"), help: "Validate FILE, print the resolved config (password masked) and exit 0 or 78.")
    var checkConfig: String?

    func run() async throws {
        let environment = Self.environment()
        if let checkConfig {
            do {
                let loaded = try ConfigLoader.load(path: checkConfig, environment: environment)
                print(ConfigDescription.render(loaded), terminator: "")
                throw ExitCode(0)
            } catch let errors as ConfigErrors {
                Self.printToStderr(errors.description + "\n")
                throw ExitCode(ConfigLoader.exitCode)
            }
        }

        let loaded: Config
        do {
            loaded = try ConfigLoader.load(path: config, environment: environment)
        } catch {
            Self.printToStderr(error.description + "\n")
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
    /// A reload (SIGHUP) with a valid file starts a new runtime with the new
    /// config and retires the old one, which drains exactly as on SIGTERM:
    /// what had not started goes back to the queue (and to the new
    /// consumers), what was running finishes and is acked. The process
    /// exits once the current runtime has stopped and every retired one has
    /// drained.
    static func serve(_ config: Config, path: String, environment: [String: String], logger: Logger) async -> Int32 {
        let notifier = SystemdNotifier.fromEnvironment(logger: logger, shutdown: config.warren.shutdown)
        let registry = config.metrics.map { _ in MetricsServer.bootstrap() }
        let supervisor = config.warren.consumers.isEmpty ? nil : ProcessSupervisor()
        var generations = 0
        func makeRuntime(_ settings: WarrenSettings) -> (WarrenRuntime, Int) {
            generations += 1
            let generation = generations
            let runtime = WarrenRuntime(settings: settings, logger: logger, supervisor: supervisor) { state in
                notifier?.lifecycleChanged(state)
            }
            return (runtime, generation)
        }
        enum Event: Sendable {
            case signal(UnixSignal)
            case ended(generation: Int, code: Int32)
            /// The metrics server finished its graceful shutdown (or took too long).
            case metricsStopped
        }
        let (events, sink) = AsyncStream<Event>.makeStream()
        var (runtime, generation) = makeRuntime(config.warren)
        let current = CurrentRuntime(runtime)
        var active: [Int: WarrenRuntime] = [generation: runtime]
        var shutdown = config.warren.shutdown
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sighup, .sigusr1)
        logger.info("starting", metadata: ["config": "\(config.file)", "consumers": "\(config.warren.consumers.count)"])
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await signal in signals { sink.yield(.signal(signal)) }
            }
            func start(_ runtime: WarrenRuntime, _ generation: Int) {
                group.addTask { sink.yield(.ended(generation: generation, code: await runtime.run())) }
            }
            start(runtime, generation)
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
            if let notifier, let interval = SystemdNotifier.watchdogInterval() {
                group.addTask { await notifier.pingWatchdog(every: interval) { current.get() } }
            }
            var stopping = false
            var code: Int32 = 1
            for await event in events {
                switch event {
                case .signal(.sigterm), .signal(.sigint):
                    logger.notice("received a stop signal", metadata: ["draining": "\(stopping)"])
                    if !stopping { Backstop.arm(after: shutdown.gracePeriod + shutdown.killAfter + .seconds(15), logger: logger) }
                    stopping = true
                    for runtime in active.values { runtime.stop() }
                case .signal(.sigquit):
                    logger.notice("received SIGQUIT: stopping at once")
                    if !stopping { Backstop.arm(after: shutdown.killAfter + .seconds(15), logger: logger) }
                    stopping = true
                    for runtime in active.values { runtime.quit() }
                case .signal(.sigusr1):
                    for runtime in active.values { runtime.logInFlight() }
                case .signal(.sighup):
                    guard !stopping else {
                        logger.warning("SIGHUP while stopping: not reloading")
                        continue
                    }
                    notifier?.reloading()
                    do throws(ConfigErrors) {
                        let fresh = try ConfigLoader.load(path: path, environment: environment)
                        let old = runtime
                        (runtime, generation) = makeRuntime(fresh.warren)
                        shutdown = fresh.warren.shutdown
                        active[generation] = runtime
                        current.set(runtime)
                        logger.notice("reloading: new consumers start, the old ones drain",
                                      metadata: ["config": "\(path)", "consumers": "\(fresh.warren.consumers.count)"])
                        if fresh.metrics != config.metrics || fresh.log != config.log {
                            logger.warning("[metrics] and [log] changes take effect at the next restart")
                        }
                        start(runtime, generation)
                        old.retire()
                    } catch {
                        logger.error("SIGHUP: the config file is not valid; keeping the running config", metadata: ["config": "\(path)"])
                        for problem in error.problems { logger.error("\(problem.description)") }
                        notifier?.lifecycleChanged(.running(inFlight: 0))
                    }
                case .signal:
                    break
                case .ended(let ended, let result):
                    active[ended] = nil
                    if ended == generation {
                        code = result
                        // The current runtime is done: the process stops, after any retired one drained.
                        if !stopping {
                            stopping = true
                            for runtime in active.values { runtime.stop() }
                        }
                    } else {
                        logger.notice("the replaced consumers have drained", metadata: ["exit_code": "\(result)"])
                    }
                    if active.isEmpty && stopping {
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
                case .metricsStopped:
                    metricsRunning = false
                    if active.isEmpty && stopping {
                        group.cancelAll()
                        sink.finish()
                    }
                }
            }
            logger.info("stopped", metadata: ["exit_code": "\(code)"])
            return code
        }
    }

    static func environment() -> [String: String] {
        var result: [String: String] = [:]
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            index += 1
        }
        return result
    }

    static func printToStderr(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 { break }
            offset += written
        }
    }
}

/// The runtime that speaks for the process now; a reload replaces it.
final class CurrentRuntime: Sendable {
    /// Guards the reference, read by the metrics server and the watchdog pinger.
    private let runtime: Mutex<WarrenRuntime>
    init(_ runtime: WarrenRuntime) { self.runtime = Mutex(runtime) }
    func get() -> WarrenRuntime { runtime.withLock { $0 } }
    func set(_ new: WarrenRuntime) { runtime.withLock { $0 = new } }
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

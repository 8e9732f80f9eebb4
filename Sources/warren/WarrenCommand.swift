import ArgumentParser
import Dispatch
import Glibc
import Logging
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

        let code = await Self.serve(loaded, logger: logger)
        throw ExitCode(code)
    }

    /// Runs warren until it stops; signals become lifecycle events.
    static func serve(_ config: Config, logger: Logger) async -> Int32 {
        let notifier = SystemdNotifier.fromEnvironment(logger: logger, shutdown: config.warren.shutdown)
        let registry = config.metrics.map { _ in MetricsServer.bootstrap() }
        let runtime = WarrenRuntime(settings: config.warren, logger: logger) { state in
            notifier?.lifecycleChanged(state)
        }
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sighup, .sigusr1)
        let shutdown = config.warren.shutdown
        logger.info("starting", metadata: ["config": "\(config.file)", "consumers": "\(config.warren.consumers.count)"])
        return await withTaskGroup(of: Int32?.self) { group in
            group.addTask {
                var stopping = false
                for await signal in signals {
                    switch signal {
                    case .sigterm, .sigint:
                        logger.notice("received \(signal)", metadata: ["draining": "\(stopping)"])
                        if !stopping { Backstop.arm(after: shutdown.gracePeriod + shutdown.killAfter + .seconds(15), logger: logger) }
                        stopping = true
                        runtime.stop()
                    case .sigquit:
                        logger.notice("received SIGQUIT: stopping at once")
                        if !stopping { Backstop.arm(after: shutdown.killAfter + .seconds(15), logger: logger) }
                        stopping = true
                        runtime.quit()
                    case .sigusr1:
                        runtime.logInFlight()
                    case .sighup:
                        logger.warning("SIGHUP: reloading the config is not supported yet; restart warren to apply changes")
                    default:
                        break
                    }
                }
                return nil
            }
            group.addTask { await runtime.run() }
            if let settings = config.metrics, let registry {
                let app = MetricsServer.application(settings: settings, registry: registry, runtime: runtime, logger: logger)
                group.addTask {
                    do {
                        try await app.run()
                    } catch is CancellationError {
                    } catch {
                        logger.error("the metrics server stopped; warren goes on without it",
                                     metadata: ["listen": "\(settings.host):\(settings.port)", "error": "\(error)"])
                    }
                    return nil
                }
            }
            if let notifier, let interval = SystemdNotifier.watchdogInterval() {
                group.addTask {
                    await notifier.pingWatchdog(every: interval, runtime: runtime)
                    return nil
                }
            }
            var code: Int32 = 1
            while let result = await group.next() {
                if let result {
                    code = result
                    group.cancelAll()
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

/// The last line of defence for guarantee 4 (bounded stop): if warren has
/// not exited well after grace period + kill_after (an in-process handler
/// that ignores cancellation, a broker that stopped answering), exit anyway.
/// Unacked messages are then requeued by the broker when the socket closes.
/// Runs on a Dispatch queue, not the cooperative pool, so a starved pool
/// cannot stop it.
enum Backstop {
    static func arm(after delay: Duration, logger: Logger) {
        let nanoseconds = delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) {
            logger.critical("stop did not finish within its bound; exiting now (the broker requeues unacked messages)")
            _exit(1)
        }
    }
}

import AMQP
public import Logging

/// Runs a command per message: the contract in README ("Handler commands").
///
/// The body goes to stdin (or, with `input = envelope`, the whole message
/// as one JSON line), the message is described in `WARREN_*` variables, the command runs in its own process group without a shell,
/// and its exit code picks the outcome. stdout and stderr are logged line by
/// line with the message id, except stdout that is published (a reply, an
/// output message): that is kept, up to `max_body`, and not logged.
public struct ExecHandler: MessageHandler {
    public let argv: [String]
    public let killAfter: Duration
    public let exitAck: Set<Int32>
    public let exitRetry: Set<Int32>
    public let exitDeadLetter: Set<Int32>
    public let input: HandlerInput
    private let supervisor: ProcessSupervisor
    private let logger: Logger

    public init(argv: [String], killAfter: Duration, exitAck: Set<Int32> = [0], exitRetry: Set<Int32> = [75],
                exitDeadLetter: Set<Int32> = [65], input: HandlerInput = .body, supervisor: ProcessSupervisor,
                logger: Logger) {
        self.argv = argv
        self.killAfter = killAfter
        self.exitAck = exitAck
        self.exitRetry = exitRetry
        self.exitDeadLetter = exitDeadLetter
        self.input = input
        self.supervisor = supervisor
        self.logger = logger
    }

    public func handle(_ message: Message) async -> Outcome {
        await run(message, capture: nil).outcome
    }

    /// stdout is the output; more than `message.outputLimit` bytes of it is
    /// a failed attempt, never a reply cut short.
    public func handleWithOutput(_ message: Message) async -> HandlerResult {
        let limit = message.outputLimit ?? Int.max
        let (outcome, termination) = await run(message, capture: limit)
        guard case .ack = outcome, let termination else { return HandlerResult(outcome: outcome) }
        if termination.outputOverLimit {
            return HandlerResult(outcome: .retry(Failure(
                reason: "the handler wrote more than max_body (\(limit) bytes) on stdout: no reply or output message is sent for it",
                lastErrorLine: termination.lastErrorLine)))
        }
        if termination.outputIncomplete {
            return HandlerResult(outcome: .retry(Failure(
                reason: "the handler's stdout was still open after its process group ended (a process that left the group, e.g. with setsid, holds it): the output may be cut short, so no reply or output message is sent; close stdout in background processes (>/dev/null)",
                lastErrorLine: termination.lastErrorLine)))
        }
        return HandlerResult(outcome: outcome, output: MessageBody(termination.output ?? []))
    }

    private func run(_ message: Message, capture: Int?) async -> (outcome: Outcome, termination: ProcessSupervisor.Termination?) {
        var log = logger
        log[metadataKey: "queue"] = "\(message.queue)"
        log[metadataKey: "message_id"] = "\(message.logID)"
        log[metadataKey: "attempt"] = "\(message.attempt)"
        let lineLogger = log
        var onStart: (@Sendable (Int32) -> Void)? = nil
        if let watch = message.processWatch {
            onStart = { pid in watch.started(pid) }
        }
        let environment = HandlerEnvironment.forMessage(message)
        if !environment.skippedHeaders.isEmpty {
            log.notice("headers left out of the handler's environment: over the budget of \(HandlerEnvironment.headerVariableLimit) bytes a variable, \(HandlerEnvironment.headerBudget) in all; the envelope (input = envelope) still has them",
                       metadata: ["headers": "\(Self.names(environment.skippedHeaders))"])
        }
        let stdin = switch input {
        case .body: message.payload
        case .envelope: MessageBody(Envelope(message: message, id: DeliveryID.next()).jsonLine())
        }
        do {
            let termination = try await supervisor.run(
                argv, environment: environment.variables, input: stdin, killAfter: killAfter,
                captureStdout: capture, onStart: onStart
            ) { stream, line in
                if stream == .stderr {
                    lineLogger.notice("\(line)", metadata: ["stream": "stderr"])
                } else {
                    lineLogger.info("\(line)", metadata: ["stream": "stdout"])
                }
            }
            return (outcome(of: termination), termination)
        } catch {
            // warren's own shortage is reported once by the consumer, not per message.
            if error.resourceShortage {
                return (.retry(Failure(reason: error.description, resourceShortage: true)), nil)
            }
            log.error("handler did not start: \(error.description)")
            return (.retry(Failure(reason: error.description)), nil)
        }
    }

    /// The first ten names, then how many more: one log line, however many headers.
    static func names(_ keys: [String]) -> String {
        let shown = keys.prefix(10).joined(separator: ", ")
        return keys.count > 10 ? "\(shown) and \(keys.count - 10) more" : shown
    }

    /// Exit code -> outcome: the configured sets, anything else retries.
    public func outcome(of termination: ProcessSupervisor.Termination) -> Outcome {
        switch termination.status {
        case .exited(let code) where !termination.terminated:
            if exitAck.contains(code) { return .ack }
            let failure = Failure(reason: "exit code \(code)", exitCode: code, lastErrorLine: termination.lastErrorLine)
            if exitDeadLetter.contains(code) { return .deadLetter(failure) }
            return .retry(failure)
        case .exited(let code):
            return .retry(Failure(reason: "terminated by the watchdog (exit code \(code))", exitCode: code,
                                  timedOut: true, lastErrorLine: termination.lastErrorLine))
        case .signaled(let signal):
            return .retry(Failure(reason: termination.terminated ? "terminated by the watchdog (signal \(signal))" : "killed by signal \(signal)",
                                  signal: signal, timedOut: termination.terminated, lastErrorLine: termination.lastErrorLine))
        }
    }
}

import AMQP
import Glibc
import ArgumentParser
import Logging
import Warren
import WarrenConfig

/// `warren dlq list|show|replay|purge`: the operator's view of a consumer's
/// dead-letter queue. The queue is read with `basic.get` and every message
/// given back, never consumed (see `DeadLetterQueue`), so reading
/// is safe beside a running warren, and a command killed midway loses
/// nothing.
struct DeadLetterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "List, show, replay or purge a consumer's dead letters.",
        discussion: """
            The consumer's dead_letter_queue is found in --config and reached with the daemon's broker settings (password_file included). It is read message by message with basic.get and every message given back, so reading never loses a dead letter, even when killed, and a running warren is not disturbed. A classic queue keeps its order; a quorum queue may not (see README).

            --id selects messages by message id, as it is or as the table prints it (escapes included).

            Exit codes: 0 done, 1 the broker failed or refused a message, 64 a usage error (purge without --yes, an unknown --consumer), 78 a bad config file.
            """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self])

    struct Options: ParsableArguments {
        @OptionGroup var file: ConfigFileOption
        var config: String { file.config }

        @Option(name: .long, help: "The [consumer.NAME] whose dead_letter_queue to read (needed when the file has several).")
        var consumer: String?

        @Option(name: .long, help: "At most this many messages (list: 100, show: 1, replay and purge: all).")
        var limit: Int?

        @Option(name: .long, help: "Only messages with this message id.")
        var id: String?

        func validate() throws {
            if let limit, limit < 1 { throw ValidationError("--limit must be 1 or more") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per dead letter: position, message id, reason, exit code or signal, attempts, when, where from.",
            discussion: "--json prints one JSON object per line instead of the table (nothing else on stdout).")
        @OptionGroup var options: Options
        @Flag(name: .long, help: "One JSON object per line.") var json = false

        func run() async throws {
            try await DeadLetterCommand.open(options) { queue, _, _ in
                let reading = try await queue.read(limit: options.limit ?? 100, id: options.id, keepingBody: 0)
                if json {
                    writeToStdout(reading.letters.map { DeadLetterReport.jsonLine($0) }.joined())
                    return
                }
                if reading.letters.isEmpty {
                    writeToStdout(options.id == nil ? "the dead-letter queue '\(DeadLetterReport.visible(queue.name))' is empty\n"
                                  : "no message with id '\(DeadLetterReport.visible(options.id!))' in '\(DeadLetterReport.visible(queue.name))'\n")
                    return
                }
                writeToStdout(DeadLetterReport.table(reading.letters))
                if let note = DeadLetterReport.cutIdsNote(reading.letters) { writeToStdout(note) }
                if reading.unread > 0 && options.id == nil {
                    writeToStdout("(\(reading.unread) more not shown; raise --limit)\n")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One dead letter in full: reason, headers, last stderr line, body preview.",
            discussion: "The first message of the queue, or the one with --id. --json prints it as one JSON object, body included.")
        @OptionGroup var options: Options
        @Flag(name: .long, help: "One JSON object per message, with properties, headers and body.") var json = false

        func run() async throws {
            try await DeadLetterCommand.open(options) { queue, _, _ in
                // The table form prints a preview of the body; --json all of it.
                let reading = try await queue.read(limit: options.limit ?? 1, id: options.id,
                                                   keepingBody: json ? Int.max : DeadLetterReport.bodyPreview)
                guard !reading.letters.isEmpty else {
                    let what = options.id.map { "no message with id '\(DeadLetterReport.visible($0))'" } ?? "no message"
                    writeToStderr("warren dlq show: \(what) in '\(DeadLetterReport.visible(queue.name))'\n")
                    throw ExitCode(1)
                }
                let texts = reading.letters.map { json ? DeadLetterReport.jsonLine($0, full: true) : DeadLetterReport.detail($0) }
                writeToStdout(texts.joined(separator: json ? "" : "\n"))
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Republish dead letters to the queue each came from, attempts reset.",
            discussion: """
                Each copy goes to the queue the message was consumed from (x-warren-queue; the consumer's queue when the message does not say), through the default exchange, with the x-warren-* headers removed but for where it was first published (x-warren-exchange, x-warren-routing-key), so it starts again at attempt 1.

                The dead letter is acked only after the broker confirmed its copy. Killed at any point, a message is still dead-lettered, back in its queue once, or (killed between the confirm and the ack) both; never lost.

                Only to the queue of a consumer of the config whose dead_letter_queue this is (the header comes from the queue, so from anyone who may publish there). One line per message on stdout as it is done; a refused copy stays dead-lettered and makes the exit code 1. If stdout is closed (| head), replay stops after the message it reported, exit code 1.
                """)
        @OptionGroup var options: Options
        @Flag(name: .long, help: "One JSON object per message.") var json = false

        func run() async throws {
            try await DeadLetterCommand.open(options) { queue, consumer, loaded in
                let result: (replayed: Int, refused: Int)
                var outputClosed = false
                do throws(AMQPError) {
                    result = try await queue.replay(limit: options.limit ?? Int.max, id: options.id,
                                                    fallbackQueue: consumer.queue,
                                                    queues: Self.targets(of: consumer, in: loaded)) { letter, outcome in
                        outputClosed = !writeToStdout(json ? Self.json(letter, outcome) : Self.line(letter, outcome))
                        return !outputClosed
                    }
                } catch {
                    writeToStderr("warren dlq replay: \(error.reason); the messages not reported as replayed stay in the dead-letter queue\n")
                    throw ExitCode(1)
                }
                if outputClosed {
                    // `| head -1`: the reader left. The message just reported was
                    // acked, and its ack sent before the others were given back.
                    writeToStderr("warren dlq replay: stdout was closed; stopped after \(result.replayed) replayed, the rest stay in the dead-letter queue\n")
                    throw ExitCode(1)
                }
                let summary = "replayed \(result.replayed) from '\(DeadLetterReport.visible(queue.name))'"
                    + (result.refused > 0 ? "; \(result.refused) refused, left in the dead-letter queue" : "") + "\n"
                if json { writeToStderr(summary) } else { writeToStdout(summary) }
                if result.refused > 0 { throw ExitCode(1) }
            }
        }

        /// The queues a dead letter of `consumer`'s dead-letter queue may be
        /// replayed to: those of the config's consumers that dead-letter to
        /// it (the consumer itself, and any sharing its dead_letter_queue).
        /// Its messages can only have come from those legitimately; a header
        /// naming any other queue, even one another consumer of the file
        /// consumes, was written by someone else and is refused.
        static func targets(of consumer: ConsumerSettings, in config: Config) -> Set<String> {
            Set(config.warren.consumers.filter { $0.deadLetterQueue == consumer.deadLetterQueue }.map(\.queue))
        }

        static func line(_ letter: DeadLetter, _ outcome: DeadLetterQueue.ReplayOutcome) -> String {
            let id = letter.id.map(DeadLetterReport.visible) ?? "-"
            switch outcome {
            case .replayed(let queue):
                return "replayed \(id) -> \(DeadLetterReport.visible(queue))\n"
            case .refused(let queue, let reason):
                return "refused  \(id) -> \(DeadLetterReport.visible(queue)): \(DeadLetterReport.visible(reason)); left in the dead-letter queue\n"
            }
        }

        static func json(_ letter: DeadLetter, _ outcome: DeadLetterQueue.ReplayOutcome) -> String {
            switch outcome {
            case .replayed(let queue):
                return DeadLetterReport.outcomeLine(letter, outcome: "replayed", queue: queue, reason: nil)
            case .refused(let queue, let reason):
                return DeadLetterReport.outcomeLine(letter, outcome: "refused", queue: queue, reason: reason)
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Drop dead letters for good (needs --yes).",
            discussion: "Without --id or --limit, the whole queue (queue.purge); with them, the messages selected, the rest given back in order.")
        @OptionGroup var options: Options
        @Flag(name: .long, help: "Really drop them.") var yes = false

        func run() async throws {
            try await DeadLetterCommand.open(options) { queue, _, _ in
                let name = DeadLetterReport.visible(queue.name)
                guard yes else {
                    let count = try await queue.count()
                    let what = options.id == nil && options.limit == nil ? "all \(count) messages" : "the messages selected (of \(count))"
                    writeToStderr("warren dlq purge: this drops \(what) of '\(name)' for good; nothing was dropped. Add --yes to do it.\n")
                    throw ExitCode.validationFailure
                }
                if options.id == nil && options.limit == nil {
                    writeToStdout("purged \(try await queue.purgeAll()) messages from '\(name)'\n")
                } else {
                    let dropped = try await queue.purge(limit: options.limit ?? Int.max, id: options.id)
                    writeToStdout("purged \(dropped) messages from '\(name)'\n")
                }
            }
        }
    }

    /// Loads the config as the daemon does (78 if it is bad), picks the
    /// consumer (64 if it cannot), opens its dead-letter queue, runs `body`
    /// with the queue, the consumer and the config, and closes. A broker error exits 1 with its reason; no secret is in
    /// any of these messages (URLs are printed without their password).
    static func open(_ options: Options,
                     _ body: (DeadLetterQueue, ConsumerSettings, Config) async throws -> Void) async throws {
        let loaded: Config
        do {
            loaded = try ConfigLoader.load(path: options.config, environment: WarrenCommand.environment())
        } catch {
            writeToStderr(error.description + "\n")
            throw ExitCode(ConfigLoader.exitCode)
        }
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: .warning, format: .text, journal: false) }
        // A closed stdout (`| head -1`) must not kill the process between
        // an ack queued and sent (a replayed message would stay dead-lettered
        // too): a write then fails with EPIPE, and replay stops cleanly.
        signal(SIGPIPE, SIG_IGN)
        let consumers = loaded.warren.consumers
        let names = consumers.map(\.name).joined(separator: ", ")
        let consumer: ConsumerSettings
        if let wanted = options.consumer {
            guard let found = consumers.first(where: { $0.name == wanted }) else {
                writeToStderr("warren dlq: \(options.config) has no [consumer.\(wanted)]; its consumers: \(names.isEmpty ? "none" : names)\n")
                throw ExitCode.validationFailure
            }
            consumer = found
        } else {
            guard consumers.count == 1 else {
                writeToStderr("warren dlq: \(options.config) has \(consumers.count) consumers (\(names)); name one with --consumer\n")
                throw ExitCode.validationFailure
            }
            consumer = consumers[0]
        }
        let queue: DeadLetterQueue
        do {
            queue = try await DeadLetterQueue.open(consumer.deadLetterQueue, broker: loaded.warren.broker,
                                                   logger: Logger(label: "warren.dlq"))
        } catch {
            writeToStderr("warren dlq: \(error.reason)\n")
            throw ExitCode(1)
        }
        if consumer.queueType == .quorum, let version = queue.brokerVersion, version.countsEveryReturn {
            writeToStderr("warren dlq: warning: '\(DeadLetterReport.visible(queue.name))' is a quorum queue on RabbitMQ \(version): "
                          + "every message this command reads and gives back counts toward its delivery limit (RabbitMQ 4's default: 20), "
                          + "past which the broker drops it, unless the limit is disabled (x-delivery-limit = -1, or a policy; see README, \"Dead letters\")\n")
        }
        do {
            try await body(queue, consumer, loaded)
        } catch let error as AMQPError {
            await queue.close()
            writeToStderr("warren dlq: \(error.reason)\n")
            throw ExitCode(1)
        } catch {
            await queue.close()
            throw error
        }
        await queue.close()
    }
}

public import AMQP

/// One delivery, as a handler sees it.
public struct Message: Sendable {
    public var delivery: Delivery
    /// The `[consumer.NAME]` it came through.
    public var consumer: String
    public var queue: String
    /// 1 on the first delivery; counted through the retry path.
    public var attempt: Int
    /// Told the process id when a command handler starts one, for the
    /// SIGUSR1 report. (A task-local would do, but crashes statically
    /// linked binaries of Swift 6.3 in `swift_task_localValuePush`.)
    var processWatch: ProcessWatch? = nil
    /// Set when the handler's output is published (a reply, an output
    /// message): the most bytes of it the consumer sends (`max_body`).
    public internal(set) var outputLimit: Int? = nil
    /// When a worker took it (`monotonicNanoseconds()`): its outcome line's duration.
    var started: Int64? = nil
    /// Its span, when warren traces deliveries (see `DeliveryTracing`).
    var trace: DeliveryTrace? = nil

    public init(delivery: Delivery, consumer: String, queue: String, attempt: Int) {
        self.delivery = delivery
        self.consumer = consumer
        self.queue = queue
        self.attempt = attempt
    }

    /// A copy of the body; `payload` reads it in place.
    public var body: [UInt8] { delivery.body }

    /// The body in place, in the buffer it was read into.
    public var payload: MessageBody { delivery.payload }

    /// The message id as logs show it: `-` when it has none, and cut to
    /// `logIDLimit` bytes. (Its control characters are escaped by the log
    /// handler, like every value's: a publisher picks the id.)
    public var logID: String { Self.logID(of: delivery) }

    /// An AMQP short string holds 255 bytes; bytes that are not UTF-8 come
    /// out as escapes, so a decoded id can be longer.
    static let logIDLimit = 255

    static func logID(of delivery: Delivery) -> String {
        guard let id = delivery.properties.messageId else { return "-" }
        return id.capped(atBytes: logIDLimit)
    }

    /// The exchange and routing key the message was first published with.
    /// A retried message arrives from its delay queue; warren's copy keeps
    /// where it first came from in `x-warren-exchange` and
    /// `x-warren-routing-key`, used when they look like real names (AMQP
    /// short strings: at most 255 bytes), so a hostile header cannot pose as
    /// a megabyte-long exchange.
    public var origin: (exchange: String, routingKey: String) {
        let headers = delivery.properties.headers
        guard let exchange = headers?["x-warren-exchange"]?.stringValue, exchange.utf8.count <= 255,
              let routingKey = headers?["x-warren-routing-key"]?.stringValue, routingKey.utf8.count <= 255
        else { return (delivery.exchange, delivery.routingKey) }
        return (exchange, routingKey)
    }

    /// The attempt number a delivery carries: warren's own `x-warren-attempt`
    /// header if present and sane, otherwise the broker's `x-delivery-count`
    /// (quorum queues) plus one, otherwise 1.
    public static func attempt(of delivery: Delivery) -> Int {
        let headers = delivery.properties.headers
        if let value = headers?["x-warren-attempt"]?.integerValue, value >= 1, value < 1_000_000 {
            return Int(value)
        }
        if let value = headers?["x-delivery-count"]?.integerValue, value >= 0, value < 1_000_000 {
            return Int(value) + 1
        }
        return 1
    }
}

/// Why a handler did not succeed.
public struct Failure: Sendable, Equatable, CustomStringConvertible {
    /// Bytes of a reason carried to a retry or dead-letter copy's headers.
    public static let reasonLimit = 4096

    public var reason: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var timedOut: Bool
    public var lastErrorLine: String?
    /// warren lacked the descriptors, processes or memory to run the
    /// handler: no fault of the message's. It is requeued after a pause,
    /// its attempt not counted, and never dead-lettered for it.
    public var resourceShortage: Bool

    public init(reason: String, exitCode: Int32? = nil, signal: Int32? = nil, timedOut: Bool = false,
                lastErrorLine: String? = nil, resourceShortage: Bool = false) {
        self.reason = reason
        self.exitCode = exitCode
        self.signal = signal
        self.timedOut = timedOut
        self.lastErrorLine = lastErrorLine
        self.resourceShortage = resourceShortage
    }

    public var description: String { reason }
}

/// What became of a message.
public enum Outcome: Sendable, Equatable {
    /// Done: ack it.
    case ack
    /// Try again later, through a delay queue; dead-lettered after `max_attempts`.
    /// With `resourceShortage`, requeued after a pause instead, not counted.
    case retry(Failure)
    /// Never try again: dead-letter it now.
    case deadLetter(Failure)
}

/// What a handler made of a message whose output is published: its
/// outcome, and the output that becomes the reply or the next message.
public struct HandlerResult: Sendable {
    public var outcome: Outcome
    /// nil when the handler has none: published as an empty body.
    public var output: MessageBody?

    public init(outcome: Outcome, output: MessageBody? = nil) {
        self.outcome = outcome
        self.output = output
    }
}

/// Runs the work for one message.
///
/// Cancellation is the watchdog: when a handler is past its timeout, or the
/// grace period of a stop is over, its task is cancelled and it must return
/// promptly. `ExecHandler` does so by terminating the command's process
/// group; an in-process handler must check `Task.isCancelled` or use
/// cancellable awaits.
public protocol MessageHandler: Sendable {
    func handle(_ message: Message) async -> Outcome
    /// Called instead of `handle` when the message's output is published
    /// (`replies` and a `reply_to`, or `output_exchange`). The default runs
    /// `handle` and has no output, so its reply is empty.
    func handleWithOutput(_ message: Message) async -> HandlerResult
}

extension MessageHandler {
    public func handleWithOutput(_ message: Message) async -> HandlerResult {
        HandlerResult(outcome: await handle(message))
    }
}

/// An in-process handler from a closure, for programs that embed warren.
public struct ClosureHandler: MessageHandler {
    private let body: @Sendable (Message) async -> Outcome

    public init(_ body: @escaping @Sendable (Message) async -> Outcome) { self.body = body }

    public func handle(_ message: Message) async -> Outcome { await body(message) }
}

extension Outcome {
    /// The same outcome, its failure's reason cut to `limit` bytes (at a
    /// character boundary, marked with an ellipsis).
    func withReasonCapped(at limit: Int) -> Outcome {
        switch self {
        case .ack: return self
        case .retry(let failure): return .retry(Failure(capping: failure, at: limit))
        case .deadLetter(let failure): return .deadLetter(Failure(capping: failure, at: limit))
        }
    }
}

extension Failure {
    /// `failure` with its reason cut to `limit` bytes, at a character
    /// boundary, marked with an ellipsis.
    init(capping failure: Failure, at limit: Int) {
        self = failure
        reason = reason.capped(atBytes: limit)
    }
}

extension String {
    /// This text cut to `limit` bytes of UTF-8, at a character boundary,
    /// marked with an ellipsis; as it is when it fits.
    func capped(atBytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var cut = ""
        for character in self {
            if cut.utf8.count + character.utf8.count > limit { break }
            cut.append(character)
        }
        return cut + "…"
    }
}

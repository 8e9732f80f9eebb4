public import AMQP

/// How warren stops.
public struct ShutdownSettings: Sendable, Equatable {
    /// How long running handlers may go on after the stop signal.
    public var gracePeriod: Duration
    /// Between SIGTERM and SIGKILL to a handler's process group.
    public var killAfter: Duration

    public init(gracePeriod: Duration = .seconds(30), killAfter: Duration = .seconds(10)) {
        self.gracePeriod = gracePeriod
        self.killAfter = killAfter
    }
}

/// The broker and how to reach it again.
public struct BrokerSettings: Sendable, Equatable {
    /// Tried in order on each connect; several mean a cluster.
    public var endpoints: [ConnectionOptions]
    public var reconnectMin: Duration
    public var reconnectMax: Duration
    /// The broker's delivery acknowledgement timeout (RabbitMQ's
    /// `consumer_timeout`, 30 minutes unless configured): a message unacked
    /// for longer gets its channel closed. warren cannot read the broker's
    /// value, so the operator states it and warren refuses settings that
    /// could overrun it (`AckDeadline`). nil: the broker has none.
    public var consumerTimeout: Duration?

    public init(endpoints: [ConnectionOptions] = [ConnectionOptions()], reconnectMin: Duration = .seconds(1),
                reconnectMax: Duration = .seconds(30), consumerTimeout: Duration? = .seconds(1800)) {
        self.endpoints = endpoints
        self.reconnectMin = reconnectMin
        self.reconnectMax = reconnectMax
        self.consumerTimeout = consumerTimeout
    }
}

public enum QueueType: String, Sendable, Equatable, CaseIterable {
    case classic, quorum
}

/// `exchange_type`: how the exchange a consumer's queue is bound to routes.
public enum ExchangeType: String, Sendable, Equatable, CaseIterable {
    case direct, fanout, topic, headers
}

/// `overflow`: what a queue at `max_length` does with one message more
/// (RabbitMQ's `x-overflow`). `drop-head` and `reject-publish-dlx` send
/// what they discard along the queue's dead-letter route.
public enum Overflow: String, Sendable, Equatable, CaseIterable {
    case dropHead = "drop-head"
    case rejectPublish = "reject-publish"
    case rejectPublishDLX = "reject-publish-dlx"
}

/// How a consumer's `command` runs.
public enum HandlerMode: String, Sendable, Equatable, CaseIterable {
    /// A process per message; its exit code is the outcome.
    case exec
    /// `concurrency` long-lived workers, a message at a time each, over stdin and stdout (README, "Writing a persistent worker").
    case persistent
}

/// What a command handler reads on stdin (`input`).
public enum HandlerInput: String, Sendable, Equatable, CaseIterable {
    /// The body, as it came.
    case body
    /// The whole message as one JSON line (`Envelope`).
    case envelope
}

/// One `[consumer.NAME]` section: a queue, its workers and its handler.
public struct ConsumerSettings: Sendable, Equatable {
    public var name: String
    public var queue: String
    public var prefetch: UInt16
    public var concurrency: Int
    /// The handler command, already split into words; empty for in-process handlers.
    public var command: [String]
    /// A handler running longer than this is terminated; nil for no limit.
    public var timeout: Duration?
    public var maxAttempts: Int
    public var retryDelay: Duration
    public var retryDelayMax: Duration
    public var deadLetterQueue: String
    public var exitAck: Set<Int32>
    public var exitRetry: Set<Int32>
    public var exitDeadLetter: Set<Int32>
    public var declare: Bool
    public var queueType: QueueType
    /// Bytes; a larger body is dead-lettered (`body too large`), never handed to a handler.
    public var maxBody: Int
    public var mode: HandlerMode
    /// Persistent mode: how long a worker may take to say it is ready.
    public var startupTimeout: Duration
    /// Persistent mode: a worker is replaced after this many messages; 0 = never.
    public var maxMessages: Int
    /// Persistent mode: bytes of RSS (the worker's whole process group)
    /// past which it is replaced after its message; nil = no limit.
    public var maxMemory: Int?
    /// What the handler command reads on stdin.
    public var input: HandlerInput
    /// Answer a message that has `reply_to` with the handler's output
    /// (exec: stdout; persistent: the answer's `reply`), published to the
    /// default exchange and confirmed before the request is acked.
    public var replies: Bool
    /// The content type of replies and of messages sent to `outputExchange`.
    public var replyContentType: String
    /// Pipelines: publish the handler's output as a new message to this
    /// exchange, confirmed before the request is acked; nil = off.
    public var outputExchange: String?
    /// The routing key of messages sent to `outputExchange`.
    public var outputRoutingKey: String
    /// Bind the queue to this exchange; nil: no binding (the default exchange routes by queue name).
    public var exchange: String?
    public var exchangeType: ExchangeType
    /// Binding keys; the queue's name unless given.
    public var routingKeys: [String]
    /// `x-priority` on `basic.consume`: the broker feeds higher ones first while they have room.
    public var consumerPriority: Int32?
    /// `basic.consume` exclusive: no other consumer on the queue while this one consumes.
    public var exclusive: Bool
    /// Queue argument `x-single-active-consumer`.
    public var singleActiveConsumer: Bool
    /// Queue argument `x-max-priority` (classic queues).
    public var maxPriority: Int?
    /// Queue argument `x-max-length`, with `overflow` as `x-overflow` (nil: RabbitMQ's own, drop-head).
    public var maxLength: Int?
    public var overflow: Overflow?
    /// Queue argument `x-delivery-limit` (quorum queues).
    public var deliveryLimit: Int?
    /// One log line for every message that succeeds or is released
    /// unstarted (`log_outcomes`). Failures are logged whatever this says.
    public var logOutcomes: Bool
    /// The circuit breaker (see `CircuitBreaker`): after this many failed
    /// attempts in a row the consumer stops consuming for `retryDelay`
    /// (doubling up to `retryDelayMax`), then lets one message through; 0 = off.
    public var pauseAfterFailures: Int

    public init(name: String, queue: String, prefetch: UInt16 = 16, concurrency: Int = 4, command: [String] = [],
                timeout: Duration? = .seconds(300), maxAttempts: Int = 5, retryDelay: Duration = .seconds(1),
                retryDelayMax: Duration = .seconds(300), deadLetterQueue: String? = nil,
                exitAck: Set<Int32> = [0], exitRetry: Set<Int32> = [75], exitDeadLetter: Set<Int32> = [65],
                declare: Bool = true, queueType: QueueType = .classic, maxBody: Int = 16 << 20,
                mode: HandlerMode = .exec, startupTimeout: Duration = .seconds(30), maxMessages: Int = 0,
                maxMemory: Int? = nil, input: HandlerInput = .body, replies: Bool = false,
                replyContentType: String = "text/plain", outputExchange: String? = nil, outputRoutingKey: String = "",
                exchange: String? = nil,
                exchangeType: ExchangeType = .direct, routingKeys: [String]? = nil, consumerPriority: Int32? = nil,
                exclusive: Bool = false, singleActiveConsumer: Bool = false, maxPriority: Int? = nil,
                maxLength: Int? = nil, overflow: Overflow? = nil, deliveryLimit: Int? = nil, logOutcomes: Bool = true,
                pauseAfterFailures: Int = 0) {
        self.name = name
        self.queue = queue
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.command = command
        self.timeout = timeout
        self.maxAttempts = maxAttempts
        self.retryDelay = retryDelay
        self.retryDelayMax = retryDelayMax
        self.deadLetterQueue = deadLetterQueue ?? "\(queue).dead"
        self.exitAck = exitAck
        self.exitRetry = exitRetry
        self.exitDeadLetter = exitDeadLetter
        self.declare = declare
        self.queueType = queueType
        self.maxBody = maxBody
        self.mode = mode
        self.startupTimeout = startupTimeout
        self.maxMessages = maxMessages
        self.maxMemory = maxMemory
        self.input = input
        self.replies = replies
        self.replyContentType = replyContentType
        self.outputExchange = outputExchange
        self.outputRoutingKey = outputRoutingKey
        self.exchange = exchange
        self.exchangeType = exchangeType
        self.routingKeys = routingKeys ?? [queue]
        self.consumerPriority = consumerPriority
        self.exclusive = exclusive
        self.singleActiveConsumer = singleActiveConsumer
        self.maxPriority = maxPriority
        self.maxLength = maxLength
        self.overflow = overflow
        self.deliveryLimit = deliveryLimit
        self.logOutcomes = logOutcomes
        self.pauseAfterFailures = pauseAfterFailures
    }

    /// Whether any message's output may be published: persistent workers
    /// then get answer lines long enough for a reply of `maxBody` bytes.
    public var mayPublishOutput: Bool { replies || outputExchange != nil }
}

/// Everything the runtime needs.
public struct WarrenSettings: Sendable, Equatable {
    public var broker: BrokerSettings
    public var shutdown: ShutdownSettings
    public var consumers: [ConsumerSettings]
    /// How many consuming channel numbers one connection hands out before a
    /// new connection is made (see `ChannelNumbers`). Not a config key: the
    /// default needs thousands of re-subscribes to run out; tests lower it.
    public var channelLimit: UInt16 = 1000

    public init(broker: BrokerSettings = BrokerSettings(), shutdown: ShutdownSettings = ShutdownSettings(),
                consumers: [ConsumerSettings] = []) {
        self.broker = broker
        self.shutdown = shutdown
        self.consumers = consumers
    }
}

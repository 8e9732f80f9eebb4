import AMQP

/// Why a consumer does not consume now. Each cause comes and goes on its
/// own; the consumer consumes again only once none is left (a paused
/// consumer whose breaker closes stays paused).
struct HoldReasons: OptionSet, Sendable, Hashable {
    let rawValue: UInt8
    /// Every persistent worker fails before it says ready (`PersistentWorkers.isHolding`).
    static let workersFailing = HoldReasons(rawValue: 1 << 0)
    /// SIGTSTP: the operator paused warren; SIGCONT resumes.
    static let paused = HoldReasons(rawValue: 1 << 1)
    /// The consumer's circuit breaker is open (see `CircuitBreaker`).
    static let breakerOpen = HoldReasons(rawValue: 1 << 2)
}

/// A consumer to subscribe again after a backoff, on the connection of
/// `generation` only: a request outliving its connection is dropped, so
/// reconnects never pile up chains of retries.
struct Resubscribe: Sendable, Equatable {
    var consumer: Int
    var attempt: Int
    var generation: Int
}

/// Which consumer consumes on which channel of the current connection, and
/// what each set-up failure means: a value the control loop keeps and asks,
/// so every decision about subscribing is data, tested without a broker.
/// The loop performs the I/O (open, declare, consume, close) and tells this
/// value how it went.
struct Subscriptions: Sendable, Equatable {
    struct Subscription: Sendable, Equatable {
        var consumer: Int
        var channel: UInt16
    }

    /// What a consumer's failed set-up (or re-subscribe) means.
    enum Decision: Sendable, Equatable {
        /// The start cannot be: a refused topology at the first start, or any
        /// refusal for a reload's new consumers, which must not pretend to be ready.
        case cannotStart
        /// The connection is gone (or cannot serve): make a new one.
        case reconnect
        /// This consumer alone tries again later; the others go on.
        case resubscribe(Resubscribe)
    }

    let consumers: Int
    let channelLimit: UInt16
    /// The connection these channels belong to.
    private(set) var generation = 0
    /// Consuming channel by consumer index.
    private var channelOf: [Int: UInt16] = [:]
    /// Consumers that must not consume now, and why (see `HoldReasons`):
    /// kept across connections, and counted as fine for `allConsume`. A
    /// consumer consumes again only once no reason is left.
    private(set) var holds: [Int: HoldReasons] = [:]
    /// The consumers held for any reason.
    var held: Set<Int> { Set(holds.keys) }
    /// A held consumer's channel on this connection: open, cancelled (or
    /// never consumed on), where it consumes again once released.
    private var heldChannel: [Int: UInt16] = [:]

    /// What releasing a held consumer takes.
    enum Release: Sendable, Equatable {
        case nothing
        /// `basic.consume` again on its open channel.
        case consume(UInt16)
        /// No channel on this connection: subscribe afresh.
        case subscribe
    }
    private var channels: ChannelNumbers

    init(consumers: Int, channelLimit: UInt16) {
        self.consumers = consumers
        self.channelLimit = channelLimit
        channels = ChannelNumbers(limit: channelLimit)
    }

    /// A new connection: numbering starts afresh, nobody consumes yet.
    mutating func connected(generation: Int) {
        self.generation = generation
        channelOf = [:]
        heldChannel = [:]
        channels = ChannelNumbers(limit: channelLimit)
    }

    /// The connection is gone: nobody consumes.
    mutating func lost() {
        channelOf = [:]
        heldChannel = [:]
    }

    /// The channel the consumer consumes on now, if it does.
    func channel(of consumer: Int) -> UInt16? { channelOf[consumer] }

    /// Running means every consumer consumes (or holds on purpose), not
    /// merely that a connection is up.
    var allConsume: Bool { channelOf.count + holds.keys.filter { channelOf[$0] == nil }.count == consumers }

    /// The consumer stops consuming for `reason`: the channel it consumed
    /// on, to cancel (it stays open, and is where it consumes again), if it
    /// did and was not held already for another reason.
    mutating func hold(_ consumer: Int, for reason: HoldReasons) -> UInt16? {
        let before = holds[consumer, default: []]
        holds[consumer] = before.union(reason)
        guard before.isEmpty, let channel = channelOf.removeValue(forKey: consumer) else { return nil }
        heldChannel[consumer] = channel
        return channel
    }

    /// Whether `channel` is a consumer's (consuming, or held open).
    func owns(_ channel: UInt16) -> Bool {
        channelOf.values.contains(channel) || heldChannel.values.contains(channel)
    }

    /// A channel that consumed once and failed to consume again: its number
    /// is never used again on this connection (a late ack of its old tags
    /// must not land on a newer channel).
    mutating func retire(_ channel: UInt16) { channels.retire(channel) }

    /// A held consumer's channel, set up on a new connection but not consumed on.
    mutating func keep(_ consumer: Int, _ channel: UInt16) { heldChannel[consumer] = channel }

    /// `reason` no longer holds the consumer; it may consume again once no other does.
    mutating func release(_ consumer: Int, from reason: HoldReasons) -> Release {
        guard var reasons = holds[consumer], !reasons.isDisjoint(with: reason) else { return .nothing }
        reasons.subtract(reason)
        guard reasons.isEmpty else {
            holds[consumer] = reasons
            return .nothing
        }
        holds[consumer] = nil
        if let channel = heldChannel.removeValue(forKey: consumer) { return .consume(channel) }
        return channelOf[consumer] == nil ? .subscribe : .nothing
    }

    /// Who consumes where, in consumer order (the order of `basic.cancel` at a drain).
    var subscribed: [Subscription] {
        channelOf.sorted { $0.key < $1.key }.map { Subscription(consumer: $0.key, channel: $0.value) }
    }

    /// A number for a consumer's channel; nil when this connection has used
    /// them all (see `ChannelNumbers`) and a new one is needed.
    mutating func allocate() -> UInt16? { channels.allocate() }

    /// A channel whose set-up failed before `basic.consume` is closed: its number may serve again.
    mutating func releaseUnused(_ channel: UInt16) { channels.releaseUnused(channel) }

    mutating func consumes(_ consumer: Int, on channel: UInt16) { channelOf[consumer] = channel }

    /// The broker cancelled the consumer on `channel`, or closed the
    /// channel: its number is spent, and the consumer subscribes again.
    /// nil when nobody consumed there.
    mutating func consumerGone(on channel: UInt16) -> Resubscribe? {
        if let index = heldChannel.first(where: { $0.value == channel })?.key {
            // A held consumer's channel closed by the broker: it subscribes afresh once released.
            heldChannel[index] = nil
            channels.retire(channel)
            return nil
        }
        guard let index = channelOf.first(where: { $0.value == channel })?.key else { return nil }
        channelOf[index] = nil
        channels.retire(channel)
        return Resubscribe(consumer: index, attempt: 0, generation: generation)
    }

    /// A re-subscribe still wanted: for this connection, and for a consumer not consuming.
    func wants(_ request: Resubscribe) -> Bool {
        request.generation == generation && channelOf[request.consumer] == nil && holds[request.consumer] == nil
    }

    /// A consumer's set-up on a new connection failed.
    func setUpFailed(consumer: Int, _ error: AMQPError, firstStart: Bool, failFast: Bool) -> Decision {
        let refusedTopology = error.code == .invalidArgument || error.code == .inequivalentArguments
        if firstStart && (refusedTopology || (failFast && !error.isConnectionFatal)) { return .cannotStart }
        if error.isConnectionFatal { return .reconnect }
        return .resubscribe(Resubscribe(consumer: consumer, attempt: 1, generation: generation))
    }

    /// Subscribing again failed: retry later, or make a new connection.
    func resubscribeFailed(consumer: Int, attempt: Int, _ error: AMQPError) -> Decision {
        if error.isConnectionFatal { return .reconnect }
        return .resubscribe(Resubscribe(consumer: consumer, attempt: attempt + 1, generation: generation))
    }
}

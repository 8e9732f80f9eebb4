import CRabbitMQ
import Glibc
import Logging
import Synchronization

/// The loop that owns a connection on its I/O thread.
///
/// Each turn: run queued commands, put coalesced acks on the wire, read every
/// frame that is already there, then sleep in poll(2) on the socket and the
/// wake-up pipe. The poll timeout is a quarter of the heartbeat, so the
/// library is called often enough to send heartbeats and to notice a silent
/// broker, however long handlers run.
final class IOLoop {
    /// A class, so the per-delivery and per-ack updates change it in place
    /// rather than copying it out of the dictionary and back.
    final class ChannelState {
        var acks = AckTracker()
        var confirms: ConfirmTracker? = nil
        /// Acks gathered before a busy loop sends them (see `batchAcks`).
        var ackBatch = 1
    }

    private(set) var connection: RawConnection?
    private let queue: CommandQueue?
    private let events: EventSink?
    let logger: Logger
    private var channels: [UInt16: ChannelState] = [:]
    private var closeWaiters: [@Sendable () -> Void] = []
    private var lost: AMQPError? = nil {
        didSet { isLost = lost != nil }
    }
    /// `lost != nil`, checked in the hot loops without copying the error.
    private var isLost = false
    /// When every pending ack last went out (monotonic ms).
    private var lastFullFlush: Int64 = 0
    private var stopping = false
    /// Why the broker stopped reading from this connection, while it does.
    /// No channel is opened meanwhile (its reply would never come); other
    /// synchronous calls are bounded by the RPC timeout, and a stop drops
    /// the socket rather than wait (`AMQPConnection.abort`).
    private var blocked: String? = nil
    /// Runs its jobs between turns, while this loop hosts it.
    private let executor: LoopExecutor?
    /// Lets another thread drop the socket (`AMQPConnection.abort`).
    private let socket: SocketShutter?

    init(connection: RawConnection, queue: CommandQueue, events: EventSink, executor: LoopExecutor?,
         socket: SocketShutter? = nil, logger: Logger) {
        self.connection = connection
        self.queue = queue
        self.events = events
        self.executor = executor
        self.socket = socket
        self.logger = logger
    }

    private init(gone error: AMQPError) {
        connection = nil
        queue = nil
        events = nil
        executor = nil
        logger = Logger(label: "warren.amqp")
        socket = nil
        lost = error
        isLost = true
    }

    /// A stand-in handed to commands that arrive after the connection ended.
    static func gone(_ error: AMQPError) -> IOLoop { IOLoop(gone: error) }

    // MARK: The loop

    /// Takes the thread: commands it queues itself need no wake-up, and
    /// the executor's jobs run here from now on. Called on the I/O thread
    /// before `connect` returns, so the first job after it already runs here.
    func host() {
        queue?.claim()
        if let queue { executor?.attach(queue) }
        if let connection { socket?.set(connection.socketFD) }
    }

    /// Closes a connection that was opened for a connect nobody waits for
    /// any more (cancelled while the login was under way), without running.
    func abandon() {
        closeGracefully()
        finish()
    }

    func run() {
        guard let connection, let queue else { return }
        var commands: [IOCommand] = []
        var fds = [pollfd(fd: connection.socketFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: queue.wakeReadFD, events: Int16(POLLIN), revents: 0)]
        let heartbeatMs = connection.heartbeat > 0 ? connection.heartbeat * 250 : 1000
        let pollTimeout = Int32(max(10, min(heartbeatMs, 1000)))

        // The first turn reads whatever is there; later turns call into the
        // library only when poll(2) says so, or when it timed out (heartbeats
        // are sent and missed ones noticed inside the library's read).
        var mustRead = true
        var wakeReadable = true
        var skippedPoll = false
        while !isLost && !stopping {
            let now = monotonicMilliseconds()
            queue.lastTurn.store(now, ordering: .relaxed)
            queue.takeAll(into: &commands, drainWakeUp: wakeReadable)
            for command in commands {
                execute(command)
                if isLost { break }
            }
            commands.removeAll(keepingCapacity: true)
            if isLost || stopping { break }
            flushSettlements(all: now - lastFullFlush >= Self.ackDelayLimitMs)
            if isLost { break }
            var moreBuffered = false
            if mustRead || amqp_frames_enqueued(connection.state) != 0 || amqp_data_in_buffer(connection.state) != 0 {
                guard readAvailableFrames(limit: 256) else { break }
                events?.batchEnd?()
                moreBuffered = amqp_frames_enqueued(connection.state) != 0 || amqp_data_in_buffer(connection.state) != 0
                if !moreBuffered { amqp_maybe_release_buffers(connection.state) }
            }
            // The workers hosted here: they take the burst just read and
            // queue their acks, which go out next turn without a poll.
            executor?.runAll()
            if stopping { break }
            // With work already waiting (typically the acks just queued),
            // go round at once; but never twice in a row without looking at
            // the socket (timeout 0), so it is read however busy the loop is.
            let busy = moreBuffered || queue.hasCommands || executor?.hasJobs == true
            if busy && !skippedPoll {
                skippedPoll = true
                mustRead = moreBuffered
                wakeReadable = false
                continue
            }
            skippedPoll = false
            var timeout = busy ? 0 : pollTimeout
            if !busy, let wait = ackWait() {
                // About to sleep with acks held back: sleep no longer than they may wait.
                if wait > 0 {
                    timeout = min(timeout, Int32(wait))
                } else {
                    flushSettlements(all: true)
                    if isLost { break }
                }
            }
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, 2, timeout)
            mustRead = moreBuffered || (ready == 0 && !busy) || fds[0].revents != 0
            wakeReadable = fds[1].revents != 0
        }
        finish()
    }

    private func finish() {
        let error = lost ?? AMQPError(.closed, "connection closed by warren")
        for (_, channel) in channels { channel.confirms?.failAll(error) }
        channels.removeAll()
        if let queue {
            for command in queue.close(because: error) { command.abandon(error) }
        }
        if let lost { events?.emit(.connectionLost(lost)) }
        socket?.clear()  // before the descriptor is closed and its number reused
        connection = nil  // amqp_destroy_connection, on this thread
        events?.finish()
        for waiter in closeWaiters { waiter() }
        // Jobs woken by the above, and every later one, run on the standby thread.
        if let queue { executor?.detach(queue) }
    }

    private func execute(_ command: IOCommand) {
        switch command {
        case .settle(let channel, let tag, let settlement):
            if let state = channels[channel] {
                state.acks.settle(tag, settlement)
            } else {
                logger.debug("dropping settlement of a closed channel", metadata: ["channel": "\(channel)", "tag": "\(tag)"])
            }
        case .call(let body):
            body(self)
        case .close(let done):
            closeWaiters.append(done)
            closeGracefully()
        }
    }

    // MARK: Settlements

    /// How long acks may be held back to gather a batch.
    static let ackDelayLimitMs: Int64 = 10

    /// A channel's acks go out once `ackBatch` of them have gathered, as
    /// one `multiple` ack where they form a run: half a prefetch window, so
    /// the broker always has the other half to send, and handles one ack
    /// frame per half window rather than one per burst read. Acks wait at
    /// most `ackDelayLimitMs` (counted from the last time everything went
    /// out, so the first ack after a quiet spell goes at once); nacks never
    /// wait; closing a channel or the connection sends everything first.
    func batchAcks(on channel: UInt16, prefetch: UInt16) {
        channels[channel]?.ackBatch = max(1, Int(prefetch) / 2)
    }

    /// nil when no settlement waits; else how many more milliseconds the
    /// waiting ones may wait (0: send them now). Settlements that come
    /// after a quiet spell are sent at once; in a stream they gather for
    /// up to `ackDelayLimitMs`, since more deliveries, and acks, are coming.
    private func ackWait() -> Int64? {
        guard channels.values.contains(where: { $0.acks.hasPending }) else { return nil }
        return max(0, lastFullFlush + Self.ackDelayLimitMs - monotonicMilliseconds())
    }

    private func flushSettlements(all: Bool = true) {
        if all {
            // A flush with nothing to send starts no hold: the first ack
            // after a quiet spell then finds the hold over, and goes at once.
            guard channels.values.contains(where: { $0.acks.hasPending }) else { return }
            lastFullFlush = monotonicMilliseconds()
        }
        for (channel, state) in channels where state.acks.hasPending && (all || state.acks.isDue(batch: state.ackBatch)) {
            flushSettlements(of: channel, state)
            if isLost { return }
        }
    }

    private func flushSettlements(of channel: UInt16, _ state: ChannelState) {
        guard let connection, state.acks.hasPending else { return }
        for wire in state.acks.flush() {
            let status: Int32
            switch wire {
            case .ack(let tag, let multiple):
                status = amqp_basic_ack(connection.state, channel, tag, multiple ? 1 : 0)
            case .nack(let tag, let requeue):
                status = amqp_basic_nack(connection.state, channel, tag, 0, requeue ? 1 : 0)
            }
            if status != AMQP_STATUS_OK.rawValue {
                markLost(AMQPError(.connectionLost, "sending an ack: \(statusText(status))"))
                return
            }
        }
    }

    // MARK: Reading

    /// Body bytes read in one turn, past which the turn stops reading and
    /// lets the workers take what it read. A body of 64 KiB or more thus
    /// comes alone, and is freed before the next one is allocated, so
    /// malloc reuses its memory (as in a consumer that handles one message
    /// at a time). Freed together, a burst of them leaves a free space at
    /// the top of the I/O thread's heap that glibc trims (handing the pages
    /// back with `MADV_DONTNEED`), and every page of the next bodies faults
    /// in again: that cost 1 MiB bodies 2.5x the CPU of the C baseline and
    /// 100 to 270 MB of peak RSS. Small bodies still come up to `limit`
    /// frames a turn.
    static let bodyBytesPerTurn = 64 * 1024

    /// Body bytes of the deliveries handled this turn.
    private var bodyBytesThisTurn = 0

    /// Reads and handles frames already available. false when the connection died.
    private func readAvailableFrames(limit: Int) -> Bool {
        guard let connection else { return false }
        bodyBytesThisTurn = 0
        for read in 0..<limit {
            if bodyBytesThisTurn >= Self.bodyBytesPerTurn { break }
            // Once the library holds nothing more, asking again would only
            // make it recv(2) EAGAIN and poll(2) with timeout 0: two system
            // calls per turn for nothing. The loop's own poll says when
            // more has come. (The first call of a turn always goes in: it
            // reads the socket, sends a due heartbeat, notices a silent broker.)
            if read > 0 && amqp_data_in_buffer(connection.state) == 0 && amqp_frames_enqueued(connection.state) == 0 {
                return true
            }
            var frame = amqp_frame_t()
            var zero = timeval(tv_sec: 0, tv_usec: 0)
            let status = amqp_simple_wait_frame_noblock(connection.state, &frame, &zero)
            if status == AMQP_STATUS_TIMEOUT.rawValue { return true }
            guard status == AMQP_STATUS_OK.rawValue else {
                markLost(AMQPError(.connectionLost, statusText(status)))
                return false
            }
            handle(frame)
            if isLost { return false }
        }
        return true
    }

    /// Handles one frame read outside a synchronous call.
    private func handle(_ frame: amqp_frame_t) {
        guard let connection else { return }
        guard frame.frame_type == UInt8(AMQP_FRAME_METHOD) else { return }
        let channel = frame.channel
        let decoded = frame.payload.method.decoded
        switch frame.payload.method.id {
        case AMQP_BASIC_DELIVER_METHOD:
            let deliver = decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            let consumerTag = deliver.consumer_tag.string
            let exchange = deliver.exchange.string
            let routingKey = deliver.routing_key.string
            var message = amqp_message_t()
            let reply = amqp_read_message(connection.state, channel, &message, 0)
            if let error = connection.error(from: reply, channel: channel, doing: "reading a delivery") {
                // On failure the library has freed what it allocated, and
                // may leave `message.body` pointing at it: never touch it.
                markLost(error)
                return
            }
            // The body stays in the buffer amqp_read_message malloc'ed for
            // this message alone: the delivery takes it over, so it is
            // neither copied nor freed here.
            let payload = MessageBody(taking: message.body)
            message.body = amqp_empty_bytes
            let delivery = Delivery(channel: channel, deliveryTag: deliver.delivery_tag, consumerTag: consumerTag,
                                    exchange: exchange, routingKey: routingKey, redelivered: deliver.redelivered != 0,
                                    properties: MessageProperties(message.properties), payload: payload)
            amqp_destroy_message(&message)
            // The body's frames sit in the channel's pool, which only grows
            // until released: recycle it after each message, or a burst of
            // large ones costs their whole size a second time.
            amqp_maybe_release_buffers_on_channel(connection.state, channel)
            if let skipped = channels[channel]?.acks.delivered(delivery.deliveryTag), skipped > 0 {
                logger.error("deliveries were lost between the broker and warren (rabbitmq-c dropped their frames); they are requeued, never covered by an ack",
                             metadata: ["channel": "\(channel)", "count": "\(skipped)", "before_tag": "\(delivery.deliveryTag)"])
            }
            bodyBytesThisTurn += payload.count
            events?.emit(.delivery(delivery))

        case AMQP_BASIC_CANCEL_METHOD:
            let cancel = decoded!.assumingMemoryBound(to: amqp_basic_cancel_t.self).pointee
            events?.emit(.consumerCancelledByBroker(channel: channel, consumerTag: cancel.consumer_tag.string))

        case AMQP_BASIC_ACK_METHOD:
            let ack = decoded!.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            channels[channel]?.confirms?.confirm(upTo: ack.delivery_tag, multiple: ack.multiple != 0, result: .success(()))

        case AMQP_BASIC_NACK_METHOD:
            let nack = decoded!.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            channels[channel]?.confirms?.confirm(
                upTo: nack.delivery_tag, multiple: nack.multiple != 0,
                result: .failure(AMQPError(.publishRejected, "the broker refused the message (basic.nack)")))

        case AMQP_BASIC_RETURN_METHOD:
            let ret = decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            let event = AMQPEvent.returned(channel: channel, replyCode: ret.reply_code, replyText: ret.reply_text.string,
                                           exchange: ret.exchange.string, routingKey: ret.routing_key.string)
            var message = amqp_message_t()
            let reply = amqp_read_message(connection.state, channel, &message, 0)
            if let error = connection.error(from: reply, channel: channel, doing: "reading a returned message") {
                markLost(error)
                return
            }
            amqp_destroy_message(&message)
            channels[channel]?.confirms?.returned(replyCode: ret.reply_code, replyText: ret.reply_text.string)
            events?.emit(event)

        case AMQP_CHANNEL_CLOSE_METHOD:
            let close = decoded!.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            var ok = amqp_channel_close_ok_t(dummy: 0)
            amqp_send_method(connection.state, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
            let error = AMQPError(.channelClosedByBroker, close.reply_text.string, replyCode: close.reply_code)
            channels.removeValue(forKey: channel)?.confirms?.failAll(error)
            events?.emit(.channelClosed(channel: channel, error: error))

        case AMQP_CONNECTION_BLOCKED_METHOD:
            let reason = decoded!.assumingMemoryBound(to: amqp_connection_blocked_t.self).pointee.reason.string
            blocked = reason
            events?.emit(.blocked(reason: reason))

        case AMQP_CONNECTION_UNBLOCKED_METHOD:
            blocked = nil
            events?.emit(.unblocked)

        case AMQP_CONNECTION_CLOSE_METHOD:
            let close = decoded!.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t(dummy: 0)
            amqp_send_method(connection.state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
            markLost(AMQPError(.connectionClosedByBroker, close.reply_text.string, replyCode: close.reply_code))

        default:
            logger.debug("ignoring AMQP method", metadata: ["method": "\(frame.payload.method.id)", "channel": "\(channel)"])
        }
    }

    private func markLost(_ error: AMQPError) {
        if lost == nil { lost = error }
    }

    // MARK: Operations for `IOCommand.call` bodies

    /// Runs a synchronous broker call on `channel`. A channel-level refusal
    /// closes only that channel; anything worse ends the connection.
    func rpc<T>(channel: UInt16, _ what: String, _ body: (amqp_connection_state_t) -> T?) throws(AMQPError) -> T {
        guard let connection else { throw lost ?? AMQPError(.closed, "connection closed") }
        let result = body(connection.state)
        if let error = connection.lastError(channel: channel, doing: what) {
            if error.code == .channelClosedByBroker {
                channels.removeValue(forKey: channel)?.confirms?.failAll(error)
            } else {
                markLost(error)
            }
            throw error
        }
        guard let result else { throw AMQPError(.protocolError, "\(what): no reply") }
        return result
    }

    /// A method on a channel this loop already knows is closed would be a
    /// connection error (504 CHANNEL_ERROR): refused here instead.
    func requireOpen(_ channel: UInt16, doing what: String) throws(AMQPError) {
        guard channels[channel] != nil else {
            throw AMQPError(.channelClosedByBroker, "\(what): channel \(channel) is closed")
        }
    }

    /// Opening an open channel is refused: two owners of one channel would
    /// share its prefetch, its deliveries and its fate. With `confirms`, the
    /// channel is in confirm mode before anything else can use it: both
    /// calls are made here, with no command in between.
    func openChannel(_ channel: UInt16, confirms: Bool = false) throws(AMQPError) {
        guard channels[channel] == nil else {
            throw AMQPError(.invalidArgument, "channel \(channel) is already open on this connection")
        }
        if let blocked {
            throw AMQPError(.publishRejected, "cannot open channel \(channel): the broker blocked the connection (\(blocked))")
        }
        _ = try rpc(channel: channel, "opening channel \(channel)") { amqp_channel_open($0, channel) }
        let state = ChannelState()
        channels[channel] = state
        if confirms {
            _ = try rpc(channel: channel, "enabling publisher confirms") { amqp_confirm_select($0, channel) }
            state.confirms = ConfirmTracker()
        }
    }

    func enableConfirms(_ channel: UInt16) throws(AMQPError) {
        guard channels[channel]?.confirms == nil else { return }
        _ = try rpc(channel: channel, "enabling publisher confirms") { amqp_confirm_select($0, channel) }
        channels[channel]?.confirms = ConfirmTracker()
    }

    /// Requeues every delivery of `channel` not yet settled, up to `tag`,
    /// with one `basic.nack` (multiple, requeue). The settlements queued for
    /// the channel go out first, so an ack queued earlier is not undone.
    func requeueAll(upTo tag: UInt64, channel: UInt16) throws(AMQPError) {
        guard let connection, let state = channels[channel] else {
            throw lost ?? AMQPError(.channelClosedByBroker, "requeueing: channel \(channel) is closed")
        }
        flushSettlements(of: channel, state)
        if isLost { throw lost! }
        let status = amqp_basic_nack(connection.state, channel, tag, 1, 1)
        if status != AMQP_STATUS_OK.rawValue {
            let error = AMQPError(.connectionLost, "requeueing messages: \(statusText(status))")
            markLost(error)
            throw error
        }
    }

    /// Settlements queued for the channel go out first: they are only valid on it.
    func closeChannel(_ channel: UInt16) throws(AMQPError) {
        guard let connection, let state = channels[channel] else { return }
        flushSettlements(of: channel, state)
        channels.removeValue(forKey: channel)
        if isLost { throw lost! }
        state.confirms?.failAll(AMQPError(.closed, "channel closed before the broker confirmed"))
        let reply = amqp_channel_close(connection.state, channel, AMQP_REPLY_SUCCESS)
        if let error = connection.error(from: reply, channel: channel, doing: "closing channel \(channel)"),
           error.code != .channelClosedByBroker {
            markLost(error)
            throw error
        }
    }

    /// Publishes; with confirms on the channel, `confirmed` runs when the broker answers.
    /// - Parameter requireConfirm: fail, rather than report success at once,
    ///   unless the channel is in confirm mode.
    /// - Parameter open: open the channel in confirm mode first if it is not open.
    func publish(channel: UInt16, exchange: String, routingKey: String, mandatory: Bool,
                 properties: MessageProperties, body: MessageBody, requireConfirm: Bool = false, open: Bool = false,
                 confirmed: @escaping @Sendable (Result<Void, AMQPError>) -> Void) {
        guard let connection else {
            confirmed(.failure(lost ?? AMQPError(.closed, "connection closed")))
            return
        }
        if open && channels[channel] == nil {
            do throws(AMQPError) {
                try openChannel(channel, confirms: true)
            } catch {
                confirmed(.failure(error))
                return
            }
        }
        guard let state = channels[channel] else {
            confirmed(.failure(AMQPError(.closed, "channel \(channel) is not open")))
            return
        }
        if requireConfirm && state.confirms == nil {
            confirmed(.failure(AMQPError(.invalidArgument, "channel \(channel) is not in confirm mode: a publish that needs the broker's confirm cannot go out on it")))
            return
        }
        if let problem = ShortStringBytes.tooLong(exchange: exchange, routingKey: routingKey, properties: properties) {
            confirmed(.failure(AMQPError(.invalidArgument, "not sent: \(problem)")))
            return
        }
        let arena = CArena()
        var props = arena.properties(properties)
        let status = body.withUnsafeBytes { raw in
            amqp_basic_publish(connection.state, channel, arena.bytes(exchange), arena.bytes(routingKey),
                               mandatory ? 1 : 0, 0, &props,
                               amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)))
        }
        guard status == AMQP_STATUS_OK.rawValue else {
            let error = AMQPError(.connectionLost, "publishing: \(statusText(status))")
            markLost(error)
            confirmed(.failure(error))
            return
        }
        if channels[channel]!.confirms != nil {
            channels[channel]!.confirms!.published(confirmed)
        } else {
            confirmed(.success(()))
        }
    }

    /// `basic.get` with manual acks: the first message ready in `queue`, and
    /// how many more were ready, or nil if the queue is empty. The message
    /// stays unacked on `channel` until settled like a delivery, and goes
    /// back to the queue if the channel or connection closes first.
    func get(queue: String, channel: UInt16) throws(AMQPError) -> (delivery: Delivery, messageCount: UInt32)? {
        guard let connection else { throw lost ?? AMQPError(.closed, "connection closed") }
        try requireOpen(channel, doing: "getting a message from '\(queue)'")
        let what = "getting a message from '\(queue)'"
        let arena = CArena()
        let reply = amqp_basic_get(connection.state, channel, arena.bytes(queue), 0)
        if let error = connection.error(from: reply, channel: channel, doing: what) {
            if error.code == .channelClosedByBroker {
                channels.removeValue(forKey: channel)?.confirms?.failAll(error)
            } else {
                markLost(error)
            }
            throw error
        }
        if reply.reply.id == AMQP_BASIC_GET_EMPTY_METHOD { return nil }
        guard reply.reply.id == AMQP_BASIC_GET_OK_METHOD, let decoded = reply.reply.decoded else {
            let error = AMQPError(.protocolError, "\(what): unexpected method \(reply.reply.id)")
            markLost(error)
            throw error
        }
        // Copied before the next library call reuses the channel's memory.
        let ok = decoded.assumingMemoryBound(to: amqp_basic_get_ok_t.self).pointee
        let exchange = ok.exchange.string
        let routingKey = ok.routing_key.string
        var message = amqp_message_t()
        let read = amqp_read_message(connection.state, channel, &message, 0)
        if let error = connection.error(from: read, channel: channel, doing: "reading a message from '\(queue)'") {
            markLost(error)
            throw error
        }
        let payload = MessageBody(taking: message.body)
        message.body = amqp_empty_bytes
        let delivery = Delivery(channel: channel, deliveryTag: ok.delivery_tag, consumerTag: "", exchange: exchange,
                                routingKey: routingKey, redelivered: ok.redelivered != 0,
                                properties: MessageProperties(message.properties), payload: payload)
        amqp_destroy_message(&message)
        amqp_maybe_release_buffers_on_channel(connection.state, channel)
        channels[channel]?.acks.delivered(ok.delivery_tag)
        return (delivery, ok.message_count)
    }

    /// Unsettled deliveries on a channel (for tests and drain accounting).
    func outstanding(on channel: UInt16) -> Int { channels[channel]?.acks.outstanding ?? 0 }

    /// Settles everything queued, closes each channel, then the connection.
    private func closeGracefully() {
        guard let connection else { return }
        flushSettlements()
        for channel in channels.keys.sorted() {
            try? closeChannel(channel)
            if isLost { break }
        }
        if lost == nil {
            let reply = amqp_connection_close(connection.state, AMQP_REPLY_SUCCESS)
            if let error = connection.error(from: reply, channel: 0, doing: "closing the connection") {
                logger.debug("connection close was not clean", metadata: ["error": "\(error)"])
            }
        }
        stopping = true
    }
}

import AMQP
import Logging
import Synchronization

/// `mode = persistent`: each of the consumer's `concurrency` slots keeps a
/// long-lived worker process and hands it one message at a time. What
/// happens when is `WorkerSlot`'s to decide; this file carries its actions
/// out: processes through the `ProcessSupervisor` (never blocking here),
/// timers as child tasks, messages through the buffer and `settle`.
extension Consumer {
    /// Everything a slot waits for, on one stream, handled in order.
    enum SlotEvent: Sendable {
        /// From the supervisor thread: the worker of `generation` wrote or exited.
        case worker(generation: Int, ProcessSupervisor.WorkerEvent)
        /// The buffer's answer to a request: a delivery, or nil once closed.
        case message(Received?)
        case alarm(Int)
        /// The watchdog stopped the message with this envelope id.
        case watchdog(id: String)
        /// The buffer was closed: drain.
        case drain
        /// The watchdog fired: grace over, second stop, quit.
        case shutdown
    }

    /// The token of the one timer of a slot that counts (`WorkerSlot.timer`).
    final class CurrentAlarm: Sendable {
        /// How late a replaced timer's task notices and ends.
        static let step: Duration = .milliseconds(250)
        let token = Atomic<Int>(0)
    }

    /// The message a slot's worker holds.
    private struct InHand {
        var received: Received
        var message: Message
        var watchdogID: Int?
        var started: Int64
        /// How the circuit breaker let it through.
        var ticket: CircuitBreaker.Ticket
    }

    /// Runs one slot until the drain is over and its worker has gone.
    func runPersistentSlot(_ slot: Int, workers: PersistentWorkers, watchdog: Watchdog, executor: LoopExecutor) async {
        let (events, sink) = AsyncStream<SlotEvent>.makeStream()
        let (requests, requester) = AsyncStream<Void>.makeStream()
        await withDiscardingTaskGroup { group in
            // Takes a delivery from the buffer only when asked: a worker
            // that is not ready never has a message waiting on it.
            group.addTask(executorPreference: executor) {
                for await _ in requests {
                    let received = await self.buffer.next()
                    // The slot ended while the buffer answered: nobody will
                    // take this delivery, so it goes back now.
                    if case .terminated = sink.yield(.message(received)), let received {
                        received.connection.nack(received.delivery, requeue: true)
                        self.metrics.requeued.increment()
                        self.logUnstarted(received.delivery, "message released: its worker slot had ended")
                    }
                }
            }
            group.addTask { if await self.buffer.closedSignal.wait() { sink.yield(.drain) } }
            group.addTask { if await watchdog.shutdown.wait() { sink.yield(.shutdown) } }
            let alarms = CurrentAlarm()
            var driver = SlotDriver(consumer: self, slot: slot, workers: workers, watchdog: watchdog, sink: sink,
                                    requester: requester, alarms: alarms)
            await driver.run(events) { token, delay in
                alarms.token.store(token, ordering: .relaxed)
                group.addTask {
                    // In steps: a timer replaced by a newer one (the startup
                    // timeout once the worker is ready) ends within a step,
                    // so a worker recycled after every message does not
                    // leave thousands of sleeping tasks behind.
                    let deadline = ContinuousClock.now + delay
                    while alarms.token.load(ordering: .relaxed) == token && !Task.isCancelled {
                        let left = deadline - ContinuousClock.now
                        if left <= .zero {
                            sink.yield(.alarm(token))
                            return
                        }
                        try? await Task.sleep(for: min(left, CurrentAlarm.step))
                    }
                }
            }
            // From here a delivery the buffer hands over is refused (see
            // above); one handed over before, still in the stream, goes back.
            sink.finish()
            for await event in events {
                if case .message(let received?) = event {
                    received.connection.nack(received.delivery, requeue: true)
                    metrics.requeued.increment()
                    logUnstarted(received.delivery, "message released: its worker slot had ended")
                }
            }
            requester.finish()
            group.cancelAll()
        }
    }

    /// The state of one slot's task: its `WorkerSlot`, the process, the
    /// message in hand. Lives on that task only.
    private struct SlotDriver {
        let consumer: Consumer
        let slot: Int
        let workers: PersistentWorkers
        let watchdog: Watchdog
        let sink: AsyncStream<SlotEvent>.Continuation
        let requester: AsyncStream<Void>.Continuation
        let alarms: CurrentAlarm
        var machine: WorkerSlot
        /// The worker process of the moment: its supervisor request id.
        var request: Int? = nil
        var pid: Int32? = nil
        var generation = 0
        var inHand: InHand? = nil
        /// A delivery the buffer gave while no worker was ready.
        var held: Received? = nil
        /// The buffer has been asked and has not answered yet.
        var asked = false
        /// Messages sent to the worker of the moment.
        var sent = 0
        var log: Logger

        init(consumer: Consumer, slot: Int, workers: PersistentWorkers, watchdog: Watchdog,
             sink: AsyncStream<SlotEvent>.Continuation, requester: AsyncStream<Void>.Continuation, alarms: CurrentAlarm) {
            self.consumer = consumer
            self.slot = slot
            self.workers = workers
            self.watchdog = watchdog
            self.sink = sink
            self.requester = requester
            self.alarms = alarms
            machine = WorkerSlot(maxMessages: consumer.settings.maxMessages)
            log = consumer.logger
            log[metadataKey: "slot"] = "\(slot)"
        }

        mutating func run(_ events: AsyncStream<SlotEvent>, arm: (Int, Duration) -> Void) async {
            await perform(machine.begin(), arm: arm)
            for await event in events {
                switch event {
                case .worker(let generation, let event):
                    guard generation == self.generation else { continue }
                    switch event {
                    case .stdout(.line(let bytes)):
                        let line = WorkerLine(bytes, quoting: !consumer.settings.mayPublishOutput)
                        // Measured as the answer comes, before it is fed:
                        // over max_memory, the worker gets no next message.
                        // After answers only: never recycled at start-up.
                        if case .answer(let answer) = line, machine.state == .busy(id: answer.id),
                           let limit = consumer.settings.maxMemory, let request, let pid {
                            if let rss = await workers.supervisor.residentMemory(of: request),
                               rss > limit {
                                log.notice("worker over max_memory; replacing it after its message",
                                           metadata: ["pid": "\(pid)", "rss": "\(rss)", "max_memory": "\(limit)"])
                                await perform(machine.overMemory(), arm: arm)
                            }
                        }
                        await perform(machine.line(line), arm: arm)
                    case .stdout(.tooLong(let prefix)):
                        let line = WorkerLine.invalid(why: "longer than \(ProcessSupervisor.workerLineLimit(for: consumer.settings)) bytes",
                                                      excerpt: WorkerLine.excerpt(prefix, quoting: !consumer.settings.mayPublishOutput))
                        await perform(machine.line(line), arm: arm)
                    case .closedPipe(let pipe):
                        await perform(machine.closedPipe(pipe), arm: arm)
                    case .exited(let termination, let writes, let unread):
                        let status = Self.describe(termination)
                        request = nil
                        pid = nil
                        // A message sent after the supervisor saw the worker go never reached it either.
                        await perform(machine.exited(status, unread: unread || writes < sent), arm: arm)
                    }
                case .message(let received):
                    asked = false
                    guard let received else {
                        releaseHeld()
                        await perform(machine.drain(), arm: arm)
                        break
                    }
                    // In flight from here until settled or released.
                    consumer.busy.add(1, ordering: .relaxed)
                    if !received.connection.canSettle(received.delivery) {
                        // Its connection or channel died on the way here: the broker redelivers it.
                        consumer.busy.subtract(1, ordering: .relaxed)
                        consumer.logGoneUnstarted(received.delivery)
                        if machine.state == .ready { await perform([.requestMessage], arm: arm) }
                    } else if machine.state == .ready {
                        await take(received, arm: arm)
                    } else if machine.expectsAWorkerSoon {
                        held = received
                    } else {
                        release(received, nil, "no worker can take it now")
                    }
                case .alarm(let token):
                    await perform(machine.alarm(token), arm: arm)
                case .watchdog(let id):
                    guard machine.inHand == id else { continue }
                    await perform(machine.watchdogStopped(), arm: arm)
                case .drain:
                    releaseHeld()
                    await perform(machine.drain(), arm: arm)
                case .shutdown:
                    releaseHeld()
                    await perform(machine.shutdown(), arm: arm)
                }
                if machine.state == .done { break }
            }
            // Taken from the buffer but never handed to a worker: back to the queue.
            releaseHeld()
            // The stream ended before the slot was done: its task was
            // cancelled (a runtime that gave up, an embedder's cancel), and
            // the drain events will never come. Nothing may outlive the
            // slot: the message in hand goes back, the worker is ended.
            // The worker is told to stop before its message goes back, so
            // the two overlap as little as a cancel allows (nothing waits
            // for the exit here).
            if let request {
                workers.supervisor.terminate(request, killAfter: workers.killAfter)
                self.request = nil
            }
            if let hand = inHand {
                inHand = nil
                if let id = hand.watchdogID { _ = watchdog.finish(id) }
                release(hand.received, hand.message, "its worker slot was cancelled")
            }
        }

        private mutating func perform(_ actions: [WorkerSlot.Action], arm: (Int, Duration) -> Void) async {
            var pending = actions[...]
            while let action = pending.popFirst() {
                pending += await carryOut(action, arm: arm)
            }
            // The machine also retires its timer without a new one (the
            // ready line ends the startup timeout): that timer's task ends.
            alarms.token.store(machine.timer, ordering: .relaxed)
        }

        /// One action; returns the machine's answer to it, if any.
        private mutating func carryOut(_ action: WorkerSlot.Action, arm: (Int, Duration) -> Void) async -> [WorkerSlot.Action] {
            switch action {
            case .spawn:
                return await spawn()
            case .arm(let timer, let token):
                switch timer {
                case .startup: arm(token, consumer.settings.startupTimeout)
                case .backoff(let attempt):
                    let delay = workers.backoff.delay(attempt, random: Double.random(in: 0..<1))
                    log.notice("starting a new worker", metadata: ["in": "\(delay)", "failed_starts": "\(attempt + 1)"])
                    arm(token, delay)
                case .escalation: arm(token, workers.killAfter)
                }
            case .becameReady:
                workers.failing(slot, nil, beforeReady: false)
                log.info("worker ready", metadata: ["pid": "\(pid.map(String.init) ?? "-")"])
            case .requestMessage:
                if let held {
                    self.held = nil
                    // Its connection or channel died while it waited: the
                    // broker redelivers it, so running it now would be a duplicate.
                    if !held.connection.canSettle(held.delivery) {
                        consumer.busy.subtract(1, ordering: .relaxed)
                        consumer.logGoneUnstarted(held.delivery)
                    } else if consumer.consumingStopped.load(ordering: .relaxed) {
                        // Paused (or held otherwise) while it waited for this
                        // worker: it has not started, and goes back.
                        release(held, nil, "consuming stopped while it waited for a worker")
                    } else {
                        return await take(held)
                    }
                }
                guard !asked else { break }
                // A delivery already waiting is taken here and now: asking
                // the requester task would cost two task switches a message.
                while let received = consumer.buffer.tryNext() {
                    // One of a connection or channel that died: the broker redelivers it.
                    guard received.connection.canSettle(received.delivery) else {
                        consumer.logGoneUnstarted(received.delivery)
                        continue
                    }
                    consumer.busy.add(1, ordering: .relaxed)
                    return await take(received)
                }
                asked = true
                requester.yield()
            case .send(let id):
                return send(id)
            case .answered(let outcome, let reply):
                await settle(outcome, reply: reply, answered: true)
            case .settle(let outcome):
                await settle(outcome, reply: nil, answered: false)
            case .release:
                if let hand = inHand {
                    inHand = nil
                    if let id = hand.watchdogID { _ = watchdog.finish(id) }
                    consumer.breakerAbandoned(hand.ticket)
                    release(hand.received, hand.message, level: .notice,
                            "the worker went before reading its message; requeued, no attempt spent")
                }
            case .closeInput:
                if let request { workers.supervisor.closeInput(of: request) }
            case .terminate:
                if let request { workers.supervisor.terminate(request, killAfter: workers.killAfter) }
            case .protocolError(let why):
                log.error("worker protocol error; replacing the worker", metadata: [
                    "pid": "\(pid.map(String.init) ?? "-")", "problem": "\(why)",
                    "message_id": "\(inHand?.message.logID ?? "-")"])
            case .startFailed(let why):
                workers.failing(slot, why, beforeReady: !machine.wasReady)
                log.error("worker did not start: \(why); check the command and its stderr above",
                          metadata: ["command": "\(workers.argv.joined(separator: " "))"])
                // Not kept waiting through a backoff: other workers may take it.
                releaseHeld()
            case .exitedIdle(let status):
                log.warning("worker exited while waiting for a message", metadata: ["status": "\(status)"])
            case .finish:
                break
            }
            return []
        }

        /// `take` for the run loop, whose actions are performed at once.
        private mutating func take(_ received: Received, arm: (Int, Duration) -> Void) async {
            await perform(await take(received), arm: arm)
        }

        private mutating func take(_ received: Received) async -> [WorkerSlot.Action] {
            let started = monotonicNanoseconds()
            var message = Message(delivery: received.delivery, consumer: consumer.settings.name,
                                  queue: consumer.settings.queue, attempt: Message.attempt(of: received.delivery))
            message.started = started
            if consumer.settings.deliveryLimit != nil { consumer.warnIfLastDelivery(message) }
            if received.delivery.payload.count > consumer.settings.maxBody {
                consumer.tracing?.start(&message)
                await consumer.refuseOversized(message, connection: received.connection, watchdog: watchdog)
                consumer.busy.subtract(1, ordering: .relaxed)
                return [.requestMessage]
            }
            // The circuit breaker is open: back to the queue unstarted (counted out of busy here).
            guard let ticket = consumer.admit(received) else {
                consumer.busy.subtract(1, ordering: .relaxed)
                return [.requestMessage]
            }
            // Its span from here: a message the breaker turned away never started.
            consumer.tracing?.start(&message)
            inHand = InHand(received: received, message: message, watchdogID: nil, started: started, ticket: ticket)
            return machine.messageTaken(id: DeliveryID.next())
        }

        private mutating func send(_ id: String) -> [WorkerSlot.Action] {
            guard var hand = inHand, let request else { return [] }
            guard let watchdogID = watchdog.start(timeout: consumer.settings.timeout, consumer: consumer.settings.name,
                                                  delivery: hand.received.delivery, attempt: hand.message.attempt,
                                                  handle: WorkerStop(sink: sink, id: id), now: hand.started / 1_000_000) else {
                // Terminating: nothing new starts; the shutdown event follows.
                inHand = nil
                consumer.breakerAbandoned(hand.ticket)
                release(hand.received, hand.message, "warren is stopping, no worker started on it")
                return machine.messageWithdrawn()
            }
            if let pid { watchdog.setPID(watchdogID, pid) }
            hand.watchdogID = watchdogID
            inHand = hand
            sent += 1
            hand.message.trace?.event("handler started")
            workers.supervisor.write(MessageBody(Envelope(message: hand.message, id: id).jsonLine()), to: request,
                                     tag: hand.message.logID)
            return []
        }

        /// `answered`: the worker's own verdict, which stands even if the
        /// watchdog fired meanwhile (the worker finished the work); `reply`
        /// is its reply text, published when it acked.
        private mutating func settle(_ outcome: Outcome, reply: String?, answered: Bool) async {
            guard let hand = inHand else { return }
            inHand = nil
            hand.message.trace?.event("handler finished")
            let fired = hand.watchdogID.flatMap { watchdog.finish($0) }
            let stop = answered ? nil : fired
            consumer.metrics.handlerDuration.recordNanoseconds(monotonicNanoseconds() - hand.started)
            if await consumer.breakerSpares(hand.message, outcome: outcome, stop: stop, ticket: hand.ticket,
                                            connection: hand.received.connection, watchdog: watchdog) {
                consumer.busy.subtract(1, ordering: .relaxed)
                return
            }
            if stop == nil, case .ack = outcome {
                if consumer.settings.publishesOutput(of: hand.message.delivery.properties) {
                    // An answer without "reply" gets an empty one: the requester waits for an answer.
                    await consumer.publishOutput(hand.message, output: MessageBody(Array((reply ?? "").utf8)),
                                                 connection: hand.received.connection, watchdog: watchdog)
                } else {
                    consumer.ack(hand.message, on: hand.received.connection)
                }
            } else {
                await consumer.settle(hand.message, outcome: outcome, stop: stop, connection: hand.received.connection,
                                      watchdog: watchdog)
            }
            consumer.busy.subtract(1, ordering: .relaxed)
        }

        /// A drain: a delivery waiting for a worker has not started, and
        /// goes back now rather than when the worker has come and gone.
        private mutating func releaseHeld() {
            guard let held else { return }
            self.held = nil
            release(held, nil, "no worker was ready for it")
        }

        /// A delivery no worker got: back to the queue, no attempt spent.
        /// `message`: the one in hand, if it came that far.
        private func release(_ received: Received, _ message: Message?, level: Logger.Level = .info, _ why: String) {
            received.connection.nack(received.delivery, requeue: true)
            consumer.metrics.requeued.increment()
            consumer.busy.subtract(1, ordering: .relaxed)
            if let message {
                consumer.logOutcome(.released, message, level: level, level == .info ? "message released: \(why)" : "\(why)")
            } else {
                consumer.logUnstarted(received.delivery, "message released: \(why)")
            }
        }

        private mutating func spawn() async -> [WorkerSlot.Action] {
            generation += 1
            let generation = generation
            let sink = sink
            let lineLog = log
            let link = ProcessSupervisor.WorkerLink(
                id: workers.supervisor.newRequestID(),
                lineLimit: ProcessSupervisor.workerLineLimit(for: consumer.settings),
                events: { sink.yield(.worker(generation: generation, $0)) },
                stderr: { line, pid, message in
                    lineLog.notice("\(line)", metadata: ["stream": "stderr", "pid": "\(pid)",
                                                        "message_id": "\(message ?? "-")"])
                })
            do throws(ProcessSupervisor.SpawnError) {
                let pid = try await workers.supervisor.startWorker(
                    workers.argv, environment: HandlerEnvironment.forWorker(consumer.settings), link: link)
                request = link.id
                self.pid = pid
                sent = 0
                log.debug("worker started", metadata: ["pid": "\(pid)"])
                return machine.spawned()
            } catch {
                return machine.spawnFailed(error.description)
            }
        }

        static func describe(_ termination: ProcessSupervisor.Termination) -> String {
            switch termination.status {
            case .exited(let code): "exit code \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }
}

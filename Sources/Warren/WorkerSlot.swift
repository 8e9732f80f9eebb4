/// One persistent worker slot of a consumer, as a value: which process it
/// has (starting, ready, busy with a message, ending), what happens to the
/// message in hand, and when a new process starts. The slot's task feeds it
/// events (a line on stdout, the process's exit, a timer, the drain) and
/// carries out the actions it returns, so every transition is a unit test
/// without processes or sleeps (`WorkerSlotTests`).
///
/// The rules (README, "Writing a persistent worker"):
/// - startup is never charged to a message: a message is asked for only
///   once the worker said `{"ready":true}`;
/// - a worker that fails to start (exits, says something else, or is
///   silent past `startup_timeout`), or dies before finishing its first
///   message, is restarted after a backoff that doubles, never in a tight
///   loop; a worker that finished a message is replaced at once;
/// - anything on stdout that is not the answer to the message in hand is a
///   protocol error: the worker is terminated and the message retried;
/// - a worker dying with a message in hand: the message is retried;
/// - `max_messages`: after that many answers, stdin is closed (end of file
///   means "exit now") and a new worker starts once it has gone;
/// - drain: no new message; the one in hand finishes; then end of file,
///   and `kill_after` later SIGTERM to the group (SIGKILL after another
///   `kill_after`, by the process supervisor).
struct WorkerSlot: Equatable {
    enum State: Equatable {
        /// No process, none wanted yet.
        case empty
        /// Spawned; waiting for `{"ready":true}` (timer: `startup_timeout`).
        case starting
        /// Ready, waiting for a message (asked for).
        case ready
        /// A message in hand, sent on stdin.
        case busy(id: String)
        /// The process was asked to go and is waited for.
        case ending(Ending)
        /// Failed to start; the next start waits for the timer.
        case backingOff
        /// Drained: no process, nothing in hand; the slot is over.
        case done
    }

    enum Ending: Equatable {
        /// `max_messages` (or `max_memory`) reached: end of file; a new worker follows at once.
        case recycle
        /// Terminated (protocol error, timeout, startup failure); a new
        /// worker follows, after a backoff if it never finished a message.
        case replace
        /// The consumer drains: end of file; no new worker.
        case drain
    }

    enum Timer: Equatable {
        /// `startup_timeout` for the ready line.
        case startup
        /// Before the next start; `attempt` counts failures in a row from 0.
        case backoff(attempt: Int)
        /// `kill_after` after end of file: then SIGTERM.
        case escalation
    }

    enum Action: Equatable {
        /// Start a worker process; answer with `spawned` or `spawnFailed`.
        case spawn
        /// Call `alarm(token)` when this timer is due; a newer timer replaces it.
        case arm(Timer, token: Int)
        /// The worker is ready: the consumer may count it (readiness).
        case becameReady
        /// Ask the consumer's buffer for a message; answer with `messageTaken`.
        case requestMessage
        /// Write the message's envelope to stdin, with this id.
        case send(id: String)
        /// The worker answered the message in hand: settle it as it says,
        /// even if the watchdog fired meanwhile (the work is done); `reply`
        /// is the answer's reply text, published when the outcome is ack.
        case answered(Outcome, reply: String? = nil)
        /// The message in hand failed (the worker died or was stopped
        /// holding it): settle it so, the watchdog's verdict first.
        case settle(Outcome)
        /// The message in hand never reached the worker (it exited or
        /// closed its stdin before reading it): back to the queue, no
        /// attempt spent.
        case release
        /// End of file on stdin: exit now.
        case closeInput
        /// SIGTERM to the group, SIGKILL after `kill_after`.
        case terminate
        /// Log: the worker broke the protocol (why, with the line's start).
        case protocolError(String)
        /// Log, and tell readiness: the worker did not start, and why.
        case startFailed(String)
        /// Log: the worker exited while it held no message.
        case exitedIdle(String)
        /// The slot is over (drained).
        case finish
    }

    /// Messages this worker may answer before it is recycled; 0 = no limit.
    let maxMessages: Int

    private(set) var state: State = .empty
    /// The message in hand, by its envelope id, until settled.
    private(set) var inHand: String? = nil
    /// Answers from the current process.
    private(set) var handled = 0
    /// Failed starts in a row: the backoff's attempt.
    private(set) var failedStarts = 0
    /// The current process was sent SIGTERM (once is enough).
    private(set) var terminated = false
    /// No new worker or message: the consumer drains.
    private(set) var draining = false
    /// The one timer that counts; older alarms are ignored.
    private(set) var timer = 0
    /// Why the message in hand fails once the worker has gone: the worker
    /// broke the protocol holding it. Settled only at its exit, so the
    /// message never runs elsewhere while this worker may still work on it.
    private(set) var failureOnExit: Failure? = nil
    /// Found over `max_memory` as it answered: recycled after this answer.
    private(set) var recycleAfterAnswer = false
    /// The current (or last) process said ready: a failure after that is
    /// not a failed start for the consumer's hold (`PersistentWorkers`).
    private(set) var wasReady = false

    init(maxMessages: Int) { self.maxMessages = maxMessages }

    /// Whether a message that comes while no worker is ready should wait
    /// for one here: only if a worker will be asked for it without a timer
    /// (one starting, or one replaced at once). Otherwise it goes back to
    /// the queue, to a slot that can run it now.
    var expectsAWorkerSoon: Bool {
        guard !draining else { return false }
        switch state {
        case .starting, .ending(.recycle): return true
        case .ending(.replace): return handled > 0
        case .empty, .ready, .busy, .ending(.drain), .backingOff, .done: return false
        }
    }

    private mutating func arm(_ kind: Timer) -> Action {
        timer += 1
        return .arm(kind, token: timer)
    }

    /// The slot starts: its first worker.
    mutating func begin() -> [Action] {
        precondition(state == .empty, "WorkerSlot: begin in state \(state)")
        return start()
    }

    private mutating func start() -> [Action] {
        state = .starting
        handled = 0
        terminated = false
        recycleAfterAnswer = false
        wasReady = false
        return [.spawn]
    }

    /// The process exists; its ready line is awaited.
    mutating func spawned() -> [Action] {
        guard state == .starting else { return [] }
        return [arm(.startup)]
    }

    /// The process could not be spawned at all.
    mutating func spawnFailed(_ why: String) -> [Action] {
        guard state == .starting else { return [] }
        return failedStart(why)
    }

    private mutating func failedStart(_ why: String) -> [Action] {
        failedStarts += 1
        if draining {
            state = .done
            return [.startFailed(why), .finish]
        }
        state = .backingOff
        return [.startFailed(why), arm(.backoff(attempt: failedStarts - 1))]
    }

    /// A line on the worker's stdout.
    mutating func line(_ line: WorkerLine) -> [Action] {
        switch state {
        case .starting:
            guard line == .ready else {
                state = .ending(.replace)
                terminated = true
                return [.protocolError(Self.describe(line, expected: "{\"ready\":true}")), .terminate]
            }
            state = .ready
            failedStarts = 0
            wasReady = true
            timer += 1  // the startup timer no longer counts
            if draining { return [.becameReady] + retire(.drain) }
            return [.becameReady, .requestMessage]
        case .ready:
            state = .ending(.replace)
            terminated = true
            return [.protocolError(Self.describe(line, expected: "nothing (no message in hand)")), .terminate]
        case .busy(let id):
            guard case .answer(let answer) = line, answer.id == id else {
                let why = Self.describe(line, expected: "the answer to message \(id)")
                return replaceHolding(why: why)
            }
            inHand = nil
            handled += 1
            var actions: [Action] = [.answered(answer.outcome, reply: answer.reply)]
            if draining {
                actions += retire(.drain)
            } else if recycleAfterAnswer || (maxMessages > 0 && handled >= maxMessages) {
                actions += retire(.recycle)
            } else {
                state = .ready
                actions.append(.requestMessage)
            }
            return actions
        case .ending(.replace):
            // The answer to the message in hand, come after all (past its
            // timeout, or after a stray line): the work is done.
            guard case .answer(let answer) = line, let id = inHand, answer.id == id else { return [] }
            inHand = nil
            failureOnExit = nil
            handled += 1
            return [.answered(answer.outcome, reply: answer.reply)]
        case .ending, .empty, .backingOff, .done:
            // Late words of a worker on its way out: nothing depends on them.
            return []
        }
    }

    /// The worker broke the protocol holding a message: it is terminated,
    /// and the message fails once it has gone.
    private mutating func replaceHolding(why: String) -> [Action] {
        state = .ending(.replace)
        terminated = true
        failureOnExit = Failure(reason: "protocol error: \(why)")
        return [.protocolError(why), .terminate]
    }

    /// The worker closed its stdin or stdout and lives on: it can take no
    /// message, or answer none. Replaced like any protocol breaker; the
    /// message in hand, if any, is retried.
    mutating func closedPipe(_ pipe: String) -> [Action] {
        let why = "the worker closed its \(pipe) but did not exit"
        switch state {
        case .starting, .ready:
            state = .ending(.replace)
            terminated = true
            return [.protocolError(why), .terminate]
        case .busy(let id):
            return replaceHolding(why: "\(why) (holding message \(id))")
        case .ending, .empty, .backingOff, .done:
            // On its way out already (end of file was ours to send).
            return []
        }
    }

    /// The worker is over its `max_memory`, measured as its answer came
    /// in (before the answer is fed): recycled after it, and never sent
    /// another message first.
    mutating func overMemory() -> [Action] {
        guard !draining else { return [] }
        switch state {
        case .ready: return retire(.recycle)
        case .busy:
            recycleAfterAnswer = true
            return []
        default: return []
        }
    }

    /// End of file on stdin; SIGTERM `kill_after` later if it is still there.
    private mutating func retire(_ ending: Ending) -> [Action] {
        state = .ending(ending)
        return [.closeInput, arm(.escalation)]
    }

    /// A message for the ready worker; `id` is warren's id for this
    /// delivery (`DeliveryID`), the envelope's `id`.
    mutating func messageTaken(id: String) -> [Action] {
        precondition(state == .ready, "WorkerSlot: messageTaken in state \(state)")
        state = .busy(id: id)
        inHand = id
        return [.send(id: id)]
    }

    /// The message could not be sent after all (the watchdog had fired):
    /// it went back to the queue, and the worker is idle again.
    mutating func messageWithdrawn() -> [Action] {
        guard case .busy = state else { return [] }
        state = .ready
        inHand = nil
        return []
    }

    /// The watchdog stopped the message in hand (timeout, or the end of
    /// the grace period): the worker is terminated; the message is
    /// settled when it has gone.
    mutating func watchdogStopped() -> [Action] {
        guard case .busy = state else { return [] }
        state = .ending(.replace)
        terminated = true
        return [.terminate]
    }

    /// The worker's process group is gone, with `status` (for the log);
    /// `unread` when the message in hand never reached it whole.
    mutating func exited(_ status: String, unread: Bool = false) -> [Action] {
        var actions: [Action] = []
        let held = inHand
        let failure = failureOnExit
        inHand = nil
        failureOnExit = nil
        switch state {
        case .starting:
            return failedStart("exited before it was ready (\(status))")
        case .ready:
            actions.append(.exitedIdle(status))
        case .busy(let id):
            actions.append(unread ? .release : .settle(.retry(Failure(reason: "the worker died holding message \(id) (\(status))"))))
        case .ending(.replace):
            if held != nil {
                if unread {
                    actions.append(.release)
                } else {
                    actions.append(.settle(.retry(failure ?? Failure(reason: "the worker was terminated holding the message (\(status))",
                                                                   timedOut: true))))
                }
            }
        case .ending(.recycle), .ending(.drain):
            break
        case .empty, .backingOff, .done:
            preconditionFailure("WorkerSlot: exited in state \(state)")
        }
        if draining || state == .ending(.drain) {
            state = .done
            return actions + [.finish]
        }
        // A worker that never finished a message has not really started:
        // restarting it at once could spin.
        if handled == 0 {
            failedStarts += 1
            state = .backingOff
            let why = "exited before finishing a message (\(status))"
            return actions + [.startFailed(why), arm(.backoff(attempt: failedStarts - 1))]
        }
        failedStarts = 0
        return actions + start()
    }

    /// A timer armed by `arm` is due; an older one is ignored.
    mutating func alarm(_ token: Int) -> [Action] {
        guard token == timer else { return [] }
        switch state {
        case .starting:
            state = .ending(.replace)
            terminated = true
            return [.startFailed("not ready within startup_timeout"), .terminate]
        case .backingOff:
            if draining {
                state = .done
                return [.finish]
            }
            return start()
        case .ending(.drain), .ending(.recycle):
            guard !terminated else { return [] }
            terminated = true
            return [.terminate]
        default:
            return []
        }
    }

    /// The consumer drains: no new message or worker.
    mutating func drain() -> [Action] {
        guard !draining else { return [] }
        draining = true
        switch state {
        case .empty, .backingOff:
            state = .done
            return [.finish]
        case .starting, .ready:
            return retire(.drain)
        case .ending(.recycle):
            state = .ending(.drain)
            return []
        case .busy, .ending, .done:
            return []
        }
    }

    /// The end of the grace period (or a second stop, or quit): drains, and
    /// a worker still there is terminated now. The message in hand, if any,
    /// is the watchdog's (`watchdogStopped`).
    mutating func shutdown() -> [Action] {
        var actions = drain()
        if case .ending = state, !terminated, inHand == nil {
            terminated = true
            actions.append(.terminate)
        }
        return actions
    }

    /// A protocol error's log text: what came instead of what.
    static func describe(_ line: WorkerLine, expected: String) -> String {
        switch line {
        case .ready: return "expected \(expected), got {\"ready\":true}"
        case .answer(let answer): return "expected \(expected), got an answer to message \(WorkerLine.excerpt(answer.id.utf8))"
        case .invalid(let why, let excerpt): return "expected \(expected), got a line that is \(why): \(excerpt)"
        }
    }
}

import AMQP
import CWarrenSupport
import DequeModule
import Glibc

/// The process supervisor's thread and its state. Touched only by that thread.
///
/// Each turn does bounded work: one read of at most `readChunk` bytes per
/// output pipe (so at most that many log lines, each of which costs a log
/// write), stdin written until its pipe is full, then back to poll(2). A
/// child that writes without end is thus read in turn with everything else,
/// never until it stops.
final class SupervisorLoop {
    struct Output {
        var fd: Int32
        let stream: ProcessSupervisor.Stream
        var lines: OutputLineSplitter
    }

    /// Who waits for a child: a handler command's one job, or the owner of
    /// a persistent worker.
    enum Owner {
        case job(ProcessSupervisor.Job)
        case worker(ProcessSupervisor.WorkerLink)
    }

    /// A running child: its description, who waits for it, and what the
    /// running process has.
    final class Child {
        let spec: ProcessSupervisor.ChildSpec
        let owner: Owner
        let pid: pid_t
        var pidfd: Int32
        var stdinFD: Int32
        /// What is still to be written to stdin, in order; `inputOffset` into the first.
        var inputs = Deque<MessageBody>()
        var inputOffset = 0
        /// Close stdin once `inputs` is written: at once for a job (its one
        /// message), on `closeInput` for a worker.
        var closeWhenWritten: Bool
        var outputs: [Output]
        /// A worker's stdout: protocol lines, not logged.
        var protocolLines: WorkerLineSplitter?
        /// A worker's message in hand, for its stderr lines.
        var tag: String? = nil
        /// A worker's messages taken for its stdin; bytes of the last one
        /// written to the pipe; and, once stdin is closed, what was left
        /// unread in it. The last message reached the worker if it read at
        /// least one of its bytes (a worker that dies on a message it read
        /// in part was still handed it: the attempt counts).
        var writes = 0
        var currentWritten = 0
        var unreadAtClose = 0
        /// Once a worker is told to go (end of file, SIGTERM): how many more
        /// stdout lines its owner hears (a late answer), so one that floods
        /// stdout on its way out costs this thread reads, not its owner.
        var linesLeft: Int? = nil
        /// Answers (or what may be one) it may still write then: few, but
        /// never cut off by chatter.
        var answersLeft = SupervisorLoop.answersAfterEnd
        /// A worker closed its stdin or stdout (which, and when): reported
        /// once, if its leader is still alive `pipeGraceMs` later.
        var closedPipe: (pipe: String, at: Int64)? = nil
        var closedPipeReported = false
        var phase = ChildPhase()
        /// A job's stdout kept for a reply, not logged; nil when logged.
        var captured: [UInt8]? = nil
        var captureLimit = 0
        var captureOverLimit = false
        /// stdout was still open, and empty, once the group was gone.
        var captureIncomplete = false
        let request: Int
        let sink: ProcessSupervisor.LineSink

        init(spec: ProcessSupervisor.ChildSpec, owner: Owner, spawned: ProcessSupervisor.Spawned, outputLimit: Int) {
            self.spec = spec
            self.owner = owner
            pid = spawned.pid
            pidfd = spawned.pidfd
            stdinFD = spawned.stdin
            outputs = [Output(fd: spawned.stdout, stream: .stdout, lines: OutputLineSplitter(limit: outputLimit)),
                       Output(fd: spawned.stderr, stream: .stderr, lines: OutputLineSplitter(limit: outputLimit))]
            switch owner {
            case .job(let job):
                request = job.id
                sink = job.sink
                if let limit = job.captureLimit {
                    captured = []
                    captureLimit = limit
                }
                inputs.append(job.input)
                closeWhenWritten = true
            case .worker(let link):
                request = link.id
                let stderr = link.stderr
                let pid = spawned.pid
                sink = { _, line in stderr(line, pid, nil) }
                closeWhenWritten = false
                protocolLines = WorkerLineSplitter(limit: link.lineLimit)
            }
        }

        /// Keeps stdout for a reply up to the limit; past it, keeps reading
        /// (so the handler is not blocked on a full pipe) and drops the rest.
        func capture(_ bytes: ArraySlice<UInt8>) {
            guard !captureOverLimit else { return }
            if captured!.count + bytes.count > captureLimit {
                captureOverLimit = true
                captured = []
                return
            }
            captured!.append(contentsOf: bytes)
        }
    }

    /// A child of warren it did not spawn: a process that left a handler's
    /// group and came back to warren, the subreaper, when its parent died.
    final class Leftover {
        let pid: pid_t
        /// -1 when none could be opened: then polled.
        var pidfd: Int32
        /// Requests running when it was found; it is killed once all have finished.
        var owners: Set<Int>
        var killed = false

        init(pid: pid_t, pidfd: Int32, owners: Set<Int>) {
            self.pid = pid
            self.pidfd = pidfd
            self.owners = owners
        }
    }

    /// Bytes read from one pipe per turn.
    static let readChunk = 4096
    /// Reads of one pipe at the end of a handler (a full pipe holds 64 KiB),
    /// past which the rest is dropped.
    static let finalReads = 64
    /// Poll interval for whatever has no pidfd, and for groups being emptied.
    static let pollMs: Int64 = 10
    /// How long a worker that closed a pipe may take to exit before that
    /// counts as a broken protocol: an exiting process closes its pipes
    /// before the kernel reports its exit, and a crash should read as one.
    static let pipeGraceMs: Int64 = 200

    let outputLimit: Int
    let inbox: WakeableInbox<ProcessSupervisor.Command>
    let openPidfd: ProcessSupervisor.PidfdOpener
    var children: [pid_t: Child] = [:]
    /// Terminations that came before their spawn was handled, by request:
    /// kill_after, and when it came. A termination for a request that had
    /// already finished looks the same, and is forgotten after
    /// `earlyTerminationMs` (a spawn follows its termination within
    /// moments, or never), so they cannot pile up.
    var earlyTerminations: [Int: (killAfterMs: Int64, at: Int64)] = [:]
    static let earlyTerminationMs: Int64 = 60_000
    /// Running children by the request that spawned them.
    var pidOf: [Int: pid_t] = [:]
    var leftovers: [pid_t: Leftover] = [:]
    /// Set when a child of warren exited: orphans may have come back to it.
    var lookForLeftovers = false
    /// While a persistent worker lives, no leader may exit for a long time,
    /// yet its children come back to warren as they are orphaned (and, once
    /// they exit, stay zombies): looked for this often regardless.
    static let leftoverScanMs: Int64 = 1000
    var nextLeftoverScan: Int64 = 0
    /// Every worker group's resident memory at the last scan of /proc, and when.
    var groupRSS: [pid_t: Int] = [:]
    var groupRSSAt: Int64 = .min / 2
    var scratch = [UInt8](repeating: 0, count: SupervisorLoop.readChunk)
    /// The poll(2) set, kept between turns so that a turn allocates nothing.
    private var set = PollSet()
    /// The last poll(2) said the wake-up pipe had something: only then is
    /// it read (a read that finds it empty is a system call per turn).
    private var wakeReady = true
    /// The inbox's commands of this turn (kept, like `set`).
    private var commands: [ProcessSupervisor.Command] = []
    /// Set by `shutdown`: who waits for the thread's end. Once set, the
    /// loop only kills and reaps, and ends when nothing is left.
    var stopping: [@Sendable (pid_t) -> Void]? = nil
    /// When a shutdown stops waiting for what it killed: a process stuck in
    /// the kernel (D state) ignores SIGKILL, and warren's exit must not
    /// wait for it.
    var stopGiveUpAt: Int64 = .max
    /// How long a shutdown waits for what it killed to be reaped.
    static let shutdownWaitMs: Int64 = 5_000

    init(outputLimit: Int, inbox: WakeableInbox<ProcessSupervisor.Command>, openPidfd: @escaping ProcessSupervisor.PidfdOpener) {
        self.outputLimit = outputLimit
        self.inbox = inbox
        self.openPidfd = openPidfd
    }

    /// What one entry of the poll(2) set stands for.
    private enum PollSlot {
        /// The inbox's wake-up pipe: commands.
        case wake
        /// A child's pidfd: its leader exited.
        case leader(Child)
        /// A child's stdin has room for more of its message.
        case stdin(Child)
        /// A child's stdout or stderr (index into `outputs`) has something.
        case output(Child, Int)
        /// A leftover's pidfd: it exited.
        case leftover(Leftover)
    }

    /// The poll(2) set of one turn, and what each entry stands for.
    private struct PollSet {
        var fds: [pollfd] = []
        var slots: [PollSlot] = []

        mutating func add(_ fd: Int32, _ events: Int32, _ slot: PollSlot) {
            fds.append(pollfd(fd: fd, events: Int16(events), revents: 0))
            slots.append(slot)
        }

        /// Empty, its storage kept (and its children released).
        mutating func removeAll() {
            fds.removeAll(keepingCapacity: true)
            slots.removeAll(keepingCapacity: true)
        }
    }

    func run() {
        let tid = warren_gettid()
        _ = ProcessSupervisor.threads.withLock { $0.insert(tid) }
        // A child that exits before reading its whole stdin makes our write
        // fail with EPIPE, never kill warren, whatever the process does with SIGPIPE.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        while stopping == nil || ((!children.isEmpty || !leftovers.isEmpty) && monotonicMilliseconds() < stopGiveUpAt) {
            turn()
        }
        abandonUnreaped()
        // Every command that came after the shutdown is refused, and the
        // supervisor's pipe goes with the inbox's last reference.
        for command in inbox.close() { refuse(command) }
        _ = ProcessSupervisor.threads.withLock { $0.remove(tid) }
        for done in stopping ?? [] { done(tid) }
    }

    private func turn() {
        inbox.takeAll(into: &commands, drainWakeUp: wakeReady)
        wakeReady = false
        for command in commands { apply(command) }
        commands.removeAll(keepingCapacity: true)

        set.removeAll()
        if stopping == nil { set.add(inbox.readFD, POLLIN, .wake) }
        for child in children.values {
            if child.pidfd >= 0 { set.add(child.pidfd, POLLIN, .leader(child)) }
            if child.stdinFD >= 0, !child.inputs.isEmpty { set.add(child.stdinFD, POLLOUT, .stdin(child)) }
            for (index, output) in child.outputs.enumerated() where output.fd >= 0 {
                set.add(output.fd, POLLIN, .output(child, index))
            }
        }
        for leftover in leftovers.values where leftover.pidfd >= 0 {
            set.add(leftover.pidfd, POLLIN, .leftover(leftover))
        }
        if poll(&set.fds, nfds_t(set.fds.count), nextTimeout()) > 0 {
            for (slot, fd) in zip(set.slots, set.fds) where fd.revents != 0 {
                switch slot {
                case .wake: wakeReady = true  // emptied by the next takeAll
                case .leader(let child): reapLeader(child)
                case .stdin(let child): writeInput(child)
                case .output(let child, let output): readOutput(child, index: output)
                case .leftover(let leftover): reap(leftover)
                }
            }
        }
        // Whatever has no pidfd is polled.
        for child in children.values where child.pidfd < 0 && child.phase.leader == nil { reapLeader(child) }
        for leftover in Array(leftovers.values) where leftover.pidfd < 0 { reap(leftover) }
        if !lookForLeftovers, hasWorkers, monotonicMilliseconds() >= nextLeftoverScan { lookForLeftovers = true }
        if lookForLeftovers {
            lookForLeftovers = false
            nextLeftoverScan = monotonicMilliseconds() + Self.leftoverScanMs
            findLeftovers()
        }
        if stopping != nil {
            for leftover in leftovers.values where !leftover.killed { killLeftover(leftover) }
        }
        for child in Array(children.values) { advance(child) }
    }

    private func apply(_ command: ProcessSupervisor.Command) {
        if stopping != nil { return refuse(command) }
        switch command {
        case .spawn(let spec, let job):
            let spawned: ProcessSupervisor.Spawned
            do throws(ProcessSupervisor.SpawnError) {
                spawned = try ProcessSupervisor.spawn(spec.argv, environment: spec.environment, openPidfd: openPidfd)
            } catch {
                earlyTerminations[job.id] = nil
                job.continuation.resume(returning: .failure(error))
                return
            }
            _ = ProcessSupervisor.leaders.withLock { $0.insert(spawned.pid) }
            job.onStart?(spawned.pid)
            let child = adopt(spawned, spec: spec, owner: .job(job))
            if job.input.isEmpty { closeInput(child) }
        case .startWorker(let spec, let link, let started):
            let spawned: ProcessSupervisor.Spawned
            do throws(ProcessSupervisor.SpawnError) {
                spawned = try ProcessSupervisor.spawn(spec.argv, environment: spec.environment, worker: spec.worker, openPidfd: openPidfd)
            } catch {
                earlyTerminations[link.id] = nil
                started(.failure(error))
                return
            }
            _ = ProcessSupervisor.leaders.withLock { $0.insert(spawned.pid) }
            started(.success(spawned.pid))
            adopt(spawned, spec: spec, owner: .worker(link))
        case .write(let request, let bytes, let tag):
            guard let pid = pidOf[request], let child = children[pid] else { return }
            child.writes += 1
            child.currentWritten = 0
            guard child.stdinFD >= 0, !child.closeWhenWritten else { return }
            // What the worker wrote on stderr before this message is its
            // previous message's: read now, even when the turn that read its
            // answer found stderr empty (a worker's stderr may be written
            // asynchronously, as Node's is, and land after its answer).
            var reads = 0
            while reads < Self.finalReads, readOutput(child, index: 1) { reads += 1 }
            child.inputs.append(bytes)
            child.outputs[1].lines.renewBudget()
            child.tag = tag
        case .closeInput(let request):
            guard let pid = pidOf[request], let child = children[pid] else { return }
            child.closeWhenWritten = true
            child.linesLeft = min(child.linesLeft ?? Self.linesAfterEnd, Self.linesAfterEnd)
            if child.inputs.isEmpty { closeInput(child) }
        case .terminate(let request, let killAfterMs):
            if let pid = pidOf[request], let child = children[pid] {
                terminate(child, killAfterMs: killAfterMs)
            } else {
                let now = monotonicMilliseconds()
                earlyTerminations = earlyTerminations.filter { now - $0.value.at < Self.earlyTerminationMs }
                earlyTerminations[request] = (killAfterMs, now)
            }
        case .measure(let request, let answer):
            guard let pid = pidOf[request], children[pid]?.phase.leader == nil else { return answer(nil) }
            let now = monotonicMilliseconds()
            if now - groupRSSAt >= ProcessMemory.groupScanMs {
                let workers = Set(children.values.compactMap { child -> pid_t? in
                    if case .worker = child.owner { child.pid } else { nil }
                })
                groupRSS = ProcessMemory.groupRSS(workers) ?? [:]
                groupRSSAt = now
            }
            let leader = ProcessMemory.processRSS(pid)
            answer(max(leader ?? 0, groupRSS[pid] ?? 0))
        case .shutdown(let done):
            stopping = [done]
            earlyTerminations = [:]
            // Commands queued after this one are refused, as are later ones.
            for command in inbox.close() { refuse(command) }
            for child in children.values {
                terminate(child, killAfterMs: 0)
                // One already terminating would otherwise wait out its kill_after.
                kill(-child.pid, SIGKILL)
            }
            stopGiveUpAt = monotonicMilliseconds() + Self.shutdownWaitMs
            // Orphans not yet noticed are found and killed too.
            lookForLeftovers = true
        }
    }

    /// Enters a spawned child in the loop's records.
    @discardableResult
    private func adopt(_ spawned: ProcessSupervisor.Spawned, spec: ProcessSupervisor.ChildSpec, owner: Owner) -> Child {
        let child = Child(spec: spec, owner: owner, spawned: spawned, outputLimit: outputLimit)
        if spawned.pidfd < 0 {
            child.sink(.stderr, "[warren: no pidfd for this handler (\(String(cString: strerror(spawned.pidfdError)))); watching it by polling]")
        }
        children[spawned.pid] = child
        pidOf[child.request] = spawned.pid
        if let early = earlyTerminations.removeValue(forKey: child.request) { terminate(child, killAfterMs: early.killAfterMs) }
        return child
    }

    /// The shutdown's wait is over and something would not die: it is
    /// named in the log, and whoever waits for a child is answered.
    private func abandonUnreaped() {
        for child in Array(children.values) {
            child.sink(.stderr, "[warren: process group \(child.pid) survived SIGKILL for \(Self.shutdownWaitMs) ms at shutdown (stuck in the kernel?); not waiting longer]")
            if child.pidfd >= 0 { close(child.pidfd) }
            child.pidfd = -1
            finish(child, status: child.phase.leader ?? .signaled(SIGKILL), terminated: true)
        }
        for leftover in leftovers.values where leftover.pidfd >= 0 { close(leftover.pidfd) }
        leftovers = [:]
    }

    /// A command that came after the shutdown.
    private func refuse(_ command: ProcessSupervisor.Command) {
        switch command {
        case .spawn(_, let job): job.continuation.resume(returning: .failure(ProcessSupervisor.shutDown))
        case .startWorker(_, _, let started): started(.failure(ProcessSupervisor.shutDown))
        case .terminate, .write, .closeInput: break  // its child, if any, is being killed
        case .measure(_, let answer): answer(nil)
        case .shutdown(let done): stopping?.append(done)
        }
    }

    /// Lines of stdout a worker told to go may still write to its owner.
    static let linesAfterEnd = 16

    /// Answer-looking lines a worker told to go may still write to its owner.
    static let answersAfterEnd = 4

    /// An object with an `"id"` key, in any order: the one kind of line
    /// that must reach the owner however much else the worker wrote.
    static func looksLikeAnswer(_ piece: WorkerLineSplitter.Piece) -> Bool {
        guard case .line(let bytes) = piece else { return false }
        guard bytes.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) == UInt8(ascii: "{") else { return false }
        let key = Array(#""id""#.utf8)
        guard bytes.count >= key.count else { return false }
        for start in 0...(bytes.count - key.count) where bytes[start] == key[0] {
            if bytes[start..<(start + key.count)].elementsEqual(key) { return true }
        }
        return false
    }

    private func terminate(_ child: Child, killAfterMs: Int64) {
        if case .worker = child.owner { child.linesLeft = min(child.linesLeft ?? Self.linesAfterEnd, Self.linesAfterEnd) }
        perform(child.phase.terminate(now: monotonicMilliseconds(), killAfterMs: killAfterMs), for: child)
    }

    /// Carries out what a child's phase decided.
    private func perform(_ actions: [ChildPhase.Action], for child: Child) {
        for action in actions {
            switch action {
            case .signal(let signal):
                kill(-child.pid, signal)
            case .noteLeftInGroup:
                child.sink(.stderr, "[warren: the handler exited but left processes in its group; killing them]")
            case .noteGaveUp:
                child.sink(.stderr, "[warren: process group \(child.pid) still has members after SIGKILL; not waiting longer]")
            case .report(let status, let terminated):
                finish(child, status: status, terminated: terminated)
            }
        }
    }

    private var hasWorkers: Bool {
        children.values.contains { if case .worker = $0.owner { true } else { false } }
    }

    private func nextTimeout() -> Int32 {
        let now = monotonicMilliseconds()
        var soonest: Int64? = nil
        func consider(_ deadline: Int64) { soonest = min(soonest ?? deadline, deadline) }
        if hasWorkers { consider(nextLeftoverScan) }
        for child in children.values {
            if let deadline = child.phase.deadline { consider(deadline) }
            // Stragglers of a finished leader, and leaders without a pidfd, are checked by polling.
            if child.phase.waitingForGroup || child.pidfd < 0 { consider(now + Self.pollMs) }
            if let closed = child.closedPipe, !child.closedPipeReported { consider(closed.at + Self.pipeGraceMs) }
        }
        if lookForLeftovers || leftovers.values.contains(where: { $0.pidfd < 0 }) { consider(now + Self.pollMs) }
        // Leftovers killed at shutdown are waited for even without a pidfd event.
        if stopping != nil { consider(now + Self.pollMs) }
        guard let soonest else { return -1 }
        return Int32(max(0, min(soonest - now, 1000)))
    }

    private func reapLeader(_ child: Child) {
        var status: Int32 = 0
        let rc = waitpid(child.pid, &status, WNOHANG)
        guard rc == child.pid else { return }
        let exitCode = (status >> 8) & 0xff
        let signal = status & 0x7f
        child.phase.leaderExited(signal == 0 ? .exited(exitCode) : .signaled(signal))
        if child.pidfd >= 0 { close(child.pidfd) }
        child.pidfd = -1
        lookForLeftovers = true
    }

    private func writeInput(_ child: Child) {
        while let input = child.inputs.first {
            while child.inputOffset < input.count {
                let written = input.withUnsafeBytes { raw in
                    write(child.stdinFD, raw.baseAddress! + child.inputOffset, input.count - child.inputOffset)
                }
                if written > 0 {
                    child.inputOffset += written
                    child.currentWritten += written
                    continue
                }
                if written < 0 && (errno == EAGAIN || errno == EINTR) { return }
                // EPIPE: the command does not want the rest (a worker: no more messages).
                noteClosedPipe(child, "stdin")
                child.inputs.removeAll()
                child.inputOffset = 0
                closeInput(child)
                return
            }
            child.inputs.removeFirst()
            child.inputOffset = 0
        }
        if child.closeWhenWritten { closeInput(child) }
    }

    private func closeInput(_ child: Child) {
        if child.stdinFD >= 0, case .worker = child.owner {
            child.unreadAtClose = max(0, Int(warren_pipe_unread(child.stdinFD)))
        }
        if child.stdinFD >= 0 { close(child.stdinFD) }
        child.stdinFD = -1
        child.inputs.removeAll()
    }

    /// One read of one pipe; at end of stream, the last line and the close.
    /// Returns false once the pipe is closed or empty for now.
    @discardableResult
    private func readOutput(_ child: Child, index: Int) -> Bool {
        let fd = child.outputs[index].fd
        guard fd >= 0 else { return false }
        let count = scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        let stream = child.outputs[index].stream
        let limit = outputLimit
        let emit: (String?) -> Void = { line in
            let text = line ?? OutputLineSplitter.notice(stream.rawValue, limit: limit)
            if case .worker(let link) = child.owner { link.stderr(text, child.pid, child.tag) } else { child.sink(stream, text) }
        }
        if count > 0 {
            if stream == .stdout, child.captured != nil {
                child.capture(scratch[0..<count])
            } else if stream == .stdout, case .worker(let link) = child.owner {
                child.protocolLines?.feed(scratch[0..<count]) { piece in
                    // An answer is never cut off: a worker told to go may
                    // still finish the message in hand after some chatter.
                    if let left = child.linesLeft {
                        if Self.looksLikeAnswer(piece) {
                            guard child.answersLeft > 0 else { return }
                            child.answersLeft -= 1
                        } else {
                            guard left > 0 else { return }
                            child.linesLeft = left - 1
                        }
                    }
                    link.events(.stdout(piece))
                }
            } else {
                child.outputs[index].lines.feed(scratch[0..<count], emit: emit)
            }
            return true
        }
        if count < 0 && (errno == EAGAIN || errno == EINTR) { return false }
        if stream == .stdout { noteClosedPipe(child, "stdout") }
        child.outputs[index].lines.finish(emit: emit)
        close(fd)
        child.outputs[index].fd = -1
        return false
    }

    /// A worker's stdin or stdout is gone: reported by `advance` unless the
    /// worker exits within `pipeGraceMs`. A job's pipes end with the job.
    private func noteClosedPipe(_ child: Child, _ pipe: String) {
        guard case .worker = child.owner, child.closedPipe == nil, child.phase.leader == nil else { return }
        child.closedPipe = (pipe, monotonicMilliseconds())
    }

    /// Moves a child on: kill escalation, a worker's closed pipe, and once
    /// its leader has exited, the wait for its group.
    private func advance(_ child: Child) {
        let time = monotonicMilliseconds()
        if let closed = child.closedPipe, !child.closedPipeReported, child.phase.leader == nil,
           time - closed.at >= Self.pipeGraceMs, case .worker(let link) = child.owner {
            child.closedPipeReported = true
            link.events(.closedPipe(closed.pipe))
        }
        perform(child.phase.tick(now: time), for: child)
        guard child.phase.waitingForGroup else { return }
        // Reap members of this group that were reparented to us (subreaper).
        var ignored: Int32 = 0
        while waitpid(-child.pid, &ignored, WNOHANG) > 0 {}
        perform(child.phase.groupChecked(alive: kill(-child.pid, 0) == 0, now: time), for: child)
    }

    /// The child's group is gone (or given up on): its last output, its
    /// descriptors, its leftovers' owners, and the answer to `run`.
    private func finish(_ child: Child, status: ProcessSupervisor.ExitStatus, terminated: Bool) {
        // What is left in the pipes, within a bound: a process outside the
        // group may still hold them and write.
        for index in child.outputs.indices {
            var reads = 0
            if index == 0, child.captured != nil {
                // Captured stdout is a reply: read to its end, however much
                // a pipe enlarged with F_SETPIPE_SZ still holds. Bounded by
                // the capture limit: past it, the output is refused anyway.
                while !child.captureOverLimit, readOutput(child, index: 0) {}
                // Empty but open: a process outside the group holds it.
                if child.outputs[0].fd >= 0 && !child.captureOverLimit { child.captureIncomplete = true }
            }
            while reads < Self.finalReads, readOutput(child, index: index) { reads += 1 }
            if child.outputs[index].fd >= 0 {
                let stream = child.outputs[index].stream
                let limit = outputLimit
                child.outputs[index].lines.finish { line in
                    let text = line ?? OutputLineSplitter.notice(stream.rawValue, limit: limit)
                    if case .worker(let link) = child.owner { link.stderr(text, child.pid, child.tag) } else { child.sink(stream, text) }
                }
                close(child.outputs[index].fd)
                child.outputs[index].fd = -1
            }
        }
        // Whether a worker's last message is still unread: queued, refused,
        // or in the pipe (no byte of it was read, or not all).
        let inPipe = child.stdinFD >= 0 ? max(0, Int(warren_pipe_unread(child.stdinFD))) : child.unreadAtClose
        let unread = child.currentWritten - inPipe <= 0
        closeInput(child)
        children.removeValue(forKey: child.pid)
        pidOf.removeValue(forKey: child.request)
        _ = ProcessSupervisor.leaders.withLock { $0.remove(child.pid) }
        // Look again now that the group is gone: a member that was killed
        // with it (not the leader) may have had a child that left the group,
        // reparented to warren only when that member died.
        lookForLeftovers = false
        findLeftovers()
        for leftover in leftovers.values where !leftover.killed {
            leftover.owners.remove(child.request)
            if leftover.owners.isEmpty { killLeftover(leftover) }
        }
        let termination = ProcessSupervisor.Termination(status: status, lastErrorLine: child.outputs[1].lines.lastLine,
                                                        terminated: terminated, output: child.captured,
                                                        outputOverLimit: child.captureOverLimit,
                                                        outputIncomplete: child.captureIncomplete)
        child.captured = nil
        switch child.owner {
        case .job(let job): job.continuation.resume(returning: .success(termination))
        case .worker(let link): link.events(.exited(termination, writes: child.writes, unread: unread))
        }
    }

    // MARK: Leftovers

    /// Takes in every child of this process that is neither a running
    /// handler's leader (of any supervisor) nor a member of its group.
    private func findLeftovers() {
        let leaders = ProcessSupervisor.leaders.withLock { $0 }
        let supervisors = ProcessSupervisor.threads.withLock { $0 }
        guard let found = Self.childrenOfThisProcess(except: supervisors) else {
            lookForLeftovers = true  // again on the next turn
            return
        }
        for pid in found where children[pid] == nil && leftovers[pid] == nil && !leaders.contains(pid) {
            let group = getpgid(pid)
            if group > 0, group != pid, leaders.contains(group) {
                // Killed with its group; reaped now if it has exited (a
                // worker's group may live for days, its zombies must not).
                var status: Int32 = 0
                _ = waitpid(pid, &status, WNOHANG)
                continue
            }
            // Only handler commands can be waited for: they end. A persistent
            // worker lives on, and counting it as an owner would spare every
            // escaped process for as long as it runs.
            let owners = children.values.compactMap { child -> Int? in
                if case .job = child.owner { child.request } else { nil }
            }
            let leftover = Leftover(pid: pid, pidfd: openPidfd(pid), owners: Set(owners))
            leftovers[pid] = leftover
            if leftover.owners.isEmpty { killLeftover(leftover) }
        }
    }

    private func killLeftover(_ leftover: Leftover) {
        leftover.killed = true
        // Its own group too, if it leads one (`timeout`, a `setsid` shell).
        if getpgid(leftover.pid) == leftover.pid { kill(-leftover.pid, SIGKILL) }
        kill(leftover.pid, SIGKILL)
    }

    private func reap(_ leftover: Leftover) {
        var status: Int32 = 0
        let rc = waitpid(leftover.pid, &status, WNOHANG)
        // ECHILD: someone else reaped it; either way it is gone.
        guard rc == leftover.pid || (rc < 0 && errno == ECHILD) else { return }
        if leftover.pidfd >= 0 { close(leftover.pidfd) }
        leftovers.removeValue(forKey: leftover.pid)
        // Its own children, if any, have just come back to warren.
        lookForLeftovers = true
    }

    /// The children of the threads of this process but `threads`: orphans
    /// come back to the main thread, handlers are children of a supervisor
    /// thread. Nil when /proc cannot be read now (no descriptor to spare).
    static func childrenOfThisProcess(except threads: Set<pid_t>) -> [pid_t]? {
        guard hasChildrenFiles else { return childrenFromProcScan() }
        guard let directory = opendir("/proc/self/task") else { return nil }
        defer { closedir(directory) }
        var result: [pid_t] = []
        while let entry = readdir(directory) {
            guard let tid = pid_t(entryName(entry)), !threads.contains(tid),
                  let text = readSmallFile("/proc/self/task/\(tid)/children") else { continue }
            result += text.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") })
                .compactMap { pid_t(String(decoding: $0, as: UTF8.self)) }
        }
        return result
    }

    /// `/proc/PID/task/TID/children` needs CONFIG_PROC_CHILDREN.
    static let hasChildrenFiles = access("/proc/self/task/\(getpid())/children", R_OK) == 0

    /// Without children files: every process whose parent is this one.
    static func childrenFromProcScan() -> [pid_t]? {
        guard let directory = opendir("/proc") else { return nil }
        defer { closedir(directory) }
        let me = getpid()
        var result: [pid_t] = []
        while let entry = readdir(directory) {
            guard let pid = pid_t(entryName(entry)), let stat = readSmallFile("/proc/\(pid)/stat"),
                  let close = stat.lastIndex(of: UInt8(ascii: ")")) else { continue }
            // After "comm)": state, then the parent's pid.
            let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "))
            if fields.count > 1, pid_t(String(decoding: fields[1], as: UTF8.self)) == me { result.append(pid) }
        }
        return result
    }

    private static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }

    private static func readSmallFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var text: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count <= 0 { break }
            text += buffer[0..<count]
        }
        return text
    }
}

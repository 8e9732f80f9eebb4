import AMQP
import CWarrenSupport
import Glibc
import Synchronization

/// Runs handler commands and watches them from one dedicated thread, which
/// also does the spawning (posix_spawn suspends its caller until exec).
///
/// Each child runs in its own process group. One poll(2) covers, for every
/// child, a pidfd (readable when it exits), its stdout and stderr (logged
/// line by line) and its stdin (the message body, written without
/// blocking). Waiting for children is thus never done on Swift's cooperative
/// pool, and one thread serves any number of handlers.
///
/// A child counts as finished only when its whole process group is gone:
/// stragglers left by a leader that exited are killed, and warren is a child
/// subreaper so that orphans come back to it and are reaped, not left as
/// zombies.
public final class ProcessSupervisor: Sendable {
    public enum ExitStatus: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
    }

    public struct Termination: Sendable, Equatable {
        public var status: ExitStatus
        /// The last line the command wrote to stderr, for dead-letter headers.
        public var lastErrorLine: String?
        /// The watchdog ended it (timeout, grace period, quit).
        public var terminated: Bool
    }

    public struct SpawnError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public enum Stream: String, Sendable { case stdout, stderr }

    /// Called on the supervisor thread for each line a child writes.
    public typealias LineSink = @Sendable (Stream, String) -> Void

    enum Command: Sendable {
        case spawn(SpawnRequest)
        case terminate(request: Int, killAfterMs: Int64)
    }

    struct SpawnRequest: Sendable {
        var id: Int
        var argv: [String]
        var environment: [String]
        var input: [UInt8]
        var sink: LineSink
        var onStart: (@Sendable (Int32) -> Void)?
        var continuation: CheckedContinuation<Result<Termination, SpawnError>, Never>
    }

    struct ChildSpec: Sendable {
        var request: Int
        var pid: pid_t
        var pidfd: Int32
        var stdinFD: Int32
        var stdoutFD: Int32
        var stderrFD: Int32
        var input: [UInt8]
        var sink: LineSink
        var continuation: CheckedContinuation<Result<Termination, SpawnError>, Never>
    }

    final class Inbox: Sendable {
        private struct State {
            var commands: [Command] = []
            var signalled = false
        }

        /// Guards commands for the supervisor thread and its wake-up flag.
        private let state = Mutex(State())

        /// Queues a command; true when the thread must be woken.
        func push(_ command: Command) -> Bool {
            state.withLock { state in
                state.commands.append(command)
                defer { state.signalled = true }
                return !state.signalled
            }
        }

        func takeAll() -> [Command] {
            state.withLock { state in
                defer { state.commands = []; state.signalled = false }
                return state.commands
            }
        }
    }

    private let inbox = Inbox()
    private let nextRequest = Atomic<Int>(0)
    private let wakeRead: Int32
    private let wakeWrite: Int32
    /// Bytes of output logged per stream per handler before the rest is dropped.
    let outputLimit: Int

    public init(outputLimit: Int = 64 * 1024) {
        var fds: [Int32] = [0, 0]
        precondition(warren_wake_pipe(&fds) == 0, "cannot create the supervisor's wake-up pipe")
        wakeRead = fds[0]
        wakeWrite = fds[1]
        self.outputLimit = outputLimit
        // A child that exits before reading its whole stdin must not kill warren.
        signal(SIGPIPE, SIG_IGN)
        _ = warren_become_subreaper()
        let loop = SupervisorLoop(wakeFD: wakeRead, outputLimit: outputLimit, inbox: inbox)
        IOThread.start(name: "warren-procs") { loop.run() }
    }

    private func push(_ command: Command) {
        if inbox.push(command) {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
        }
    }

    /// Runs `argv` with `environment`, `input` on its stdin, and returns when
    /// its process group is gone. Cancelling the calling task terminates it:
    /// SIGTERM to the group, SIGKILL after `killAfter`.
    public func run(_ argv: [String], environment: [String], input: [UInt8], killAfter: Duration,
                    onStart: (@Sendable (Int32) -> Void)? = nil,
                    sink: @escaping LineSink) async throws(SpawnError) -> Termination {
        // The spawn itself happens on the supervisor thread: posix_spawn
        // suspends its caller until the child execs, and the caller here is
        // a worker on a connection's I/O thread (or, for other callers, a
        // thread of the cooperative pool), which must not wait for that.
        let id = nextRequest.add(1, ordering: .relaxed).newValue
        let killAfterMs = killAfter.milliseconds
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                push(.spawn(SpawnRequest(id: id, argv: argv, environment: environment, input: input, sink: sink,
                                         onStart: onStart, continuation: continuation)))
            }
        } onCancel: {
            push(.terminate(request: id, killAfterMs: killAfterMs))
        }
        return try result.get()
    }

    static func spawn(_ argv: [String], environment: [String]) throws(SpawnError) -> (pid: pid_t, pidfd: Int32, stdin: Int32, stdout: Int32, stderr: Int32) {
        guard let program = argv.first else { throw SpawnError(description: "empty command") }
        var input: [Int32] = [-1, -1], output: [Int32] = [-1, -1], errors: [Int32] = [-1, -1]
        guard warren_pipe_cloexec(&input) == 0, warren_pipe_cloexec(&output) == 0, warren_pipe_cloexec(&errors) == 0 else {
            let reason = String(cString: strerror(errno))
            for fd in input + output + errors where fd >= 0 { close(fd) }
            throw SpawnError(description: "cannot create pipes: \(reason)")
        }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in cArgv { free(pointer) }
            for pointer in cEnv { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = warren_spawn(&pid, program, cArgv, cEnv, input[0], output[1], errors[1])
        close(input[0])
        close(output[1])
        close(errors[1])
        guard rc == 0 else {
            close(input[1]); close(output[0]); close(errors[0])
            throw SpawnError(description: "cannot run '\(program)': \(String(cString: strerror(rc)))")
        }
        let pidfd = warren_pidfd_open(pid)
        precondition(pidfd >= 0, "pidfd_open failed for a child warren just spawned: \(String(cString: strerror(errno)))")
        _ = warren_set_nonblocking(input[1])
        _ = warren_set_nonblocking(output[0])
        _ = warren_set_nonblocking(errors[0])
        return (pid, pidfd, input[1], output[0], errors[0])
    }
}

/// The supervisor thread's state. Touched only by that thread.
private final class SupervisorLoop {
    final class Child {
        let spec: ProcessSupervisor.ChildSpec
        var pid: pid_t { spec.pid }
        var pidfd: Int32
        var stdinFD: Int32
        var inputOffset = 0
        var outputs: [(fd: Int32, stream: ProcessSupervisor.Stream, pending: [UInt8], logged: Int, truncated: Bool)]
        var status: ProcessSupervisor.ExitStatus? = nil
        var terminateRequested = false
        var killDeadline: Int64? = nil
        var killed = false
        var giveUpAt: Int64? = nil
        var lastErrorLine: String? = nil

        init(_ spec: ProcessSupervisor.ChildSpec) {
            self.spec = spec
            pidfd = spec.pidfd
            stdinFD = spec.stdinFD
            outputs = [(spec.stdoutFD, .stdout, [], 0, false), (spec.stderrFD, .stderr, [], 0, false)]
        }
    }

    let wakeFD: Int32
    let outputLimit: Int
    let inbox: ProcessSupervisor.Inbox
    var children: [pid_t: Child] = [:]
    /// Terminations that came before their spawn was handled, by request.
    var earlyTerminations: [Int: Int64] = [:]
    /// Running children by the request that spawned them.
    var pidOf: [Int: pid_t] = [:]

    init(wakeFD: Int32, outputLimit: Int, inbox: ProcessSupervisor.Inbox) {
        self.wakeFD = wakeFD
        self.outputLimit = outputLimit
        self.inbox = inbox
    }

    func run() {
        var scratch = [UInt8](repeating: 0, count: 65536)
        while true {
            var drain: (UInt64, UInt64) = (0, 0)
            while read(wakeFD, &drain, 16) > 0 {}
            for command in inbox.takeAll() { apply(command) }

            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            var owners: [(Child, Int)] = []  // -2 pidfd, -1 stdin, 0... outputs
            for child in children.values {
                if child.pidfd >= 0 {
                    fds.append(pollfd(fd: child.pidfd, events: Int16(POLLIN), revents: 0)); owners.append((child, -2))
                }
                if child.stdinFD >= 0 {
                    fds.append(pollfd(fd: child.stdinFD, events: Int16(POLLOUT), revents: 0)); owners.append((child, -1))
                }
                for (index, output) in child.outputs.enumerated() where output.fd >= 0 {
                    fds.append(pollfd(fd: output.fd, events: Int16(POLLIN), revents: 0)); owners.append((child, index))
                }
            }
            let ready = poll(&fds, nfds_t(fds.count), nextTimeout())
            if ready > 0 {
                for (index, owner) in owners.enumerated() where fds[index + 1].revents != 0 {
                    let (child, what) = owner
                    switch what {
                    case -2: reapLeader(child)
                    case -1: writeInput(child)
                    default: readOutput(child, index: what, scratch: &scratch)
                    }
                }
            }
            for child in Array(children.values) { advance(child, scratch: &scratch) }
        }
    }

    private func apply(_ command: ProcessSupervisor.Command) {
        switch command {
        case .spawn(let request):
            let spawned: (pid: pid_t, pidfd: Int32, stdin: Int32, stdout: Int32, stderr: Int32)
            do throws(ProcessSupervisor.SpawnError) {
                spawned = try ProcessSupervisor.spawn(request.argv, environment: request.environment)
            } catch {
                earlyTerminations[request.id] = nil
                request.continuation.resume(returning: .failure(error))
                return
            }
            request.onStart?(spawned.pid)
            let child = Child(ProcessSupervisor.ChildSpec(
                request: request.id, pid: spawned.pid, pidfd: spawned.pidfd, stdinFD: spawned.stdin, stdoutFD: spawned.stdout,
                stderrFD: spawned.stderr, input: request.input, sink: request.sink, continuation: request.continuation))
            children[spawned.pid] = child
            pidOf[request.id] = spawned.pid
            if request.input.isEmpty { closeInput(child) }
            if let killAfter = earlyTerminations.removeValue(forKey: request.id) { terminate(child, killAfterMs: killAfter) }
        case .terminate(let request, let killAfterMs):
            if let pid = pidOf[request], let child = children[pid] {
                terminate(child, killAfterMs: killAfterMs)
            } else {
                earlyTerminations[request] = killAfterMs
            }
        }
    }

    private func terminate(_ child: Child, killAfterMs: Int64) {
        guard !child.terminateRequested else { return }
        child.terminateRequested = true
        kill(-child.pid, SIGTERM)
        child.killDeadline = monotonicMilliseconds() + killAfterMs
    }

    private func nextTimeout() -> Int32 {
        var soonest: Int64? = nil
        for child in children.values {
            if let deadline = child.killDeadline, !child.killed { soonest = min(soonest ?? deadline, deadline) }
            // Stragglers of a finished leader are checked every 10 ms.
            if child.status != nil { soonest = min(soonest ?? monotonicMilliseconds() + 10, monotonicMilliseconds() + 10) }
        }
        guard let soonest else { return -1 }
        return Int32(max(0, min(soonest - monotonicMilliseconds(), 1000)))
    }

    private func reapLeader(_ child: Child) {
        var status: Int32 = 0
        let rc = waitpid(child.pid, &status, WNOHANG)
        guard rc == child.pid else { return }
        let exitCode = (status >> 8) & 0xff
        let signal = status & 0x7f
        child.status = signal == 0 ? .exited(exitCode) : .signaled(signal)
        close(child.pidfd)
        child.pidfd = -1
    }

    private func writeInput(_ child: Child) {
        let input = child.spec.input
        while child.inputOffset < input.count {
            let written = input.withUnsafeBytes { raw in
                write(child.stdinFD, raw.baseAddress! + child.inputOffset, input.count - child.inputOffset)
            }
            if written > 0 { child.inputOffset += written; continue }
            if written < 0 && errno == EAGAIN { return }
            break  // EPIPE: the command does not want the rest
        }
        closeInput(child)
    }

    private func closeInput(_ child: Child) {
        if child.stdinFD >= 0 { close(child.stdinFD) }
        child.stdinFD = -1
    }

    private func readOutput(_ child: Child, index: Int, scratch: inout [UInt8]) {
        let fd = child.outputs[index].fd
        guard fd >= 0 else { return }
        while true {
            let count = scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count > 0 {
                consume(child, index: index, bytes: scratch[0..<count])
                continue
            }
            if count < 0 && errno == EAGAIN { return }
            // EOF or error: flush a last unterminated line.
            if !child.outputs[index].pending.isEmpty { emit(child, index: index, line: child.outputs[index].pending) }
            child.outputs[index].pending = []
            close(fd)
            child.outputs[index].fd = -1
            return
        }
    }

    private func consume(_ child: Child, index: Int, bytes: ArraySlice<UInt8>) {
        var start = bytes.startIndex
        while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = child.outputs[index].pending + bytes[start..<newline]
            child.outputs[index].pending = []
            emit(child, index: index, line: line)
            start = newline + 1
        }
        child.outputs[index].pending.append(contentsOf: bytes[start...])
        if child.outputs[index].pending.count > 4096 {
            emit(child, index: index, line: child.outputs[index].pending)
            child.outputs[index].pending = []
        }
    }

    private func emit(_ child: Child, index: Int, line: [UInt8]) {
        let stream = child.outputs[index].stream
        var text = String(decoding: line.prefix(4096), as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        if stream == .stderr, !text.isEmpty { child.lastErrorLine = String(text.prefix(512)) }
        guard !child.outputs[index].truncated else { return }
        child.outputs[index].logged += line.count
        if child.outputs[index].logged > outputLimit {
            child.outputs[index].truncated = true
            child.spec.sink(stream, "[warren: further \(stream.rawValue) of this handler is not logged (over \(outputLimit) bytes)]")
            return
        }
        child.spec.sink(stream, text)
    }

    /// Moves a child whose leader has exited towards completion.
    private func advance(_ child: Child, scratch: inout [UInt8]) {
        let time = monotonicMilliseconds()
        if child.terminateRequested, !child.killed, let deadline = child.killDeadline, time >= deadline {
            kill(-child.pid, SIGKILL)
            child.killed = true
            child.giveUpAt = time + 2000
        }
        guard let status = child.status else { return }
        // Reap orphans of this group that were reparented to us (subreaper).
        var ignored: Int32 = 0
        while waitpid(-child.pid, &ignored, WNOHANG) > 0 {}
        let groupAlive = kill(-child.pid, 0) == 0
        if groupAlive {
            if !child.terminateRequested && !child.killed {
                // The command exited but left processes behind in its group.
                child.spec.sink(.stderr, "[warren: the handler exited but left processes in its group; killing them]")
                kill(-child.pid, SIGKILL)
                child.killed = true
                child.giveUpAt = time + 2000
            }
            if let giveUp = child.giveUpAt, time >= giveUp {
                child.spec.sink(.stderr, "[warren: process group \(child.pid) still has members after SIGKILL; not waiting longer]")
            } else {
                return
            }
        }
        for index in child.outputs.indices { readOutput(child, index: index, scratch: &scratch) }
        for index in child.outputs.indices where child.outputs[index].fd >= 0 {
            close(child.outputs[index].fd)
            child.outputs[index].fd = -1
        }
        closeInput(child)
        children.removeValue(forKey: child.pid)
        pidOf.removeValue(forKey: child.spec.request)
        child.spec.continuation.resume(returning: .success(ProcessSupervisor.Termination(
            status: status, lastErrorLine: child.lastErrorLine, terminated: child.terminateRequested)))
    }
}

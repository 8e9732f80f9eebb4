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
/// pool, and one thread serves any number of handlers. Each turn of that
/// thread does bounded work per child (one 4 KiB read per pipe), so a handler
/// that writes without end delays no spawn, reap, kill or other handler.
///
/// What it guarantees about processes (README, "Handler commands"):
/// - A handler counts as finished only when its whole process group is
///   gone: members left by a leader that exited are SIGKILLed and reaped.
/// - warren is a child subreaper, so a process that leaves its handler's
///   group (`setsid`, coreutils `timeout`, a double fork) comes back to
///   warren when its parent dies. Every such process is reaped when it
///   exits, and SIGKILLed (with its group, if it leads one) as soon as
///   every handler that was running when warren first saw it has finished.
///   warren looks for them whenever a handler's leader exits and whenever
///   one of them exits, so none stays a zombie past the end of the handler
///   it came from.
/// - It therefore takes every child of the process that it did not spawn
///   as such a leftover: a program that embeds warren must not start child
///   processes of its own (or must give them to this supervisor).
///
/// Making the process a subreaper is process-wide, so no constructor does
/// it: call `prepareProcess()` once (the daemon does). `shutdown()` ends
/// the thread.
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
        /// Its stdout, when the run asked to capture it (a reply, an
        /// output message) instead of logging it; nil otherwise.
        public var output: [UInt8]? = nil
        /// More stdout came than the capture limit allows: `output` holds
        /// only the first part, and must not be published.
        public var outputOverLimit = false
        /// stdout was still open once the group was gone and its pipe read
        /// empty: a process outside the group holds it and may write more.
        /// `output` may be cut short, and must not be published.
        public var outputIncomplete = false
    }

    public struct SpawnError: Error, Sendable, CustomStringConvertible {
        public var description: String
        /// warren itself lacked descriptors, processes or memory to start the
        /// command (EMFILE, ENFILE, EAGAIN, ENOMEM): not the handler's fault.
        public var resourceShortage: Bool

        public init(description: String, resourceShortage: Bool = false) {
            self.description = description
            self.resourceShortage = resourceShortage
        }

        /// The error numbers that mean warren, not the command, is short.
        static func isShortage(_ code: Int32) -> Bool {
            code == EMFILE || code == ENFILE || code == EAGAIN || code == ENOMEM
        }
    }

    public enum Stream: String, Sendable { case stdout, stderr }

    /// Called on the supervisor thread for each line a child writes.
    public typealias LineSink = @Sendable (Stream, String) -> Void

    /// Opens a pidfd for a child; -1 with errno on failure. A seam for tests.
    typealias PidfdOpener = @Sendable (pid_t) -> Int32

    enum Command: Sendable {
        case spawn(ChildSpec, Job)
        /// A persistent worker: `started` gets its pid or why it did not start.
        case startWorker(ChildSpec, WorkerLink, started: @Sendable (Result<pid_t, SpawnError>) -> Void)
        /// A message for a worker's stdin, after what is already queued;
        /// its stderr lines are tagged with `tag` from now on.
        case write(request: Int, MessageBody, tag: String)
        /// End of file on a worker's stdin, once what is queued is written.
        case closeInput(request: Int)
        case terminate(request: Int, killAfterMs: Int64)
        /// A worker's resident memory (`residentMemory`).
        case measure(request: Int, answer: @Sendable (Int?) -> Void)
        /// Kill and reap everything, close the inbox, end the thread; then
        /// `done` with the thread's id.
        case shutdown(done: @Sendable (pid_t) -> Void)
    }

    /// The process to start: the one description of a child, which the
    /// loop's live record (`SupervisorLoop.Child`) keeps beside what the
    /// running process has (pid, descriptors, phase).
    struct ChildSpec: Sendable {
        var argv: [String]
        var environment: [String]
        /// A persistent worker: spawned to die with warren (PR_SET_PDEATHSIG).
        var worker = false
    }

    /// The message a child has in hand, and who waits for the end of it.
    /// Apart from `ChildSpec` because a long-lived worker would be one child
    /// handed many jobs; a handler command is one child per job.
    struct Job: Sendable {
        /// What `terminate` names.
        var id: Int
        /// The message, on the child's stdin.
        var input: MessageBody
        var sink: LineSink
        /// Capture stdout up to this many bytes instead of logging it.
        var captureLimit: Int? = nil
        var onStart: (@Sendable (Int32) -> Void)?
        var continuation: CheckedContinuation<Result<Termination, SpawnError>, Never>
    }

    /// What a persistent worker's owner hears from the supervisor thread.
    enum WorkerEvent: Sendable, Equatable {
        /// A piece of stdout: a protocol line, or one too long to be one.
        case stdout(WorkerLineSplitter.Piece)
        /// It closed its stdin or stdout (`pipe` names which) and was still
        /// alive `SupervisorLoop.pipeGraceMs` later: it can no longer take a
        /// message, or no longer answer one.
        case closedPipe(String)
        /// Its process group is gone. `writes`: messages the supervisor had
        /// taken for its stdin; `unread`: the last of them never reached
        /// it whole (still queued, refused with EPIPE, or left in the pipe).
        case exited(Termination, writes: Int, unread: Bool)
    }

    /// A long-lived worker: one child handed many messages over its stdin,
    /// answering on its stdout (README, "Writing a persistent worker").
    final class WorkerLink: Sendable {
        /// What `write`, `closeInput` and `terminate` name.
        let id: Int
        /// Called on the supervisor thread, in order; `.exited` is the last.
        let events: @Sendable (WorkerEvent) -> Void
        /// stderr, line by line, for the log, with the worker's pid and the
        /// tag of the last message written (nil before the first).
        let stderr: @Sendable (String, pid_t, String?) -> Void
        /// Bytes of one answer line, past which it is a protocol error.
        let lineLimit: Int

        init(id: Int, lineLimit: Int = ProcessSupervisor.workerLineLimit, events: @escaping @Sendable (WorkerEvent) -> Void,
             stderr: @escaping @Sendable (String, pid_t, String?) -> Void) {
            self.id = id
            self.lineLimit = lineLimit
            self.events = events
            self.stderr = stderr
        }
    }

    /// Bytes of one worker answer line, past which it is a protocol error,
    /// unless its consumer publishes replies (`workerLineLimit(for:)`).
    static let workerLineLimit = 1 << 20

    /// A worker whose answers may carry a reply of up to `max_body` bytes
    /// gets lines six times that long and 64 KiB for the rest of the
    /// answer; others 1 MiB. Six: JSON's longest escape, `\u0000`, is six
    /// bytes for one, and Python's default `json.dumps` writes every
    /// character outside ASCII as escapes (an emoji: 12 bytes for 4). The
    /// reply itself is held to `max_body` once decoded. `max_body` counts
    /// here only up to `outputCap`: no reply is larger than that.
    static func workerLineLimit(for settings: ConsumerSettings) -> Int {
        guard settings.mayPublishOutput else { return workerLineLimit }
        return max(workerLineLimit, 6 * settings.outputLimit + 64 * 1024)
    }

    /// The most a reply or output message may be, whatever `max_body` says
    /// (which allows up to 512 MiB): what warren holds of one handler's
    /// output, six times over for a worker's line, must stay well within memory.
    static let outputCap = 128 << 20

    struct Spawned {
        var pid: pid_t
        /// -1 when pidfd_open failed: the child is then watched by polling waitpid.
        var pidfd: Int32
        var pidfdError: Int32
        var stdin: Int32
        var stdout: Int32
        var stderr: Int32
    }

    /// Leaders of running handlers, of every supervisor in this process, so
    /// that none takes another's handler for a leftover.
    static let leaders = Mutex(Set<pid_t>())
    /// Thread ids of every supervisor thread in this process: their
    /// children are handlers (spawned there), never leftovers, even in the
    /// moment before they are entered in `leaders`.
    static let threads = Mutex(Set<pid_t>())

    /// The supervisor thread's commands; closed by that thread at shutdown.
    let inbox: WakeableInbox<Command>
    private let nextRequest = Atomic<Int>(0)
    /// Bytes of output logged per stream per handler before the rest is dropped.
    let outputLimit: Int

    /// Starts the supervisor thread. Fails (rather than stopping the
    /// process) when there is no descriptor or thread to be had.
    public convenience init(outputLimit: Int = 64 * 1024) throws(SpawnError) {
        try self.init(outputLimit: outputLimit, openPidfd: { warren_pidfd_open($0) })
    }

    init(outputLimit: Int, openPidfd: @escaping PidfdOpener) throws(SpawnError) {
        do throws(WakePipeError) {
            inbox = try WakeableInbox()
        } catch {
            throw SpawnError(description: "cannot create the process supervisor's wake-up pipe: \(error.description)",
                             resourceShortage: true)
        }
        self.outputLimit = outputLimit
        let loop = SupervisorLoop(outputLimit: outputLimit, inbox: inbox, openPidfd: openPidfd)
        do throws(IOThread.StartError) {
            try IOThread.tryStart(name: "warren-procs") { loop.run() }
        } catch {
            throw SpawnError(description: "cannot start the process supervisor: \(error.description)", resourceShortage: true)
        }
    }

    /// Makes this process ready to supervise handlers, once for its life:
    /// - it becomes a child subreaper (PR_SET_CHILD_SUBREAPER), so that what
    ///   leaves a handler's group comes back to warren to be reaped and killed;
    /// - SIGPIPE is ignored, so that a child that exits before reading its
    ///   whole stdin does not kill warren (its supervisor thread also blocks
    ///   SIGPIPE for itself, so that holds even without this call).
    /// Process-wide, hence not done by a constructor: the daemon calls it at
    /// start; a program that embeds warren and runs handler commands calls
    /// it before, if it may (it then owns no other children: see above).
    /// Later calls do nothing.
    public static func prepareProcess() {
        _ = preparedProcess
    }

    private static let preparedProcess: Bool = {
        signal(SIGPIPE, SIG_IGN)
        return warren_become_subreaper() == 0
    }()

    /// The error of a spawn asked for after `shutdown()`: warren's, not the handler's.
    static let shutDown = SpawnError(description: "the process supervisor has shut down (warren is stopping): the handler was not started",
                                     resourceShortage: true)

    /// Ends the supervisor thread: every child still running is SIGKILLed
    /// with its group and reaped, and so is every leftover; each `run`
    /// waiting for one returns its termination. Returns once the thread has
    /// closed everything it held (the wake-up pipe goes with the last
    /// reference to the supervisor). Later `run`s throw at once.
    public func shutdown() async {
        _ = await stop()
    }

    /// `shutdown()`; returns the thread's id, nil when already shut down.
    func stop() async -> pid_t? {
        await withCheckedContinuation { continuation in
            let done: @Sendable (pid_t) -> Void = { continuation.resume(returning: $0) }
            if !inbox.push(.shutdown(done: done)) { continuation.resume(returning: nil) }
        }
    }

    /// Runs `argv` with `environment`, `input` on its stdin, and returns when
    /// its process group is gone. Cancelling the calling task terminates it:
    /// SIGTERM to the group, SIGKILL after `killAfter`.
    public func run(_ argv: [String], environment: [String], input: [UInt8], killAfter: Duration,
                    onStart: (@Sendable (Int32) -> Void)? = nil,
                    sink: @escaping LineSink) async throws(SpawnError) -> Termination {
        try await run(argv, environment: environment, input: MessageBody(input), killAfter: killAfter,
                      onStart: onStart, sink: sink)
    }

    /// `run` with a body held in place (a delivery's `payload`): stdin is
    /// written from it, without a copy. With `captureStdout`, stdout is not
    /// logged but kept, up to that many bytes, in the termination's `output`.
    func run(_ argv: [String], environment: [String], input: MessageBody, killAfter: Duration,
                    captureStdout: Int? = nil, onStart: (@Sendable (Int32) -> Void)? = nil,
                    sink: @escaping LineSink) async throws(SpawnError) -> Termination {
        // The spawn itself happens on the supervisor thread: posix_spawn
        // suspends its caller until the child execs, and the caller here is
        // a worker on a connection's I/O thread (or, for other callers, a
        // thread of the cooperative pool), which must not wait for that.
        let id = nextRequest.add(1, ordering: .relaxed).newValue
        let killAfterMs = killAfter.milliseconds
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let job = Job(id: id, input: input, sink: sink, captureLimit: captureStdout, onStart: onStart,
                              continuation: continuation)
                if !inbox.push(.spawn(ChildSpec(argv: argv, environment: environment), job)) { continuation.resume(returning: .failure(Self.shutDown)) }
            }
        } onCancel: {
            inbox.push(.terminate(request: id, killAfterMs: killAfterMs))
        }
        return try result.get()
    }

    /// An id for `startWorker`'s link: unique among this supervisor's requests.
    func newRequestID() -> Int { nextRequest.add(1, ordering: .relaxed).newValue }

    /// Starts a persistent worker (spawned on the supervisor thread, with
    /// PR_SET_PDEATHSIG, so it dies with warren); returns its pid. Its
    /// output and its end reach `link`.
    func startWorker(_ argv: [String], environment: [String], link: WorkerLink) async throws(SpawnError) -> pid_t {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<pid_t, SpawnError>, Never>) in
            let started: @Sendable (Result<pid_t, SpawnError>) -> Void = { continuation.resume(returning: $0) }
            if !inbox.push(.startWorker(ChildSpec(argv: argv, environment: environment, worker: true), link, started: started)) {
                continuation.resume(returning: .failure(Self.shutDown))
            }
        }
        return try result.get()
    }

    /// Queues a message's `bytes` for the worker's stdin. The worker's
    /// stderr is read up to then, and what it writes afterwards is tagged
    /// `tag` (the message's id for the log).
    func write(_ bytes: MessageBody, to request: Int, tag: String) { inbox.push(.write(request: request, bytes, tag: tag)) }

    /// End of file on the worker's stdin (its signal to exit), after what is queued.
    func closeInput(of request: Int) { inbox.push(.closeInput(request: request)) }

    /// A worker's resident memory in bytes (`max_memory`): its leader's
    /// now, or its whole group's as of the last scan of /proc (at most a
    /// second old), whichever is more. Read on the supervisor thread, never
    /// on the caller's (a connection's I/O thread). Nil once it has gone.
    func residentMemory(of request: Int) async -> Int? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Int?, Never>) in
            let answer: @Sendable (Int?) -> Void = { continuation.resume(returning: $0) }
            if !inbox.push(.measure(request: request, answer: answer)) { continuation.resume(returning: nil) }
        }
    }

    /// SIGTERM to the worker's group, SIGKILL after `killAfter`.
    func terminate(_ request: Int, killAfter: Duration) {
        inbox.push(.terminate(request: request, killAfterMs: killAfter.milliseconds))
    }

    /// Starts `argv`. Every failure is an error, never an abort: a child
    /// already started when its pidfd cannot be had is still returned, to be
    /// watched without one.
    static func spawn(_ argv: [String], environment: [String], worker: Bool = false,
                      openPidfd: PidfdOpener) throws(SpawnError) -> Spawned {
        guard let program = argv.first else { throw SpawnError(description: "empty command") }
        var input: [Int32] = [-1, -1], output: [Int32] = [-1, -1], errors: [Int32] = [-1, -1]
        guard warren_pipe_cloexec(&input) == 0, warren_pipe_cloexec(&output) == 0, warren_pipe_cloexec(&errors) == 0 else {
            let code = errno
            for fd in input + output + errors where fd >= 0 { close(fd) }
            throw SpawnError(description: "cannot create pipes: \(String(cString: strerror(code)))",
                             resourceShortage: SpawnError.isShortage(code))
        }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in cArgv { free(pointer) }
            for pointer in cEnv { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = worker ? warren_spawn_worker(&pid, program, cArgv, cEnv, input[0], output[1], errors[1])
                        : warren_spawn(&pid, program, cArgv, cEnv, input[0], output[1], errors[1])
        close(input[0])
        close(output[1])
        close(errors[1])
        guard rc == 0 else {
            close(input[1]); close(output[0]); close(errors[0])
            throw SpawnError(description: "cannot run '\(program)': \(String(cString: strerror(rc)))",
                             resourceShortage: SpawnError.isShortage(rc))
        }
        let pidfd = openPidfd(pid)
        let pidfdError = pidfd < 0 ? errno : 0
        _ = warren_set_nonblocking(input[1])
        _ = warren_set_nonblocking(output[0])
        _ = warren_set_nonblocking(errors[0])
        return Spawned(pid: pid, pidfd: pidfd, pidfdError: pidfdError, stdin: input[1], stdout: output[0], stderr: errors[0])
    }
}

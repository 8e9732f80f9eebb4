import CWarrenSupport
import Glibc
import Synchronization

/// Commands in, from any thread, to one thread that sleeps in poll(2): the
/// I/O thread of a connection, the process supervisor, the watchdog timer.
///
/// A lock-protected array plus a self-pipe whose read end that thread polls.
/// Producers only write a wake-up byte when `signalled` flips from false to
/// true, so a burst of commands costs one write and one read, not one per
/// command (a `takeAll` that does not drain may leave a byte for the next
/// poll, which then returns at once: a spare turn, never a lost command). Once closed, it refuses
/// commands, so nothing is queued that no one will take.
///
/// The pipe is closed when the inbox is freed, not before: a producer that
/// still holds the inbox may write its wake-up byte at any time, and must
/// never write into a descriptor number reused by something else.
public final class WakeableInbox<Command: Sendable>: Sendable {
    private struct State {
        var commands: [Command] = []
        var signalled = false
        var closed = false
    }

    /// Guards the pending commands, the wake-up flag and the closed state.
    private let state = Mutex(State())
    /// The read end, for the owning thread's poll(2).
    public let readFD: Int32
    private let writeFD: Int32

    public init() throws(WakePipeError) {
        var fds: [Int32] = [0, 0]
        guard warren_wake_pipe(&fds) == 0 else { throw WakePipeError(code: errno) }
        readFD = fds[0]
        writeFD = fds[1]
    }

    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }

    /// Queues `command`, waking the owning thread unless a wake-up is on
    /// its way or `wake` is false (the owning thread itself, which looks
    /// again before it sleeps). False, and nothing queued, once closed.
    @discardableResult
    public func push(_ command: Command, wake: Bool = true) -> Bool {
        // (queued, write a wake-up byte)
        let (queued, write) = state.withLock { state -> (Bool, Bool) in
            if state.closed { return (false, false) }
            state.commands.append(command)
            if state.signalled || !wake { return (true, false) }
            state.signalled = true
            return (true, true)
        }
        if write { writeWakeByte() }
        return queued
    }

    /// Wakes the owning thread without a command (its state changed some
    /// other way), unless a wake-up is on its way or the inbox is closed.
    public func wake() {
        let write = state.withLock { state -> Bool in
            defer { state.signalled = true }
            return !state.signalled && !state.closed
        }
        if write { writeWakeByte() }
    }

    /// Commands waiting (owning thread, before it sleeps).
    public var hasCommands: Bool { state.withLock { !$0.commands.isEmpty } }

    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Takes every queued command (owning thread only); empties the pipe
    /// first when `drainWakeUp` (poll(2) said it had something). A wake-up
    /// that comes after the pipe is emptied finds `signalled` still set and
    /// writes nothing, but its command or state change is seen here or on
    /// the owning thread's next look, which follows this call.
    public func takeAll(into commands: inout [Command], drainWakeUp: Bool = true) {
        if drainWakeUp { drainPipe() }
        state.withLock { state in
            swap(&commands, &state.commands)
            state.signalled = false
        }
    }

    /// `takeAll(into:)` into a new array.
    public func takeAll() -> [Command] {
        var commands: [Command] = []
        takeAll(into: &commands)
        return commands
    }

    /// Sleeps until a wake-up or `timeoutMs` (-1: no limit), for a thread
    /// that polls nothing else; then clears the wake-up.
    public func wait(timeoutMs: Int32) {
        var fd = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
        _ = poll(&fd, 1, timeoutMs)
        drainPipe()
        state.withLock { $0.signalled = false }
    }

    /// Refuses every later command, wakes the owning thread so that it
    /// sees the close, and returns the commands still queued.
    @discardableResult
    public func close() -> [Command] {
        let (left, write) = state.withLock { state -> ([Command], Bool) in
            state.closed = true
            defer { state.commands = []; state.signalled = true }
            return (state.commands, !state.signalled)
        }
        if write { writeWakeByte() }
        return left
    }

    private func writeWakeByte() {
        var byte: UInt8 = 1
        _ = Glibc.write(writeFD, &byte, 1)
    }

    /// One read, as a rule: a byte or two are outstanding at most (one per
    /// `signalled` flip; a `takeAll` that did not drain clears the flag
    /// with its byte still unread), so a read that does not fill the
    /// scratch emptied the pipe, and the read that would say so (EAGAIN)
    /// is a system call saved on every wake-up. Keep the loop: a full read
    /// may leave more.
    private func drainPipe() {
        var scratch: (UInt64, UInt64) = (0, 0)
        let size = MemoryLayout.size(ofValue: scratch)
        while read(readFD, &scratch, size) == size {}
    }
}

/// The system would not give a wake-up pipe (EMFILE, ENFILE).
public struct WakePipeError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var description: String { String(cString: strerror(code)) }
}

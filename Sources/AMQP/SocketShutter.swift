import Glibc
import Synchronization

/// Lets any thread drop a connection's socket, for a broker that no longer
/// reads (a blocked connection): the closing handshake would wait for a
/// reply that never comes. shutdown(2) wakes the I/O thread, which then
/// finds the connection lost and ends it as usual.
final class SocketShutter: Sendable {
    /// Guards the descriptor. `shutDown` calls shutdown(2) under the lock on
    /// purpose: the I/O thread clears the descriptor under the same lock
    /// before closing it, so its number can never be reused by another file
    /// in between.
    private let descriptor = Mutex<Int32>(-1)

    func set(_ fd: Int32) { descriptor.withLock { $0 = fd } }

    func clear() { descriptor.withLock { $0 = -1 } }

    func shutDown() {
        descriptor.withLock { fd in
            if fd >= 0 { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}

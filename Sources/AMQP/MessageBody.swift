import CRabbitMQ
import Glibc
import Synchronization

/// A message body, read in place.
///
/// rabbitmq-c reads each delivered body into a buffer it `malloc`s for
/// that message alone (`amqp_read_message`); the body takes that buffer
/// over instead of copying it, and frees it when the last reference goes
/// (the delivery is settled and its handler, stdin write and retry or
/// dead-letter copy are done with it). A body held only by its delivery
/// thus lives exactly as long as the delivery is in flight, so a consumer
/// holds at most about prefetch x body size.
///
/// Sendable as checked by the compiler: it holds constants, and the one
/// thing made later (an array copy, on demand) behind a lock. The owned buffer is kept as its address, so no pointer that
/// could write is stored; the bytes were written before the body existed,
/// and every access hands out a read-only view.
public final class MessageBody: Sendable {
    private enum Storage: Sendable {
        /// The address of a buffer `malloc`ed by rabbitmq-c, freed in `deinit`.
        case owned(address: UInt)
        case array([UInt8])
    }

    private let storage: Storage
    public let count: Int
    /// Guards the array copy of an owned buffer, made on the first `bytes`.
    private let copy = Mutex<[UInt8]?>(nil)

    /// Takes over a buffer from `malloc` (as `amqp_read_message` makes);
    /// the caller must no longer free it.
    init(taking bytes: amqp_bytes_t) {
        if bytes.len > 0, let pointer = bytes.bytes {
            storage = .owned(address: UInt(bitPattern: pointer))
            count = bytes.len
        } else {
            free(bytes.bytes)
            storage = .array([])
            count = 0
        }
    }

    public init(_ bytes: [UInt8]) {
        storage = .array(bytes)
        count = bytes.count
    }

    deinit {
        if case .owned(let address) = storage { free(UnsafeMutableRawPointer(bitPattern: address)) }
    }

    public var isEmpty: Bool { count == 0 }

    /// The bytes, without a copy, for the length of `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .owned(let address): try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address), count: count))
        case .array(let array): try array.withUnsafeBytes(body)
        }
    }

    /// The bytes as an array: copied out of the buffer on the first read
    /// only, so code written for `[UInt8]` (`message.body[i]` in a loop)
    /// pays for one copy, not one per access.
    public var bytes: [UInt8] {
        switch storage {
        case .array(let array):
            return array
        case .owned(let address):
            return copy.withLock { copy in
                if let copy { return copy }
                let made = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address), count: count))
                copy = made
                return made
            }
        }
    }
}

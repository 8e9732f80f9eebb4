import CRabbitMQ
import Glibc

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
/// `@unchecked Sendable` without a lock: the bytes are written once, before
/// the body exists, and never again; every access only reads them.
public final class MessageBody: @unchecked Sendable {
    private enum Storage {
        /// `malloc`ed by rabbitmq-c, freed in `deinit`.
        case owned(UnsafeMutableRawPointer)
        case array([UInt8])
    }

    private let storage: Storage
    public let count: Int

    /// Takes over a buffer from `malloc` (as `amqp_read_message` makes);
    /// the caller must no longer free it.
    init(taking bytes: amqp_bytes_t) {
        if bytes.len > 0, let pointer = bytes.bytes {
            storage = .owned(pointer)
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
        if case .owned(let pointer) = storage { free(pointer) }
    }

    public var isEmpty: Bool { count == 0 }

    /// The bytes, without a copy, for the length of `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case .owned(let pointer): try body(UnsafeRawBufferPointer(start: pointer, count: count))
        case .array(let array): try array.withUnsafeBytes(body)
        }
    }

    /// A copy of the bytes.
    public var bytes: [UInt8] {
        switch storage {
        case .owned(let pointer): Array(UnsafeRawBufferPointer(start: pointer, count: count))
        case .array(let array): array
        }
    }
}

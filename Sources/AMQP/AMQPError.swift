/// An error from the AMQP layer.
///
/// A struct with an extensible code rather than an enum, so new failure kinds
/// do not break callers; the classification tells the caller what to do
/// (reconnect, reopen a channel, or give up) without matching every case.
public struct AMQPError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public static let connectFailed = Code(name: "connect failed")
        public static let loginRefused = Code(name: "login refused")
        public static let connectionLost = Code(name: "connection lost")
        public static let connectionClosedByBroker = Code(name: "connection closed by broker")
        public static let channelClosedByBroker = Code(name: "channel closed by broker")
        public static let protocolError = Code(name: "protocol error")
        public static let closed = Code(name: "connection closed")
        public static let publishRejected = Code(name: "publish rejected")
        public static let invalidArgument = Code(name: "invalid argument")
        /// A declare refused (406) because the queue or exchange exists with
        /// other arguments: only an operator can settle it.
        public static let inequivalentArguments = Code(name: "inequivalent arguments")
        public var description: String { name }
    }

    public var code: Code
    /// What went wrong, in words an operator can act on.
    public var reason: String
    /// The AMQP reply code when the broker sent one (404 NOT_FOUND, 406 PRECONDITION_FAILED, 320 CONNECTION_FORCED ...).
    public var replyCode: UInt16?
    public var file: String
    public var line: Int

    public init(_ code: Code, _ reason: String, replyCode: UInt16? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.replyCode = replyCode
        self.file = file
        self.line = line
    }

    /// The connection is gone; everything on it (channels, delivery tags) is void.
    public var isConnectionFatal: Bool {
        code == .connectFailed || code == .connectionLost || code == .connectionClosedByBroker
            || code == .closed || code == .loginRefused
    }

    /// Trying again later (after a reconnect) may succeed.
    public var isRetriable: Bool {
        code == .connectFailed || code == .connectionLost || code == .connectionClosedByBroker
    }

    public var description: String {
        if let replyCode { return "\(code): \(reason) (reply code \(replyCode))" }
        return "\(code): \(reason)"
    }
}

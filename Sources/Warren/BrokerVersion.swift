/// The RabbitMQ version a broker announces (its `version` server
/// property), reduced to what changes warren's behaviour: how quorum queues
/// count returned messages toward their delivery limit.
///
/// - RabbitMQ 3.x: a quorum queue has no delivery limit unless one is set,
///   and a negative `x-delivery-limit` is no "unlimited" there: it is never
///   sent to it.
/// - RabbitMQ 4.0 and later: every quorum queue has a delivery limit of 20
///   unless told otherwise, and -1 means no limit. A message returned more
///   often is dead-lettered, or dropped when the queue has no route.
/// - RabbitMQ 4.0 to 4.2: every return counts, `basic.nack` with requeue
///   included, so each `warren dlq` read of a quorum queue spends one.
///   4.3 counts only `basic.reject` (a failure), not `basic.nack`.
public struct BrokerVersion: Sendable, Equatable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// `4.1.2`, `3.10.8`, `4.0.0-rc.1` -> (4, 1), (3, 10), (4, 0); nil when
    /// the text does not start with two numbers (another broker, or none).
    public init?(_ text: String?) {
        guard let text else { return nil }
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let major = Int(parts[0]),
              let minor = Int(parts[1].prefix { $0.isASCII && $0.isNumber }), !parts[1].isEmpty else { return nil }
        self.init(major: major, minor: minor)
    }

    public var description: String { "\(major).\(minor)" }

    public static func < (a: BrokerVersion, b: BrokerVersion) -> Bool { (a.major, a.minor) < (b.major, b.minor) }

    /// Whether `x-delivery-limit = -1` means "no limit" (RabbitMQ 4 and later).
    public var acceptsUnlimitedDeliveryLimit: Bool { major >= 4 }

    /// Whether a quorum queue counts a `basic.nack` with requeue toward
    /// its delivery limit (RabbitMQ 4.0 to 4.2), whose default is then 20.
    public var countsEveryReturn: Bool { major == 4 && minor < 3 }

    /// The arguments of a dead-letter queue of `quorum` type warren
    /// declares: on RabbitMQ 4 with no delivery limit (a dead letter waits
    /// for an operator, whose every read may count as a return); on 3.x,
    /// or an unknown broker, nothing but the type.
    public static func deadLetterQueueArguments(quorum: Bool, broker: BrokerVersion?) -> [(key: String, value: Int64?)] {
        guard quorum else { return [] }
        if let broker, broker.acceptsUnlimitedDeliveryLimit { return [("x-delivery-limit", -1)] }
        return []
    }
}

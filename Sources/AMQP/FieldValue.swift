/// A value in an AMQP field table (message headers, queue arguments).
///
/// Every wire kind keeps its own case, so a table read from a message can be
/// written back unchanged (retry and dead-letter copies preserve headers).
public enum FieldValue: Sendable, Equatable {
    case bool(Bool)
    case int8(Int8)
    case uint8(UInt8)
    case int16(Int16)
    case uint16(UInt16)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case float(Float)
    case double(Double)
    case decimal(scale: UInt8, value: UInt32)
    /// A long string. AMQP strings are bytes; most are UTF-8.
    case string([UInt8])
    case bytes([UInt8])
    case timestamp(UInt64)
    case table(FieldTable)
    case array([FieldValue])
    case void

    /// The text of a string value, when it is valid UTF-8.
    public var stringValue: String? {
        if case .string(let bytes) = self { return String(validating: bytes, as: UTF8.self) }
        return nil
    }

    /// The value as an integer when it is one of the integer kinds.
    public var integerValue: Int64? {
        switch self {
        case .int8(let v): Int64(v)
        case .uint8(let v): Int64(v)
        case .int16(let v): Int64(v)
        case .uint16(let v): Int64(v)
        case .int32(let v): Int64(v)
        case .uint32(let v): Int64(v)
        case .int64(let v): v
        case .uint64(let v): v <= UInt64(Int64.max) ? Int64(v) : nil
        default: nil
        }
    }

    public static func string(_ text: String) -> FieldValue { .string(Array(text.utf8)) }
}

/// An ordered field table: order and duplicates are kept as they came.
public struct FieldTable: Sendable, Equatable {
    public var entries: [(key: String, value: FieldValue)]

    public init(_ entries: [(key: String, value: FieldValue)] = []) { self.entries = entries }

    public subscript(key: String) -> FieldValue? {
        get { entries.last(where: { $0.key == key })?.value }
        set {
            entries.removeAll { $0.key == key }
            if let newValue { entries.append((key, newValue)) }
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    public static func == (lhs: FieldTable, rhs: FieldTable) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

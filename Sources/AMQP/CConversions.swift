import CRabbitMQ
import Glibc

// Copies out of rabbitmq-c memory. Everything here copies: the library reuses
// its buffers on the next call, so no Swift value may point into them.

extension amqp_bytes_t {
    var array: [UInt8] {
        guard len > 0, let bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: bytes, count: len))
    }

    /// A short string, decoded so that it encodes back to these very
    /// bytes (see `ShortStringBytes`).
    var string: String {
        guard len > 0, let bytes else { return "" }
        return ShortStringBytes.decode(UnsafeRawBufferPointer(start: bytes, count: len))
    }
}

extension FieldTable {
    init(_ table: amqp_table_t) {
        var entries: [(key: String, value: FieldValue)] = []
        entries.reserveCapacity(Int(table.num_entries))
        for index in 0..<Int(table.num_entries) {
            let entry = table.entries[index]
            entries.append((entry.key.string, FieldValue(entry.value)))
        }
        self.init(entries)
    }
}

extension FieldValue {
    init(_ field: amqp_field_value_t) {
        let v = field.value
        switch Int32(field.kind) {
        case Int32(AMQP_FIELD_KIND_BOOLEAN.rawValue): self = .bool(v.boolean != 0)
        case Int32(AMQP_FIELD_KIND_I8.rawValue): self = .int8(v.i8)
        case Int32(AMQP_FIELD_KIND_U8.rawValue): self = .uint8(v.u8)
        case Int32(AMQP_FIELD_KIND_I16.rawValue): self = .int16(v.i16)
        case Int32(AMQP_FIELD_KIND_U16.rawValue): self = .uint16(v.u16)
        case Int32(AMQP_FIELD_KIND_I32.rawValue): self = .int32(v.i32)
        case Int32(AMQP_FIELD_KIND_U32.rawValue): self = .uint32(v.u32)
        case Int32(AMQP_FIELD_KIND_I64.rawValue): self = .int64(v.i64)
        case Int32(AMQP_FIELD_KIND_U64.rawValue): self = .uint64(v.u64)
        case Int32(AMQP_FIELD_KIND_F32.rawValue): self = .float(v.f32)
        case Int32(AMQP_FIELD_KIND_F64.rawValue): self = .double(v.f64)
        case Int32(AMQP_FIELD_KIND_DECIMAL.rawValue): self = .decimal(scale: v.decimal.decimals, value: v.decimal.value)
        case Int32(AMQP_FIELD_KIND_UTF8.rawValue): self = .string(v.bytes.array)
        case Int32(AMQP_FIELD_KIND_BYTES.rawValue): self = .bytes(v.bytes.array)
        case Int32(AMQP_FIELD_KIND_TIMESTAMP.rawValue): self = .timestamp(v.u64)
        case Int32(AMQP_FIELD_KIND_TABLE.rawValue): self = .table(FieldTable(v.table))
        case Int32(AMQP_FIELD_KIND_ARRAY.rawValue):
            var items: [FieldValue] = []
            for index in 0..<Int(v.array.num_entries) { items.append(FieldValue(v.array.entries[index])) }
            self = .array(items)
        default: self = .void
        }
    }
}

extension MessageProperties {
    /// Built in one memberwise call: assigning field by field to `self`
    /// after `self.init()` made the compiler copy and destroy the whole
    /// value, on the I/O thread, for every delivery.
    init(_ p: amqp_basic_properties_t) {
        let flags = p._flags
        func has(_ flag: Int32) -> Bool { flags & amqp_flags_t(flag) != 0 }
        self.init(contentType: has(AMQP_BASIC_CONTENT_TYPE_FLAG) ? p.content_type.string : nil,
                  contentEncoding: has(AMQP_BASIC_CONTENT_ENCODING_FLAG) ? p.content_encoding.string : nil,
                  headers: has(AMQP_BASIC_HEADERS_FLAG) ? FieldTable(p.headers) : nil,
                  deliveryMode: has(AMQP_BASIC_DELIVERY_MODE_FLAG) ? p.delivery_mode : nil,
                  priority: has(AMQP_BASIC_PRIORITY_FLAG) ? p.priority : nil,
                  correlationId: has(AMQP_BASIC_CORRELATION_ID_FLAG) ? p.correlation_id.string : nil,
                  replyTo: has(AMQP_BASIC_REPLY_TO_FLAG) ? p.reply_to.string : nil,
                  expiration: has(AMQP_BASIC_EXPIRATION_FLAG) ? p.expiration.string : nil,
                  messageId: has(AMQP_BASIC_MESSAGE_ID_FLAG) ? p.message_id.string : nil,
                  timestamp: has(AMQP_BASIC_TIMESTAMP_FLAG) ? p.timestamp : nil,
                  type: has(AMQP_BASIC_TYPE_FLAG) ? p.type.string : nil,
                  userId: has(AMQP_BASIC_USER_ID_FLAG) ? p.user_id.string : nil,
                  appId: has(AMQP_BASIC_APP_ID_FLAG) ? p.app_id.string : nil)
    }
}

/// Builds C structures that point into memory it owns, for the length of one
/// library call: `withProperties { ptr in amqp_basic_publish(...) }`.
/// Everything allocated is freed when the arena is.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { for pointer in allocations { free(pointer) } }

    func bytes(_ array: [UInt8]) -> amqp_bytes_t {
        guard !array.isEmpty else { return amqp_bytes_t(len: 0, bytes: nil) }
        let pointer = malloc(array.count)!
        allocations.append(pointer)
        array.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: array.count) }
        return amqp_bytes_t(len: array.count, bytes: pointer)
    }

    /// A short string's bytes: the ones it was decoded from, if it was.
    func bytes(_ text: String) -> amqp_bytes_t { bytes(ShortStringBytes.encode(text)) }

    func table(_ table: FieldTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_empty_table }
        let entries = allocate(amqp_table_entry_t.self, count: table.entries.count)
        for (index, entry) in table.entries.enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(entry.key), value: field(entry.value))
        }
        return amqp_table_t(num_entries: Int32(table.entries.count), entries: entries)
    }

    func field(_ value: FieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        func kind(_ k: amqp_field_value_kind_t) -> UInt8 { UInt8(k.rawValue) }
        switch value {
        case .bool(let b): field.kind = kind(AMQP_FIELD_KIND_BOOLEAN); field.value.boolean = b ? 1 : 0
        case .int8(let v): field.kind = kind(AMQP_FIELD_KIND_I8); field.value.i8 = v
        case .uint8(let v): field.kind = kind(AMQP_FIELD_KIND_U8); field.value.u8 = v
        case .int16(let v): field.kind = kind(AMQP_FIELD_KIND_I16); field.value.i16 = v
        case .uint16(let v): field.kind = kind(AMQP_FIELD_KIND_U16); field.value.u16 = v
        case .int32(let v): field.kind = kind(AMQP_FIELD_KIND_I32); field.value.i32 = v
        case .uint32(let v): field.kind = kind(AMQP_FIELD_KIND_U32); field.value.u32 = v
        case .int64(let v): field.kind = kind(AMQP_FIELD_KIND_I64); field.value.i64 = v
        case .uint64(let v): field.kind = kind(AMQP_FIELD_KIND_U64); field.value.u64 = v
        case .float(let v): field.kind = kind(AMQP_FIELD_KIND_F32); field.value.f32 = v
        case .double(let v): field.kind = kind(AMQP_FIELD_KIND_F64); field.value.f64 = v
        case .decimal(let scale, let v):
            field.kind = kind(AMQP_FIELD_KIND_DECIMAL); field.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .string(let b): field.kind = kind(AMQP_FIELD_KIND_UTF8); field.value.bytes = bytes(b)
        case .bytes(let b): field.kind = kind(AMQP_FIELD_KIND_BYTES); field.value.bytes = bytes(b)
        case .timestamp(let v): field.kind = kind(AMQP_FIELD_KIND_TIMESTAMP); field.value.u64 = v
        case .table(let t): field.kind = kind(AMQP_FIELD_KIND_TABLE); field.value.table = table(t)
        case .array(let items):
            field.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = allocate(amqp_field_value_t.self, count: max(items.count, 1))
            for (index, item) in items.enumerated() { entries[index] = self.field(item) }
            field.value.array = amqp_array_t(num_entries: Int32(items.count), entries: entries)
        case .void: field.kind = kind(AMQP_FIELD_KIND_VOID)
        }
        return field
    }

    func properties(_ p: MessageProperties) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: Int32 = 0
        if let v = p.contentType { c.content_type = bytes(v); flags |= AMQP_BASIC_CONTENT_TYPE_FLAG }
        if let v = p.contentEncoding { c.content_encoding = bytes(v); flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG }
        if let v = p.headers { c.headers = table(v); flags |= AMQP_BASIC_HEADERS_FLAG }
        if let v = p.deliveryMode { c.delivery_mode = v; flags |= AMQP_BASIC_DELIVERY_MODE_FLAG }
        if let v = p.priority { c.priority = v; flags |= AMQP_BASIC_PRIORITY_FLAG }
        if let v = p.correlationId { c.correlation_id = bytes(v); flags |= AMQP_BASIC_CORRELATION_ID_FLAG }
        if let v = p.replyTo { c.reply_to = bytes(v); flags |= AMQP_BASIC_REPLY_TO_FLAG }
        if let v = p.expiration { c.expiration = bytes(v); flags |= AMQP_BASIC_EXPIRATION_FLAG }
        if let v = p.messageId { c.message_id = bytes(v); flags |= AMQP_BASIC_MESSAGE_ID_FLAG }
        if let v = p.timestamp { c.timestamp = v; flags |= AMQP_BASIC_TIMESTAMP_FLAG }
        if let v = p.type { c.type = bytes(v); flags |= AMQP_BASIC_TYPE_FLAG }
        if let v = p.userId { c.user_id = bytes(v); flags |= AMQP_BASIC_USER_ID_FLAG }
        if let v = p.appId { c.app_id = bytes(v); flags |= AMQP_BASIC_APP_ID_FLAG }
        c._flags = amqp_flags_t(flags)
        return c
    }

    private func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = calloc(count, MemoryLayout<T>.stride)!
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: count)
    }
}

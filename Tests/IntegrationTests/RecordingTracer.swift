import Synchronization
import Tracing

/// A tracer that speaks W3C trace context (`traceparent`, `tracestate`)
/// and keeps every span it started, for the tracing tests: what an
/// OpenTelemetry tracer would export, without an exporter.
final class RecordingTracer: Tracer {
    typealias Span = RecordedSpan

    private let spans = Mutex<[RecordedSpan]>([])
    private let nextID = Atomic<UInt64>(1)
    private let longest = Atomic<Int>(0)

    /// The longest value the tracer was handed to parse.
    var longestExtracted: Int { longest.load(ordering: .relaxed) }

    var all: [RecordedSpan] { spans.withLock { $0 } }
    var ended: [RecordedSpan] { all.filter { $0.endCount > 0 } }

    func startSpan<Instant: TracerInstant>(_ operationName: String, context: @autoclosure () -> ServiceContext,
                                           ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
                                           function: String, file fileID: String, line: UInt) -> RecordedSpan {
        let parent = context()
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let spanID = Self.hex(id, digits: 16)
        let traceID = parent.w3c?.traceID ?? Self.hex(0xabc0_0000 + id, digits: 32)
        var own = parent
        own.w3c = W3CContext(traceID: traceID, spanID: spanID, state: parent.w3c?.state)
        let span = RecordedSpan(operationName: operationName, kind: kind, context: own, parentSpanID: parent.w3c?.spanID)
        spans.withLock { $0.append(span) }
        return span
    }

    func forceFlush() {}

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {
        let header = extractor.extract(key: "traceparent", from: carrier)
        longest.max(header?.utf8.count ?? 0, ordering: .relaxed)
        guard let header, let parsed = W3CContext(traceparent: header) else { return }
        var found = parsed
        found.state = extractor.extract(key: "tracestate", from: carrier)
        longest.max(found.state?.utf8.count ?? 0, ordering: .relaxed)
        context.w3c = found
    }

    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let w3c = context.w3c else { return }
        injector.inject(w3c.traceparent, forKey: "traceparent", into: &carrier)
        if let state = w3c.state { injector.inject(state, forKey: "tracestate", into: &carrier) }
    }

    static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }
}

struct W3CContext: Sendable, Equatable {
    var traceID: String
    var spanID: String
    var state: String?

    init(traceID: String, spanID: String, state: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.state = state
    }

    /// `00-<32 hex>-<16 hex>-<2 hex>`, strictly; anything else is no parent.
    init?(traceparent: String) {
        let parts = traceparent.split(separator: "-", omittingEmptySubsequences: false)
        let isHex = { (part: Substring) in part.allSatisfy { $0.isHexDigit && !$0.isUppercase } }
        guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
              parts.allSatisfy(isHex) else { return nil }
        self.init(traceID: String(parts[1]), spanID: String(parts[2]))
    }

    var traceparent: String { "00-\(traceID)-\(spanID)-01" }
}

private enum W3CKey: ServiceContextKey {
    typealias Value = W3CContext
}

extension ServiceContext {
    var w3c: W3CContext? {
        get { self[W3CKey.self] }
        set { self[W3CKey.self] = newValue }
    }
}

/// A span the `RecordingTracer` started; `Mutex` guards what a span changes.
final class RecordedSpan: Span {
    struct State {
        var operationName: String
        var attributes = SpanAttributes()
        var events: [String] = []
        var status: SpanStatus?
        var endCount = 0
    }

    let context: ServiceContext
    let kind: SpanKind
    let parentSpanID: String?
    private let state: Mutex<State>

    init(operationName: String, kind: SpanKind, context: ServiceContext, parentSpanID: String?) {
        self.context = context
        self.kind = kind
        self.parentSpanID = parentSpanID
        state = Mutex(State(operationName: operationName))
    }

    var traceID: String { context.w3c!.traceID }
    var spanID: String { context.w3c!.spanID }
    var traceparent: String { context.w3c!.traceparent }
    var events: [String] { state.withLock { $0.events } }
    var status: SpanStatus? { state.withLock { $0.status } }
    var endCount: Int { state.withLock { $0.endCount } }

    func attribute(_ name: String) -> String? {
        guard let value = attributes.get(name) else { return nil }
        switch value {
        case .string(let text): return text
        case .int64(let number): return "\(number)"
        case .bool(let flag): return "\(flag)"
        default: return "\(value)"
        }
    }

    var operationName: String {
        get { state.withLock { $0.operationName } }
        set { state.withLock { $0.operationName = newValue } }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    var isRecording: Bool { endCount == 0 }

    func setStatus(_ status: SpanStatus) { state.withLock { $0.status = status } }
    func addEvent(_ event: SpanEvent) { state.withLock { $0.events.append(event.name) } }
    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {}
    func addLink(_ link: SpanLink) {}
    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) { state.withLock { $0.endCount += 1 } }
}

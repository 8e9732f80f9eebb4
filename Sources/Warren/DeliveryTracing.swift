import AMQP
import Synchronization
public import Tracing

/// A span per delivery, through swift-distributed-tracing, when the
/// embedder gives warren a tracer (`WarrenRuntime(tracer:)`). Without one,
/// nothing here runs: no span, no header rewritten, no cost per message.
/// The tracer is called on the thread the worker runs on (the connection's
/// I/O thread): its calls must not block.
///
/// The span starts when a worker takes the message and ends when it is
/// settled, at its outcome line (`SettledAs`): one span per attempt.
/// Its parent is the context the message carries (`traceparent` and
/// `tracestate`, read by the tracer), and its own context replaces those
/// headers on the message before any handler sees it, so that:
/// - a command handler's `TRACEPARENT` and a persistent worker's envelope
///   name this span, and the handler's own spans are its children;
/// - retry and dead-letter copies, replies and output messages (which take
///   the message's headers) carry it on: the next attempt's span is a child
///   of this one, and a trace follows a message through its retries.
struct DeliveryTracing: Sendable {
    let tracer: any Tracer

    /// nil for no tracer, and for the no-op one: then nothing runs per
    /// message. (No look at `InstrumentationSystem`: an embedder that
    /// bootstrapped a tracer passes `InstrumentationSystem.tracer`.)
    static func resolve(_ given: (any Tracer)?) -> DeliveryTracing? {
        guard let given, !(given is NoOpTracer) else { return nil }
        return DeliveryTracing(tracer: given)
    }

    /// The W3C headers: a parent's, replaced by the span's or removed.
    static let traceHeaders = ["traceparent", "tracestate"]

    /// Starts the span of `message` and rewrites its trace headers to name it.
    func start(_ message: inout Message) {
        let properties = message.delivery.properties
        var parent = ServiceContext.topLevel
        if let headers = properties.headers {
            tracer.extract(headers, into: &parent, using: HeaderExtractor())
        }
        let span = tracer.startSpan("process \(message.queue)", context: parent, ofKind: .consumer)
        var attributes = SpanAttributes()
        attributes.set("messaging.system", value: .string("rabbitmq"))
        attributes.set("messaging.operation.type", value: .string("process"))
        attributes.set("messaging.destination.name", value: .string(message.queue))
        let origin = message.origin
        if !origin.exchange.isEmpty { attributes.set("messaging.rabbitmq.exchange", value: .string(origin.exchange)) }
        attributes.set("messaging.rabbitmq.destination.routing_key", value: .string(origin.routingKey))
        if properties.messageId != nil { attributes.set("messaging.message.id", value: .string(message.logID)) }
        if let correlationId = properties.correlationId {
            attributes.set("messaging.message.conversation_id", value: .string(correlationId.capped(atBytes: Message.logIDLimit)))
        }
        attributes.set("messaging.message.body.size", value: .int64(Int64(message.delivery.payload.count)))
        attributes.set("warren.consumer", value: .string(message.consumer))
        attributes.set("warren.attempt", value: .int64(Int64(message.attempt)))
        attributes.set("warren.redelivered", value: .bool(message.delivery.redelivered))
        span.attributes.merge(attributes)
        var injected: [String: String] = [:]
        tracer.inject(span.context, into: &injected, using: DictionaryInjector())
        let carried = Self.publishable(injected)
        if !carried.isEmpty {
            var rewritten = properties
            rewritten.headers = Self.rewrite(properties.headers ?? FieldTable(), with: carried)
            message.delivery = message.delivery.with(properties: rewritten)
        }
        message.trace = DeliveryTrace(span: span, carried: carried.map(\.key))
    }

    /// What a tracer injected that can go into headers, in a stable order:
    /// a key must be an AMQP short string (rabbitmq-c would cut a longer
    /// one's length to a byte and corrupt the frame), a value as bounded as
    /// what warren reads.
    static func publishable(_ injected: [String: String]) -> [(key: String, value: String)] {
        injected.filter { !$0.key.isEmpty && $0.key.utf8.count <= 255 && $0.value.utf8.count <= HeaderExtractor.valueLimit }
            .sorted { $0.key < $1.key }
            .map { (key: $0.key, value: $0.value) }
    }

    /// `headers` with each carried header in the place of the first one of
    /// that name, in any case (the others removed), or last when there was
    /// none: the environment's header budget is spent in table order, and
    /// the span's `TRACEPARENT` must not lose the place its parent had. A
    /// W3C header the tracer did not write again goes, with the parent it
    /// belonged to.
    static func rewrite(_ headers: FieldTable, with carried: [(key: String, value: String)]) -> FieldTable {
        var entries = headers.entries
        let written = Set(carried.map { $0.key.lowercased() })
        entries.removeAll { entry in
            let name = entry.key.lowercased()
            return traceHeaders.contains(name) && !written.contains(name)
        }
        for (key, value) in carried {
            let name = key.lowercased()
            if let first = entries.firstIndex(where: { $0.key.lowercased() == name }) {
                entries[first] = (key, .string(value))
                var index = entries.index(after: first)
                while index < entries.endIndex {
                    if entries[index].key.lowercased() == name { entries.remove(at: index) } else { index += 1 }
                }
            } else {
                entries.append((key, .string(value)))
            }
        }
        return FieldTable(entries)
    }
}

/// One delivery's span, ended once, by whichever settles the message.
/// (The span is `Sendable`; `ended` makes ending it once safe from any task.)
final class DeliveryTrace: Sendable {
    let span: any Span
    /// The headers the tracer wrote: replies and output messages carry them on.
    let carried: [String]
    private let ended = Atomic<Bool>(false)

    init(span: any Span, carried: [String]) {
        self.span = span
        self.carried = carried
    }

    func event(_ name: String) {
        span.addEvent(SpanEvent(name: name))
    }

    /// Ends the span with the outcome its outcome line says, and a
    /// failure's reason, capped as in the log. `failed`: an error status
    /// (the handler failed, or a copy was refused), not for what is nobody's
    /// failure (a stop, warren's own shortage, a release, a drop).
    func end(_ outcome: SettledAs, reason: String?, failed: Bool) {
        guard ended.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        let capped = reason.map { $0.capped(atBytes: Consumer.reasonLogLimit) }
        span.attributes.set("warren.outcome", value: .string(outcome.rawValue))
        if let capped { span.attributes.set("warren.reason", value: .string(capped)) }
        if failed {
            span.setStatus(SpanStatus(code: .error, message: capped))
        } else if outcome == .ack {
            span.setStatus(SpanStatus(code: .ok))
        }
        span.end()
    }
}

/// Reads trace headers for a tracer. A publisher picks them: only string
/// values, and none longer than W3C's own bounds allow (a `tracestate` of
/// 32 members of 256 bytes each), so a megabyte header never reaches a
/// tracer's parser.
struct HeaderExtractor: Extractor {
    static let valueLimit = 8 * 1024

    /// The last header of that name in any case, as warren reads
    /// `TRACEPARENT` for a command.
    func extract(key: String, from headers: FieldTable) -> String? {
        let name = key.lowercased()
        guard case .string(let bytes)? = headers.entries.last(where: { $0.key.lowercased() == name })?.value,
              bytes.count <= Self.valueLimit else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

extension Message {
    /// The context of this delivery's span (nil when warren traces
    /// nothing): an in-process handler's spans take it as their parent.
    /// warren also runs in-process handlers with it as `ServiceContext.current`.
    public var traceContext: ServiceContext? { trace?.span.context }
}

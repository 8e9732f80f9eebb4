import AMQP
import Synchronization
public import Tracing

/// A span per delivery, through swift-distributed-tracing, when the
/// embedder gives warren a tracer (`WarrenRuntime(tracer:)`) or bootstraps
/// `InstrumentationSystem` with one. Without either, nothing here runs: no
/// span, no header rewritten, no cost per message.
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

    /// The tracer to use: the one given, or the one bootstrapped into
    /// `InstrumentationSystem`, read once; nil when that is the no-op one.
    static func resolve(_ given: (any Tracer)?, bootstrapped: @autoclosure () -> any Tracer = InstrumentationSystem.tracer)
        -> DeliveryTracing? {
        if let given { return DeliveryTracing(tracer: given) }
        let bootstrapped = bootstrapped()
        if bootstrapped is NoOpTracer { return nil }
        return DeliveryTracing(tracer: bootstrapped)
    }

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
        if properties.correlationId != nil {
            attributes.set("messaging.message.conversation_id", value: .string(Message.capped(properties.correlationId)))
        }
        attributes.set("messaging.message.body.size", value: .int64(Int64(message.delivery.payload.count)))
        attributes.set("warren.consumer", value: .string(message.consumer))
        attributes.set("warren.attempt", value: .int64(Int64(message.attempt)))
        attributes.set("warren.redelivered", value: .bool(message.delivery.redelivered))
        span.attributes.merge(attributes)
        var injected: [String: String] = [:]
        tracer.inject(span.context, into: &injected, using: DictionaryInjector())
        if !injected.isEmpty {
            var headers = properties.headers ?? FieldTable()
            // A tracestate belongs to the parent it came with: gone unless the tracer wrote its own.
            if injected["traceparent"] != nil && injected["tracestate"] == nil { headers["tracestate"] = nil }
            for (key, value) in injected.sorted(by: { $0.key < $1.key }) { headers[key] = .string(value) }
            var rewritten = properties
            rewritten.headers = headers
            message.delivery = message.delivery.with(properties: rewritten)
        }
        message.trace = DeliveryTrace(span: span)
    }
}

/// One delivery's span, ended once, by whichever settles the message.
/// (The span is `Sendable`; `ended` makes ending it once safe from any task.)
final class DeliveryTrace: Sendable {
    let span: any Span
    private let ended = Atomic<Bool>(false)

    init(span: any Span) { self.span = span }

    func event(_ name: String) {
        span.addEvent(SpanEvent(name: name))
    }

    /// Ends the span with the outcome its outcome line says; a failure's
    /// reason, capped as in the log, and an error status for what did not
    /// succeed (a release or a drop is not the handler's failure).
    func end(_ outcome: SettledAs, reason: String?) {
        guard ended.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        span.attributes.set("warren.outcome", value: .string(outcome.rawValue))
        if let reason { span.attributes.set("warren.reason", value: .string(reason.capped(atBytes: Consumer.reasonLogLimit))) }
        switch outcome {
        case .retry, .deadLetter:
            span.setStatus(SpanStatus(code: .error, message: reason.map { $0.capped(atBytes: Consumer.reasonLogLimit) }))
        case .requeued where reason != nil:
            span.setStatus(SpanStatus(code: .error, message: reason.map { $0.capped(atBytes: Consumer.reasonLogLimit) }))
        case .ack:
            span.setStatus(SpanStatus(code: .ok))
        case .requeued, .released, .dropped:
            break
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

    func extract(key: String, from headers: FieldTable) -> String? {
        guard case .string(let bytes)? = headers[key], bytes.count <= Self.valueLimit else { return nil }
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

    static func capped(_ text: String?) -> String { (text ?? "").capped(atBytes: logIDLimit) }
}

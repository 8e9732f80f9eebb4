import AMQP
import Testing
import Tracing
@testable import Warren

/// Which tracer warren uses, and how a delivery's trace headers are
/// rewritten to name its span.
struct DeliveryTracingTests {
    /// Any tracer but the no-op one (it only delegates to it).
    struct OtherTracer: Tracer {
        let inner = NoOpTracer()
        func startSpan<Instant: TracerInstant>(_ operationName: String, context: @autoclosure () -> ServiceContext,
                                               ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
                                               function: String, file fileID: String, line: UInt) -> NoOpTracer.NoOpSpan {
            inner.startSpan(operationName, context: context(), ofKind: kind, at: instant(), function: function,
                            file: fileID, line: line)
        }
        func forceFlush() {}
        func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
        where Extract.Carrier == Carrier {}
        func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
        where Inject.Carrier == Carrier {}
    }

    @Test func noTracerAndTheNoOpTracerTraceNothing() {
        #expect(DeliveryTracing.resolve(nil) == nil)
        #expect(DeliveryTracing.resolve(NoOpTracer()) == nil)
    }

    @Test func aGivenTracerIsUsed() {
        #expect(DeliveryTracing.resolve(OtherTracer())?.tracer is OtherTracer)
    }

    func keys(_ table: FieldTable) -> [String] { table.entries.map(\.key) }

    @Test func theSpansTraceparentTakesThePlaceOfTheFirstOneInAnyCaseAndTheOthersGo() {
        let headers = FieldTable([("Traceparent", .string("old")), ("x-a", .string("a")), ("traceparent", .string("older")),
                                  ("TRACESTATE", .string("stale=1"))])
        let rewritten = DeliveryTracing.rewrite(headers, with: [(key: "traceparent", value: "new")])
        #expect(keys(rewritten) == ["traceparent", "x-a"])
        #expect(rewritten["traceparent"]?.stringValue == "new")
    }

    @Test func aTracestateTheTracerWroteIsKeptAndOneItDidNotGoes() {
        let headers = FieldTable([("tracestate", .string("stale=1")), ("traceparent", .string("old"))])
        let kept = DeliveryTracing.rewrite(headers, with: [(key: "traceparent", value: "new"), (key: "tracestate", value: "v=2")])
        #expect(keys(kept) == ["tracestate", "traceparent"])
        #expect(kept["tracestate"]?.stringValue == "v=2")
        let gone = DeliveryTracing.rewrite(headers, with: [(key: "traceparent", value: "new")])
        #expect(keys(gone) == ["traceparent"])
    }

    @Test func aHeaderTheMessageDidNotHaveIsAddedLast() {
        let rewritten = DeliveryTracing.rewrite(FieldTable([("x-a", .int64(1))]), with: [(key: "b3", value: "1-2")])
        #expect(keys(rewritten) == ["x-a", "b3"])
    }

    @Test func whatATracerInjectsMustFitAHeader() {
        let injected = ["traceparent": "00-1-2-01", String(repeating: "k", count: 256): "v", "": "v",
                        "huge": String(repeating: "v", count: HeaderExtractor.valueLimit + 1)]
        #expect(DeliveryTracing.publishable(injected).map(\.key) == ["traceparent"])
    }

    @Test func theParentIsReadFromTheLastHeaderOfThatNameInAnyCaseAndOnlyFromABoundedString() {
        let extractor = HeaderExtractor()
        #expect(extractor.extract(key: "traceparent", from: FieldTable([("TraceParent", .string("a")), ("traceparent", .string("b"))])) == "b")
        #expect(extractor.extract(key: "traceparent", from: FieldTable([("TRACEPARENT", .string("a"))])) == "a")
        #expect(extractor.extract(key: "traceparent", from: FieldTable([("traceparent", .int64(7))])) == nil)
        let long = String(repeating: "0", count: HeaderExtractor.valueLimit + 1)
        #expect(extractor.extract(key: "traceparent", from: FieldTable([("traceparent", .string(long))])) == nil)
    }
}

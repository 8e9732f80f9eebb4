import Testing
import Tracing
@testable import Warren

/// Which tracer warren uses: the one given, else the one bootstrapped
/// into `InstrumentationSystem`, else none (and then no cost per message).
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

    @Test func withNoTracerGivenOrBootstrappedNothingIsTraced() {
        #expect(DeliveryTracing.resolve(nil, bootstrapped: NoOpTracer()) == nil)
    }

    @Test func theBootstrappedTracerIsUsedWhenNoneIsGiven() {
        #expect(DeliveryTracing.resolve(nil, bootstrapped: OtherTracer())?.tracer is OtherTracer)
    }

    @Test func aGivenTracerWinsOverTheBootstrappedOne() {
        #expect(DeliveryTracing.resolve(NoOpTracer(), bootstrapped: OtherTracer())?.tracer is NoOpTracer)
    }
}

import Hummingbird
import Logging
import Metrics
import Prometheus
import Warren
import WarrenConfig

/// `[metrics] listen`: `/metrics` in the Prometheus text format, `/healthz`
/// (the process and its AMQP I/O loop are alive) and `/readyz` (every
/// consumer is consuming and the broker does not block publishing; 503
/// while starting, reconnecting, draining, paused or blocked).
enum MetricsServer {
    /// Installs the Prometheus backend for swift-metrics; call before the runtime is made.
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// - Parameter runtime: the current runtime (a reload replaces it).
    static func application(settings: MetricsSettings, registry: PrometheusCollectorRegistry,
                            runtime: @escaping @Sendable () -> WarrenRuntime, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        router.get("metrics") { _, _ -> String in
            runtime().recordScrapedGauges()
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return String(decoding: buffer, as: UTF8.self)
        }
        router.get("healthz") { _, _ -> String in
            guard runtime().isResponsive(within: 5000) else {
                throw HTTPError(.serviceUnavailable, message: "the AMQP I/O loop is not going round")
            }
            return "ok\n"
        }
        router.get("readyz") { _, _ -> String in
            if let reason = runtime().notReadyReason {
                throw HTTPError(.serviceUnavailable, message: reason)
            }
            return "ready\n"
        }
        return Application(router: router, configuration: .init(address: .hostname(settings.host, port: settings.port)),
                           logger: quiet(logger))
    }

    /// The server's own chatter (a line per request at info) stays out of warren's log.
    static func quiet(_ logger: Logger) -> Logger {
        var quiet = logger
        quiet.logLevel = .warning
        return quiet
    }
}

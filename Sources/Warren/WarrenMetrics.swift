import Metrics

/// warren's metrics, through swift-metrics: whatever backend the program
/// bootstrapped (the `warren` binary: Prometheus, names prefixed `warren_`);
/// none, and they cost next to nothing. Created once per consumer, so the
/// hot path only increments.
struct ConsumerMetrics: Sendable {
    let deliveries: Counter
    let acked: Counter
    let retried: Counter
    let deadLettered: Counter
    let requeued: Counter
    let retryPublishes: Counter
    let deadLetterPublishes: Counter
    let refusedPublishes: Counter
    /// Replies and output messages the broker confirmed.
    let replies: Counter
    let outputPublishes: Counter
    let handlerDuration: Metrics.Timer
    /// 1 while the circuit breaker keeps the consumer from consuming (open, or its one message running);
    /// 0 while it consumes (closed, or half-open: one message may come).
    let breakerOpen: Gauge

    init(_ consumer: ConsumerSettings) {
        let name = [("consumer", consumer.name)]
        deliveries = Counter(label: "warren_deliveries_total", dimensions: name)
        acked = Counter(label: "warren_outcomes_total", dimensions: name + [("outcome", "ack")])
        retried = Counter(label: "warren_outcomes_total", dimensions: name + [("outcome", "retry")])
        deadLettered = Counter(label: "warren_outcomes_total", dimensions: name + [("outcome", "dead_letter")])
        requeued = Counter(label: "warren_outcomes_total", dimensions: name + [("outcome", "requeue")])
        retryPublishes = Counter(label: "warren_retry_publishes_total", dimensions: name)
        deadLetterPublishes = Counter(label: "warren_dead_letter_publishes_total", dimensions: name)
        refusedPublishes = Counter(label: "warren_refused_publishes_total", dimensions: name)
        replies = Counter(label: "warren_replies_total", dimensions: name)
        outputPublishes = Counter(label: "warren_output_publishes_total", dimensions: name)
        handlerDuration = Metrics.Timer(label: "warren_handler_duration_seconds", dimensions: name, preferredDisplayUnit: .seconds)
        breakerOpen = Self.breakerOpen(consumer.name)
        Gauge(label: "warren_consumer_prefetch", dimensions: name).record(Int(consumer.prefetch))
        Gauge(label: "warren_consumer_concurrency", dimensions: name).record(consumer.concurrency)
    }

    /// `warren_breaker_open` of the consumer `name` (see `Consumer.exportBreaker`).
    static func breakerOpen(_ name: String) -> Gauge { Gauge(label: "warren_breaker_open", dimensions: [("consumer", name)]) }
}

/// The publishing connection's: 1 while the broker blocks it (a resource alarm).
struct PublisherMetrics: Sendable {
    let blocked = Gauge(label: "warren_broker_blocked")

    func record(blocked: Bool) { self.blocked.record(blocked ? 1 : 0) }
}

/// Process-wide metrics: the lifecycle state, messages in flight,
/// readiness, reconnects.
struct RuntimeMetrics: Sendable {
    let inFlight = Gauge(label: "warren_in_flight")
    /// 1 while `/readyz` would answer 200 (taken at each scrape): the
    /// alerting rules' "not ready" needs it as a number.
    let ready = Gauge(label: "warren_ready")
    let reconnects = Counter(label: "warren_reconnects_total")
    /// 1 while SIGTSTP has paused consuming.
    let paused = Gauge(label: "warren_paused")
    let states: [(name: String, gauge: Gauge)] = ["starting", "running", "reconnecting", "draining", "closing", "stopped"].map {
        ($0, Gauge(label: "warren_lifecycle_state", dimensions: [("state", $0)]))
    }

    func record(_ state: Lifecycle.State, inFlight: Int) {
        let current: String
        switch state {
        case .starting: current = "starting"
        case .running: current = "running"
        case .reconnecting: current = "reconnecting"
        case .draining: current = "draining"
        case .closing: current = "closing"
        case .stopped: current = "stopped"
        }
        for (name, gauge) in states { gauge.record(name == current ? 1 : 0) }
        self.inFlight.record(inFlight)
    }
}

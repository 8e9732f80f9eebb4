import AMQP
import Warren

/// The resolved config as INI text, for `--check-config`: every key with
/// the value warren will use, defaults included, passwords masked.
public enum ConfigDescription {
    public static func render(_ config: Config) -> String {
        var out = "; \(config.file): valid\n"
        let broker = config.warren.broker
        out += "\n[broker]\n"
        out += "url = \(broker.endpoints.map(\.redactedURL).joined(separator: " "))\n"
        out += "heartbeat = \(seconds(.seconds(broker.endpoints.first?.heartbeat ?? 0)))\n"
        out += "reconnect_min = \(seconds(broker.reconnectMin))\n"
        out += "reconnect_max = \(seconds(broker.reconnectMax))\n"
        out += "consumer_timeout = \(broker.consumerTimeout.map(seconds) ?? "0")\n"
        if let first = broker.endpoints.first(where: \.tls) {
            if let ca = first.tlsCA { out += "tls_ca = \(ca)\n" }
            if let cert = first.tlsCert { out += "tls_cert = \(cert)\n" }
            if let key = first.tlsKey { out += "tls_key = \(key)\n" }
        }
        out += "\n[shutdown]\n"
        out += "grace_period = \(seconds(config.warren.shutdown.gracePeriod))\n"
        out += "kill_after = \(seconds(config.warren.shutdown.killAfter))\n"
        for consumer in config.warren.consumers {
            out += "\n[consumer.\(consumer.name)]\n"
            out += "queue = \(consumer.queue)\n"
            out += "command = \(consumer.command.map(quote).joined(separator: " "))\n"
            out += "prefetch = \(consumer.prefetch)\n"
            out += "concurrency = \(consumer.concurrency)\n"
            out += "timeout = \(consumer.timeout.map(seconds) ?? "0")\n"
            out += "max_attempts = \(consumer.maxAttempts)\n"
            out += "pause_after_failures = \(consumer.pauseAfterFailures)\n"
            out += "retry_delay = \(seconds(consumer.retryDelay))\n"
            out += "retry_delay_max = \(seconds(consumer.retryDelayMax))\n"
            out += "dead_letter_queue = \(consumer.deadLetterQueue)\n"
            out += "exit_ack = \(codes(consumer.exitAck))\n"
            out += "exit_retry = \(codes(consumer.exitRetry))\n"
            out += "exit_dead_letter = \(codes(consumer.exitDeadLetter))\n"
            out += "declare = \(consumer.declare)\n"
            out += "queue_type = \(consumer.queueType.rawValue)\n"
            out += "max_body = \(SizeParser.format(consumer.maxBody))\n"
            out += "mode = \(consumer.mode.rawValue)\n"
            if consumer.mode == .persistent {
                out += "startup_timeout = \(seconds(consumer.startupTimeout))\n"
                out += "max_messages = \(consumer.maxMessages)\n"
                if let maxMemory = consumer.maxMemory { out += "max_memory = \(SizeParser.format(maxMemory))\n" }
            }
            out += "input = \(consumer.input.rawValue)\n"
            out += "replies = \(consumer.replies)\n"
            out += "reply_content_type = \(consumer.replyContentType)\n"
            if let exchange = consumer.outputExchange {
                out += "output_exchange = \(exchange)\n"
                out += "output_routing_key = \(consumer.outputRoutingKey.isEmpty ? "''" : consumer.outputRoutingKey)\n"
            }
            if let exchange = consumer.exchange {
                out += "exchange = \(exchange)\n"
                // Declared only with declare = true (and refused without it).
                if consumer.declare {
                    out += "exchange_type = \(consumer.exchangeType.rawValue)\n"
                    out += "routing_keys = \(consumer.routingKeys.joined(separator: " "))\n"
                }
            }
            if let priority = consumer.consumerPriority { out += "consumer_priority = \(priority)\n" }
            out += "exclusive = \(consumer.exclusive)\n"
            if consumer.declare { out += "single_active_consumer = \(consumer.singleActiveConsumer)\n" }
            if let maxPriority = consumer.maxPriority { out += "max_priority = \(maxPriority)\n" }
            if let maxLength = consumer.maxLength { out += "max_length = \(maxLength)\n" }
            if let overflow = consumer.overflow { out += "overflow = \(overflow.rawValue)\n" }
            if let limit = consumer.deliveryLimit { out += "delivery_limit = \(limit)\n" }
            out += "log_outcomes = \(consumer.logOutcomes)\n"
        }
        if let metrics = config.metrics {
            out += "\n[metrics]\nlisten = \(metrics.host.contains(":") ? "[\(metrics.host)]" : metrics.host):\(metrics.port)\n"
        }
        out += "\n[log]\nlevel = \(config.log.level.rawValue)\nformat = \(config.log.format.rawValue)\n"
        return out
    }

    static func seconds(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        if ms % 1000 != 0 { return "\(ms)ms" }
        return "\(ms / 1000)s"
    }

    static func codes(_ set: Set<Int32>) -> String { set.sorted().map(String.init).joined(separator: ", ") }

    static func quote(_ word: String) -> String {
        if !word.isEmpty && word.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=:,@%+".contains($0) }) { return word }
        return "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}

/// Every key of every section, with its type and range. The defaults live
/// once, in the settings types' initialisers (Settings.swift, `LogSettings`,
/// and `defaultURL` here); README's configuration table and
/// config/warren.ini state them, and ConfigDefaultsDocTests holds them to it.
///
/// | section | key | type | range |
/// | --- | --- | --- | --- |
/// | broker | url | amqp:// or amqps:// URLs, space separated | at least one |
/// | broker | heartbeat | duration, whole seconds | 0 (off) to 1h |
/// | broker | reconnect_min | duration | > 0 |
/// | broker | reconnect_max | duration | >= reconnect_min |
/// | broker | tls_ca | file path | amqps only |
/// | broker | tls_cert, tls_key | file path | amqps only; together |
/// | broker | consumer_timeout | duration | 0 (the broker has none) or more; checked against every consumer (`AckTimeoutRule`) |
/// | shutdown | grace_period | duration | >= 0 |
/// | shutdown | kill_after | duration | > 0 |
/// | consumer.NAME | queue | queue name | 1-255 bytes |
/// | consumer.NAME | command | command line | split like a shell, no shell runs |
/// | consumer.NAME | prefetch | integer | 1-65535 |
/// | consumer.NAME | concurrency | integer | 1 to prefetch |
/// | consumer.NAME | timeout | duration | 0 = no limit |
/// | consumer.NAME | max_attempts | integer | >= 1 |
/// | consumer.NAME | pause_after_failures | integer | 0 (off) to 1000000 |
/// | consumer.NAME | retry_delay | duration | > 0 |
/// | consumer.NAME | retry_delay_max | duration | >= retry_delay |
/// | consumer.NAME | dead_letter_queue | queue name |  |
/// | consumer.NAME | exit_ack, exit_retry, exit_dead_letter | exit codes, comma separated | 0-255, disjoint |
/// | consumer.NAME | declare | boolean | true false yes no on off 1 0 |
/// | consumer.NAME | queue_type | classic or quorum |  |
/// | consumer.NAME | max_body | size: 16MB, 512KB, 1GB or bytes (units of 1024) | 1 byte to 1024GB |
/// | consumer.NAME | mode | exec or persistent |  |
/// | consumer.NAME | startup_timeout | duration | > 0; persistent only |
/// | consumer.NAME | max_messages | integer | 0 (never) to 1000000000; persistent only |
/// | consumer.NAME | max_memory | size | 1 byte to 1024GB; persistent only |
/// | consumer.NAME | input | body or envelope |  |
/// | consumer.NAME | replies | boolean |  |
/// | consumer.NAME | reply_content_type | MIME type | 1-255 bytes |
/// | consumer.NAME | output_exchange | exchange name | 1-255 bytes; amq.default for the default exchange |
/// | consumer.NAME | output_routing_key | routing key | 0-255 bytes; only with output_exchange |
/// | consumer.NAME | exchange | exchange name | 1-255 bytes |
/// | consumer.NAME | exchange_type | direct fanout topic headers | with exchange and declare = true |
/// | consumer.NAME | routing_keys | binding keys, space separated | with exchange and declare = true; each 0-255 bytes |
/// | consumer.NAME | consumer_priority | integer | -2147483648 to 2147483647 |
/// | consumer.NAME | exclusive | boolean |  |
/// | consumer.NAME | single_active_consumer | boolean | declare = true |
/// | consumer.NAME | max_priority | integer | 1-255; classic queues, declare = true |
/// | consumer.NAME | max_length | integer | 1 to 1000000000; declare = true |
/// | consumer.NAME | overflow | drop-head reject-publish reject-publish-dlx | with max_length; quorum: not reject-publish-dlx |
/// | consumer.NAME | delivery_limit | integer | 1 to 1000000; quorum queues, declare = true |
/// | consumer.NAME | log_outcomes | boolean |  |
/// | metrics | listen | host:port |  |
/// | log | level | trace debug info notice warning error critical |  |
/// | log | format | text or json |  |
enum ConfigKeys {
    static let broker: Set<String> = ["url", "password_file", "heartbeat", "reconnect_min", "reconnect_max", "tls_ca", "tls_cert",
                                      "tls_key", "consumer_timeout"]
    static let shutdown: Set<String> = ["grace_period", "kill_after"]
    static let consumer: Set<String> = [
        "queue", "prefetch", "concurrency", "command", "timeout", "max_attempts", "pause_after_failures", "retry_delay", "retry_delay_max",
        "dead_letter_queue", "exit_ack", "exit_retry", "exit_dead_letter", "declare", "queue_type",
        "max_body", "mode", "startup_timeout", "max_messages", "max_memory",
        "input", "replies", "reply_content_type", "output_exchange", "output_routing_key",
        "exchange", "exchange_type", "routing_keys", "consumer_priority", "exclusive",
        "single_active_consumer", "max_priority", "max_length", "overflow", "delivery_limit", "log_outcomes",
    ]
    static let metrics: Set<String> = ["listen"]
    static let log: Set<String> = ["level", "format"]

    static func keys(forSection name: String) -> Set<String>? {
        switch name {
        case "broker": broker
        case "shutdown": shutdown
        case "metrics": metrics
        case "log": log
        default: name.hasPrefix("consumer.") ? consumer : nil
        }
    }

    static let defaultURL = "amqp://guest:guest@127.0.0.1:5672/%2f"
}

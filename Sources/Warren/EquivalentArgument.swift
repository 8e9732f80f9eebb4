import AMQP

/// A queue argument the broker holds with another value than warren
/// declared, where the difference means nothing to warren: the broker's
/// default written out (`x-single-active-consumer = false`, `x-overflow =
/// drop-head`, `x-queue-type = classic`), or a dead-letter route of the
/// queue's own where warren would add one to `dead_letter_queue`.
///
/// RabbitMQ compares arguments as written, so it refuses such a declare
/// (406) although nothing would change; refusing the start over it would
/// make an operator delete a queue full of messages for no reason. warren
/// declares with the broker's value instead, and says so in a warning.
enum EquivalentArgument: Sendable, Equatable {
    /// Declare the argument with the value the broker has.
    case adopt(FieldValue)
    /// Leave the argument out, as the queue has it.
    case omit

    /// Values (and their AMQP types) that mean what leaving the argument out means.
    static let brokerDefaults: [String: (value: String, type: String)] = [
        "x-single-active-consumer": ("false", "bool"),
        "x-overflow": ("drop-head", "longstr"),
        "x-queue-type": ("classic", "longstr"),
    ]

    /// What to declare instead of a refused argument, and why that is
    /// safe; nil when the difference matters (the refusal stands).
    /// `consumedQueue`: the queue warren consumes, whose dead-letter route
    /// only catches what the broker itself discards; a delay queue's route
    /// back to the queue is how a retry returns, and is never given up.
    static func settling(_ refused: InequivalentArgument, consumedQueue: Bool,
                         deadLetterQueue: Bool = false) -> (EquivalentArgument, why: String)? {
        guard refused.kind == "queue" else { return nil }
        if deadLetterQueue, refused.argument == "x-delivery-limit", refused.declared == "-1", refused.existing == "none" {
            return (.omit, defaultDeliveryLimit(refused.name))
        }
        // Quorum queues' refusals name no types (`received '' but current is 'x'`):
        // then the argument's own type is the one meant.
        if refused.declared == "none", let standard = Self.brokerDefaults[refused.argument],
           standard.value == refused.existing, (refused.existingType ?? standard.type) == standard.type,
           let value = Self.value(refused.existing, type: standard.type) {
            return (.adopt(value), "\(refused.existing) is the broker's default, which is what warren means by leaving it out")
        }
        guard consumedQueue, refused.declared != "none" else { return nil }
        let ownRoute = "the queue has a dead-letter route of its own, kept as it is: what the broker itself discards from it "
            + "(past a delivery limit, over max_length) goes there, not to dead_letter_queue; warren's own dead letters still go to dead_letter_queue"
        switch refused.argument {
        case "x-dead-letter-exchange" where refused.existing != "none":
            guard let value = Self.value(refused.existing, type: refused.existingType ?? "longstr") else { return nil }
            return (.adopt(value), ownRoute)
        case "x-dead-letter-routing-key" where refused.existing != "none":
            // RabbitMQ compares the exchange first: a refused key means the
            // queue routes to warren's exchange (the default one) with a key
            // of its own, which names a queue. Without a key the default
            // exchange routes by each message's own key, which may name no
            // queue at all: that is no route, and the refusal stands. (After
            // warren adopts an exchange of the queue's own, it leaves its key
            // out at once; see `Topology.declareOne`.)
            guard let value = Self.value(refused.existing, type: refused.existingType ?? "longstr") else { return nil }
            return (.adopt(value), ownRoute)
        default:
            return nil
        }
    }

    /// Why a quorum dead-letter queue declared before warren asked for no
    /// delivery limit is used as it is, and how to lift its limit: a queue
    /// keeps its arguments for life, but a policy applies at once.
    static func defaultDeliveryLimit(_ queue: String) -> String {
        "it has RabbitMQ 4's default delivery limit (20): on RabbitMQ 4.0 to 4.2 every `warren dlq` read counts toward it, "
            + "and a dead letter returned more often is dropped; lift the limit with a policy "
            + "(only one policy applies to a queue: if one matches it already, add the key to that one; -p VHOST for another vhost than /): "
            + "rabbitmqctl set_policy warren-dlq-no-delivery-limit \(shellQuoted("^" + regexEscaped(queue) + "$")) '{\"delivery-limit\":-1}' --apply-to quorum_queues"
    }

    /// `text` as one shell word, for a command an operator pastes: in
    /// single quotes, each `'` as `'\''` (a queue name may hold any byte).
    static func shellQuoted(_ text: String) -> String {
        var out = "'"
        for character in text {
            if character == "'" { out += "'\\''" } else { out.append(character) }
        }
        return out + "'"
    }

    /// `name` as a regular expression matching only itself.
    static func regexEscaped(_ name: String) -> String {
        var out = ""
        for character in name {
            if "\\^$.|?*+()[]{}".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }

    /// The broker's value as warren must send it to match: only the types
    /// these arguments take, so an unknown one keeps the refusal.
    static func value(_ text: String, type: String?) -> FieldValue? {
        switch type {
        case "bool":
            switch text {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: return nil
            }
        case "longstr":
            return .string(text == "''" ? "" : text)
        default:
            return nil
        }
    }
}

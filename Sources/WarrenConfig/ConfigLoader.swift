import AMQP
import Glibc
import Warren

/// INI text -> validated `Config`. Every problem names its file and line;
/// all of them are reported at once, so one edit fixes them all.
public enum ConfigLoader {
    /// Exit code for any configuration problem (EX_CONFIG).
    public static let exitCode: Int32 = 78

    /// Reads `path`, applies `WARREN_<SECTION>_<KEY>` overrides from `environment`, validates.
    public static func load(path: String, environment: [String: String]) throws(ConfigErrors) -> Config {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigErrors([ConfigProblem(file: path, line: 0, message: "cannot read the config file: \(error.message)")])
        }
        return try parse(text, file: path, environment: environment)
    }

    /// `systemCABundles`: where to look for the CA bundle that `amqps://`
    /// without `tls_ca` verifies the broker against (tests pass their own).
    public static func parse(_ text: String, file: String, environment: [String: String] = [:],
                             systemCABundles: [String] = SystemCABundle.candidates) throws(ConfigErrors) -> Config {
        let ini = try INIParser.parse(text, file: file)
        var reader = Reader(file: file)
        reader.systemCA = SystemCABundle.find(sslCertFile: environment["SSL_CERT_FILE"], candidates: systemCABundles)
        let sections = reader.sections(of: ini, environment: environment)
        let config = reader.build(sections)
        if !reader.problems.isEmpty { throw ConfigErrors(reader.problems) }
        return config!
    }

    struct ReadError: Error { var message: String }

    static func readFile(_ path: String) throws(ReadError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReadError(message: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadError(message: String(cString: strerror(errno)))
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > 4 << 20 { throw ReadError(message: "larger than 4 MiB; is this the right file?") }
        }
        return try text(from: bytes)
    }

    /// The file's bytes as text; the fuzz targets start here too.
    static func text(from bytes: [UInt8]) throws(ReadError) -> String {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ReadError(message: "not valid UTF-8")
        }
        return text
    }
}

/// A value and where it came from.
struct Located {
    var value: String
    var file: String
    var line: Int
}

/// Reads typed values, collecting problems instead of stopping at the first.
struct Reader {
    let file: String
    var problems: [ConfigProblem] = []
    /// The CA for `amqps://` URLs without `tls_ca`.
    var systemCA = SystemCABundle.Lookup.missing("")

    init(file: String) { self.file = file }

    mutating func problem(_ at: Located, _ message: String) {
        problems.append(ConfigProblem(file: at.file, line: at.line, message: message))
    }

    /// The sections of the file with environment overrides applied, as key -> value maps.
    mutating func sections(of ini: INIFile, environment: [String: String]) -> [(name: String, line: Int, values: [String: Located])] {
        var result: [(name: String, line: Int, values: [String: Located])] = []
        var seen = Set<String>()
        for section in ini.sections where seen.insert(section.name).inserted {
            guard let allowed = ConfigKeys.keys(forSection: section.name) else {
                problems.append(ConfigProblem(file: file, line: section.line, message:
                    "unknown section [\(section.name)]; sections are [broker], [shutdown], [consumer.NAME], [metrics] and [log]"))
                continue
            }
            var values: [String: Located] = [:]
            for entry in section.entries {
                guard allowed.contains(entry.key) else {
                    let hint = Self.closest(to: entry.key, in: allowed).map { "; did you mean '\($0)'?" } ?? ""
                    problems.append(ConfigProblem(file: file, line: entry.line, message:
                        "unknown key '\(entry.key)' in [\(section.name)]\(hint) (keys here: \(allowed.sorted().joined(separator: ", ")))"))
                    continue
                }
                values[entry.key] = Located(value: entry.value, file: file, line: entry.line)
            }
            result.append((section.name, section.line, values))
        }
        // Sections that may come from the environment alone.
        for name in ["broker", "shutdown", "metrics", "log"] where !seen.contains(name) {
            result.append((name, 0, [:]))
        }
        // Overrides: WARREN_<SECTION>_<KEY>.
        for index in result.indices {
            let name = result[index].name
            let prefix = "WARREN_" + Self.envName(name) + "_"
            for key in ConfigKeys.keys(forSection: name) ?? [] {
                let variable = prefix + key.uppercased()
                if let value = environment[variable] {
                    result[index].values[key] = Located(value: value.trimmingBlanks(), file: "$" + variable, line: 0)
                }
            }
            // A typo in a fixed section's variable would silently do nothing.
            if !name.hasPrefix("consumer.") {
                let known = Set((ConfigKeys.keys(forSection: name) ?? []).map { prefix + $0.uppercased() })
                for variable in environment.keys.sorted() where variable.hasPrefix(prefix) && !known.contains(variable) {
                    problems.append(ConfigProblem(file: "$" + variable, line: 0, message:
                        "unknown override: [\(name)] has no key '\(variable.dropFirst(prefix.count).lowercased())'"))
                }
            }
        }
        return result
    }

    static func envName(_ section: String) -> String {
        String(section.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    mutating func build(_ sections: [(name: String, line: Int, values: [String: Located])]) -> Config? {
        func values(_ name: String) -> [String: Located] { sections.first { $0.name == name }?.values ?? [:] }

        // Every default is the settings types' own (Settings.swift, Config.swift),
        // and README and config/warren.ini are tested against them.
        // [broker]
        let broker = values("broker")
        let brokerDefaults = BrokerSettings()
        let urls = broker["url"] ?? Located(value: ConfigKeys.defaultURL, file: file, line: 0)
        let defaultHeartbeat = Duration.seconds(brokerDefaults.endpoints[0].heartbeat)
        let heartbeat = duration(broker["heartbeat"], default: defaultHeartbeat, min: .zero, max: .seconds(3600)) ?? defaultHeartbeat
        if heartbeat.components.attoseconds != 0, let at = broker["heartbeat"] {
            problem(at, "heartbeat must be whole seconds (the protocol counts seconds), got '\(at.value)'")
        }
        let tlsCA = string(broker["tls_ca"])
        let tlsCert = string(broker["tls_cert"])
        let tlsKey = string(broker["tls_key"])
        if (tlsCert == nil) != (tlsKey == nil), let at = broker["tls_cert"] ?? broker["tls_key"] {
            problem(at, "tls_cert and tls_key go together: set both or neither")
        }
        var endpoints: [ConnectionOptions] = []
        let urlList = unquote(urls.value).split(whereSeparator: { $0 == " " || $0 == "\t" })
        if urlList.isEmpty { problem(urls, "url is empty; give at least one amqp:// or amqps:// URL") }
        for (index, url) in urlList.enumerated() {
            do {
                var options = try ConnectionOptions(url: String(url))
                options.heartbeat = Int(heartbeat.components.seconds)
                options.connectionName = "warren"
                if options.tls {
                    options.tlsCA = tlsCA ?? systemCABundle(for: urls)
                    options.tlsCert = tlsCert
                    options.tlsKey = tlsKey
                }
                endpoints.append(options)
            } catch {
                problem(urls, "broker URL \(index + 1) is not valid: \(error.reason)")
            }
        }
        if let at = broker["password_file"], let path = string(at) {
            // Read at every load (start, --check-config, each reload), so a
            // rotated credential is picked up by a reload. Errors name the
            // file, never what it holds.
            if endpoints.contains(where: \.passwordInURL) {
                problem(at, "a password is given both in url and in password_file: remove it from url (keep user@host)")
            }
            switch ConfigLoader.readPassword(path) {
            case .success(let password):
                for index in endpoints.indices { endpoints[index].password = password }
            case .failure(let why):
                problem(at, "password_file '\(path)': \(why)")
            }
        }
        if tlsCA != nil, !endpoints.contains(where: \.tls), let at = broker["tls_ca"] {
            problem(at, "tls_ca is set but no URL is amqps://")
        }
        let reconnectMin = duration(broker["reconnect_min"], default: brokerDefaults.reconnectMin, min: .milliseconds(1))
            ?? brokerDefaults.reconnectMin
        let reconnectMax = duration(broker["reconnect_max"], default: brokerDefaults.reconnectMax, min: .milliseconds(1))
            ?? brokerDefaults.reconnectMax
        if reconnectMax < reconnectMin, let at = broker["reconnect_max"] ?? broker["reconnect_min"] {
            problem(at, "reconnect_max (\(reconnectMax)) is less than reconnect_min (\(reconnectMin))")
        }
        let consumerTimeout = duration(broker["consumer_timeout"], default: brokerDefaults.consumerTimeout ?? .zero, min: .zero)
            ?? brokerDefaults.consumerTimeout ?? .zero
        let brokerSettings = BrokerSettings(endpoints: endpoints, reconnectMin: reconnectMin, reconnectMax: reconnectMax,
                                            consumerTimeout: consumerTimeout == .zero ? nil : consumerTimeout)

        // [shutdown]
        let shutdownValues = values("shutdown")
        let shutdownDefaults = ShutdownSettings()
        let shutdown = ShutdownSettings(
            gracePeriod: duration(shutdownValues["grace_period"], default: shutdownDefaults.gracePeriod, min: .zero)
                ?? shutdownDefaults.gracePeriod,
            killAfter: duration(shutdownValues["kill_after"], default: shutdownDefaults.killAfter, min: .milliseconds(1))
                ?? shutdownDefaults.killAfter)

        // [consumer.NAME]
        var consumers: [ConsumerSettings] = []
        for section in sections where section.name.hasPrefix("consumer.") {
            guard let consumer = consumer(section.name, line: section.line, section.values) else { continue }
            checkAckTimeout(consumer, section.values, line: section.line, shutdown: shutdown, broker: brokerSettings)
            consumers.append(consumer)
        }
        if consumers.isEmpty && !sections.contains(where: { $0.name.hasPrefix("consumer.") }) {
            problems.append(ConfigProblem(file: file, line: 0, message:
                "no [consumer.NAME] section: add one with at least 'queue' and 'command'"))
        }

        // [metrics]
        var metrics: MetricsSettings? = nil
        if let listen = values("metrics")["listen"] {
            metrics = hostPort(listen)
        }

        // [log]
        let logValues = values("log")
        let level = choice(logValues["level"], LogSettings.Level.self) ?? LogSettings().level
        let format = choice(logValues["format"], LogSettings.Format.self) ?? LogSettings().format

        guard problems.isEmpty else { return nil }
        return Config(file: file,
                      warren: WarrenSettings(broker: brokerSettings, shutdown: shutdown, consumers: consumers),
                      metrics: metrics, log: LogSettings(level: level, format: format))
    }

    mutating func consumer(_ sectionName: String, line: Int, _ values: [String: Located]) -> ConsumerSettings? {
        let name = String(sectionName.dropFirst("consumer.".count))
        let header = Located(value: sectionName, file: file, line: line)
        let before = problems.count
        if name.isEmpty || !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) {
            problem(header, "consumer name '\(name)' must be letters, digits, '_' or '-' (it names environment overrides)")
        }
        let queue = string(values["queue"])
        if queue == nil { problem(header, "[\(sectionName)] has no 'queue': name the queue to consume") }
        if let queue, queue.utf8.count > 255, let at = values["queue"] { problem(at, "queue name is longer than 255 bytes") }
        var command: [String] = []
        if let at = values["command"] {
            do {
                command = try CommandWords.split(at.value)
                if command.isEmpty { problem(at, "command is empty: give the program to run for each message") }
            } catch {
                problem(at, "command cannot be split into words: \(error.description)")
            }
        } else {
            problem(header, "[\(sectionName)] has no 'command': give the program to run for each message")
        }
        let d = ConsumerSettings(name: name, queue: queue ?? "")
        let prefetch = integer(values["prefetch"], default: Int(d.prefetch), range: 1...65535) ?? Int(d.prefetch)
        let concurrency = integer(values["concurrency"], default: d.concurrency, range: 1...65535) ?? d.concurrency
        if concurrency > prefetch, let at = values["concurrency"] ?? values["prefetch"] {
            problem(at, "concurrency (\(concurrency)) is more than prefetch (\(prefetch)): the extra workers would never get a message; raise prefetch")
        }
        let timeout = duration(values["timeout"], default: d.timeout ?? .zero, min: .zero) ?? .zero
        let maxAttempts = integer(values["max_attempts"], default: d.maxAttempts, range: 1...1_000_000) ?? d.maxAttempts
        let pauseAfterFailures = integer(values["pause_after_failures"], default: d.pauseAfterFailures, range: 0...1_000_000)
            ?? d.pauseAfterFailures
        let retryDelay = duration(values["retry_delay"], default: d.retryDelay, min: .milliseconds(1)) ?? d.retryDelay
        let retryDelayMax = duration(values["retry_delay_max"], default: d.retryDelayMax, min: .milliseconds(1)) ?? d.retryDelayMax
        if retryDelayMax < retryDelay, let at = values["retry_delay_max"] ?? values["retry_delay"] {
            problem(at, "retry_delay_max (\(retryDelayMax)) is less than retry_delay (\(retryDelay))")
        }
        let deadLetter = string(values["dead_letter_queue"])
        let exitAck = exitCodes(values["exit_ack"], default: d.exitAck)
        let exitRetry = exitCodes(values["exit_retry"], default: d.exitRetry)
        let exitDeadLetter = exitCodes(values["exit_dead_letter"], default: d.exitDeadLetter)
        for (a, b, aName, bName) in [(exitAck, exitRetry, "exit_ack", "exit_retry"), (exitAck, exitDeadLetter, "exit_ack", "exit_dead_letter"),
                                     (exitRetry, exitDeadLetter, "exit_retry", "exit_dead_letter")] {
            let both = a.intersection(b)
            if !both.isEmpty, let at = values[bName] ?? values[aName] {
                problem(at, "exit code \(both.sorted().map(String.init).joined(separator: ", ")) is in both \(aName) and \(bName)")
            }
        }
        let declare = boolean(values["declare"], default: d.declare)
        let queueType = choice(values["queue_type"], QueueType.self) ?? d.queueType
        let maxBody = size(values["max_body"], default: d.maxBody) ?? d.maxBody
        let mode = choice(values["mode"], HandlerMode.self) ?? d.mode
        let startupTimeout = duration(values["startup_timeout"], default: d.startupTimeout, min: .milliseconds(1))
            ?? d.startupTimeout
        let maxMessages = integer(values["max_messages"], default: d.maxMessages, range: 0...1_000_000_000) ?? d.maxMessages
        let maxMemory = values["max_memory"] == nil ? d.maxMemory : size(values["max_memory"], default: 0)
        let input = choice(values["input"], HandlerInput.self) ?? d.input
        let replies = boolean(values["replies"], default: d.replies)
        let logOutcomes = boolean(values["log_outcomes"], default: d.logOutcomes)
        let replyContentType = shortString(values["reply_content_type"], what: "reply_content_type") ?? d.replyContentType
        let outputExchange = values["output_exchange"] == nil ? d.outputExchange
            : shortString(values["output_exchange"], what: "output_exchange")
        var outputRoutingKey = d.outputRoutingKey
        if let at = values["output_routing_key"] {
            // An empty routing key is a real one (fanout exchanges ignore it): '' says so.
            let key = unquote(at.value)
            if at.value.isEmpty { problem(at, "empty value: write '' for an empty routing key, or remove the line") }
            if key.utf8.count > 255 { problem(at, "output_routing_key is longer than 255 bytes (an AMQP short string)") }
            if outputExchange == nil && values["output_exchange"] == nil {
                problem(at, "output_routing_key without output_exchange: set output_exchange too, or remove this line")
            }
            outputRoutingKey = key
        }
        let topology = topology(values, queueType: queueType, declare: declare)
        guard problems.count == before, let queue else { return nil }
        return ConsumerSettings(name: name, queue: queue, prefetch: UInt16(prefetch), concurrency: concurrency, command: command,
                                timeout: timeout == .zero ? nil : timeout, maxAttempts: maxAttempts, retryDelay: retryDelay,
                                retryDelayMax: retryDelayMax, deadLetterQueue: deadLetter, exitAck: exitAck, exitRetry: exitRetry,
                                exitDeadLetter: exitDeadLetter, declare: declare, queueType: queueType,
                                maxBody: maxBody, mode: mode, startupTimeout: startupTimeout, maxMessages: maxMessages,
                                maxMemory: maxMemory, input: input, replies: replies,
                                replyContentType: replyContentType, outputExchange: outputExchange,
                                outputRoutingKey: outputRoutingKey, exchange: topology.exchange,
                                exchangeType: topology.exchangeType, routingKeys: topology.routingKeys,
                                consumerPriority: topology.consumerPriority, exclusive: topology.exclusive,
                                singleActiveConsumer: topology.singleActiveConsumer, maxPriority: topology.maxPriority,
                                maxLength: topology.maxLength, overflow: topology.overflow, deliveryLimit: topology.deliveryLimit,
                                logOutcomes: logOutcomes, pauseAfterFailures: pauseAfterFailures)
    }

    /// The system bundle, or nil after one problem saying how to set `tls_ca`.
    mutating func systemCABundle(for urls: Located) -> String? {
        switch systemCA {
        case .found(let path):
            return path
        case .missing(let why):
            // Once, however many amqps:// URLs the line holds.
            systemCA = .missing("")
            if !why.isEmpty { problem(urls, "amqps:// needs a CA to verify the broker and \(why)") }
            return nil
        }
    }

    // MARK: Typed readers

    func unquote(_ value: String) -> String {
        if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
            return String(value.dropFirst().dropLast())
        }
        return value
    }

    mutating func nonEmpty(_ at: Located?) -> String? {
        guard let at else { return nil }
        let value = unquote(at.value)
        if value.isEmpty {
            problem(at, "empty value: remove the line to use the default, or give a value")
            return nil
        }
        return value
    }

    mutating func string(_ at: Located?) -> String? { nonEmpty(at) }

    /// A non-empty AMQP short string (a name the broker takes: at most 255 bytes).
    mutating func shortString(_ at: Located?, what: String) -> String? {
        guard let at, let value = nonEmpty(at) else { return nil }
        guard value.utf8.count <= 255 else {
            problem(at, "\(what) is longer than 255 bytes (an AMQP short string)")
            return nil
        }
        return value
    }

    mutating func integer(_ at: Located?, default value: Int, range: ClosedRange<Int>) -> Int? {
        guard let at, let text = nonEmpty(at) else { return at == nil ? value : nil }
        guard let number = Int(text) else {
            problem(at, "'\(text)' is not a whole number (allowed: \(range.lowerBound) to \(range.upperBound))")
            return nil
        }
        guard range.contains(number) else {
            problem(at, "\(number) is out of range (allowed: \(range.lowerBound) to \(range.upperBound))")
            return nil
        }
        return number
    }

    mutating func boolean(_ at: Located?, default value: Bool) -> Bool {
        guard let at, let text = nonEmpty(at) else { return value }
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default:
            problem(at, "'\(text)' is not a boolean (allowed: true, false, yes, no, on, off, 1, 0)")
            return value
        }
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ at: Located?, _ type: T.Type) -> T? where T.RawValue == String {
        guard let at, let text = nonEmpty(at) else { return nil }
        guard let value = T(rawValue: text.lowercased()) else {
            problem(at, "'\(text)' is not allowed here (allowed: \(T.allCases.map(\.rawValue).joined(separator: ", ")))")
            return nil
        }
        return value
    }

    mutating func duration(_ at: Located?, default value: Duration, min: Duration, max: Duration? = nil) -> Duration? {
        guard let at, let text = nonEmpty(at) else { return at == nil ? value : nil }
        guard let parsed = DurationParser.parse(text) else {
            problem(at, "'\(text)' is not a duration (use 250ms, 30s, 5m, 1h or bare seconds)")
            return nil
        }
        if parsed < min {
            problem(at, "'\(text)' is too short (at least \(min))")
            return nil
        }
        if let max, parsed > max {
            problem(at, "'\(text)' is too long (at most \(max))")
            return nil
        }
        return parsed
    }

    mutating func size(_ at: Located?, default value: Int) -> Int? {
        guard let at, let text = nonEmpty(at) else { return at == nil ? value : nil }
        guard let bytes = SizeParser.parse(text) else {
            problem(at, "'\(text)' is not a size (use 16MB, 512KB, 1GB or whole bytes; up to \(SizeParser.format(SizeParser.maximum)))")
            return nil
        }
        guard bytes >= 1 else {
            problem(at, "'\(text)' is too small (at least 1 byte)")
            return nil
        }
        return bytes
    }

    mutating func exitCodes(_ at: Located?, default value: Set<Int32>) -> Set<Int32> {
        guard let at, let text = nonEmpty(at) else { return value }
        var codes = Set<Int32>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let item = part.trimmingBlanks()
            guard let code = Int32(item), (0...255).contains(code) else {
                problem(at, "'\(item)' is not an exit code (a list of numbers 0 to 255, comma separated)")
                return value
            }
            codes.insert(code)
        }
        return codes
    }

    mutating func hostPort(_ at: Located) -> MetricsSettings? {
        guard let text = nonEmpty(at) else { return nil }
        var host: Substring
        var portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(after: close)...].dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            problem(at, "'\(text)' is not host:port (for example 127.0.0.1:9419)")
            return nil
        }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(portText), (1...65535).contains(port) else {
            problem(at, "'\(portText)' is not a port (1 to 65535)")
            return nil
        }
        return MetricsSettings(host: String(host), port: port)
    }

    /// The allowed key nearest to a typo, if any is close.
    static func closest(to key: String, in allowed: Set<String>) -> String? {
        let scored = allowed.map { ($0, editDistance(Array(key), Array($0))) }.min { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
        guard let (best, distance) = scored, distance <= max(2, key.count / 3) else { return nil }
        return best
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var current = [i + 1] + Array(repeating: 0, count: b.count)
            for (j, cb) in b.enumerated() {
                current[j + 1] = Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

extension String {
    func trimmingBlanks() -> String { String(Substring(self).trimmingBlanks()) }
}

extension ConfigLoader {
    struct PasswordFileProblem: Error, CustomStringConvertible {
        var description: String
    }

    /// The password in `path`: its first line (a final newline, as editors
    /// and `echo` write, is not part of it). At most 4 KiB; never quoted in
    /// an error.
    static func readPassword(_ path: String) -> Result<String, PasswordFileProblem> {
        // Non-blocking: a FIFO with no writer must not hang a start or a reload.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            return .failure(PasswordFileProblem(description: "cannot be read (\(String(cString: strerror(errno)))); "
                                                + "check the path and that warren's user may read it"))
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4097)
        while bytes.count <= 4096 {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(PasswordFileProblem(description: "cannot be read (\(String(cString: strerror(errno))))"))
            }
            if count == 0 { break }
            bytes += buffer[0..<count]
        }
        guard bytes.count <= 4096 else { return .failure(PasswordFileProblem(description: "is larger than 4 KiB: not a password file")) }
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else { return .failure(PasswordFileProblem(description: "is empty")) }
        guard !bytes.contains(UInt8(ascii: "\n")) else {
            return .failure(PasswordFileProblem(description: "holds more than one line; put the password alone in it"))
        }
        guard let password = String(validating: bytes, as: UTF8.self) else {
            return .failure(PasswordFileProblem(description: "is not UTF-8 text"))
        }
        return .success(password)
    }
}

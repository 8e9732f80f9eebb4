public import Warren

/// Where metrics and health are served (`[metrics]`); nil `listen` = off.
public struct MetricsSettings: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// `[log]`.
public struct LogSettings: Sendable, Equatable {
    public enum Level: String, Sendable, CaseIterable {
        case trace, debug, info, notice, warning, error, critical
    }

    public enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    public var level: Level
    public var format: Format

    public init(level: Level = .info, format: Format = .text) {
        self.level = level
        self.format = format
    }
}

/// The whole configuration, validated.
public struct Config: Sendable, Equatable {
    /// The file it came from.
    public var file: String
    public var warren: WarrenSettings
    public var metrics: MetricsSettings?
    public var log: LogSettings

    public init(file: String, warren: WarrenSettings, metrics: MetricsSettings? = nil, log: LogSettings = LogSettings()) {
        self.file = file
        self.warren = warren
        self.metrics = metrics
        self.log = log
    }
}

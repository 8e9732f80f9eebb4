/// Where and how to connect.
public struct ConnectionOptions: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var virtualHost: String
    public var user: String
    public var password: String
    /// The URL it was made from spelled a password (`user:password@`).
    public private(set) var passwordInURL = false
    /// Seconds; 0 disables heartbeats.
    public var heartbeat: Int
    /// Shown in the broker's management UI and `rabbitmqctl list_connections`.
    public var connectionName: String
    /// TCP connect timeout in seconds.
    public var connectTimeout: Int
    public var tls: Bool
    public var tlsCA: String?
    public var tlsCert: String?
    public var tlsKey: String?
    /// The largest frame asked for at login; the broker's `frame_max`
    /// (128 KiB unless configured) caps it, so this takes whatever the
    /// broker allows, up to 16 MiB. A message's properties and headers
    /// travel in one frame, and rabbitmq-c drops the connection on a frame
    /// over the size agreed: asking for less than the broker allows would
    /// let one message with large headers, which the broker accepted, cut
    /// the connection at every delivery. rabbitmq-c keeps an outgoing
    /// buffer of the agreed size per connection.
    public var frameMax: Int = 16 << 20

    public init(host: String = "127.0.0.1", port: Int = 5672, virtualHost: String = "/",
                user: String = "guest", password: String = "guest", heartbeat: Int = 30,
                connectionName: String = "warren", connectTimeout: Int = 10,
                tls: Bool = false, tlsCA: String? = nil, tlsCert: String? = nil, tlsKey: String? = nil) {
        self.host = host
        self.port = port
        self.virtualHost = virtualHost
        self.user = user
        self.password = password
        self.heartbeat = heartbeat
        self.connectionName = connectionName
        self.connectTimeout = connectTimeout
        self.tls = tls
        self.tlsCA = tlsCA
        self.tlsCert = tlsCert
        self.tlsKey = tlsKey
    }

    /// Parses `amqp://user:pass@host:port/vhost` (and `amqps://`).
    /// The vhost is percent-decoded, so `%2f` is `/`; an absent path means `/`.
    ///
    /// Errors never quote the URL: when a password holds an unencoded `/`,
    /// pieces of it land in the host, port or vhost, and a message quoting
    /// them would print the password.
    public init(url: String) throws(AMQPError) {
        self.init()
        var rest = Substring(url)
        if rest.hasPrefix("amqps://") {
            tls = true
            port = 5671
            rest = rest.dropFirst(8)
        } else if rest.hasPrefix("amqp://") {
            rest = rest.dropFirst(7)
        } else {
            throw AMQPError(.invalidArgument, "broker URL must start with amqp:// or amqps://")
        }
        var authority = rest
        var path: Substring? = nil
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        if let path, path.contains("@"), !authority.contains("@") {
            throw AMQPError(.invalidArgument, "broker URL has an '@' after the first '/': percent-encode '/', '?', '#' and '@' "
                            + "in the user name, password and vhost (%2F, %3F, %23, %40)")
        }
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.percentDecode(userInfo[..<colon])
                password = try Self.percentDecode(userInfo[userInfo.index(after: colon)...])
                passwordInURL = true
            } else {
                user = try Self.percentDecode(userInfo)
            }
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw AMQPError(.invalidArgument, "broker URL has an unterminated IPv6 address")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
            if authority.hasPrefix(":") {
                port = try Self.port(authority.dropFirst())
            } else if !authority.isEmpty {
                throw AMQPError(.invalidArgument, "broker URL has text after the IPv6 address where ':port' should be")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = try Self.port(authority[authority.index(after: colon)...])
        } else {
            host = String(authority)
        }
        if host.isEmpty { host = "127.0.0.1" }
        if let path, !path.isEmpty {
            virtualHost = try Self.percentDecode(path)
        }
    }

    /// The URL with the password replaced, safe for logs.
    public var redactedURL: String {
        let scheme = tls ? "amqps" : "amqp"
        let vhost = virtualHost == "/" ? "%2f" : virtualHost
        return "\(scheme)://\(user):***@\(host):\(port)/\(vhost)"
    }

    private static func port(_ text: Substring) throws(AMQPError) -> Int {
        guard let value = Int(text), (1...65535).contains(value) else {
            throw AMQPError(.invalidArgument, "broker URL port is not a number from 1 to 65535 (a password with '/', '?', "
                            + "'#' or '@' in it must be percent-encoded: %2F, %3F, %23, %40)")
        }
        return value
    }

    private static func percentDecode(_ text: Substring) throws(AMQPError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else {
                    throw AMQPError(.invalidArgument, "broker URL has a broken percent escape")
                }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

import CRabbitMQ
import Glibc

/// Owns one rabbitmq-c connection (`amqp_connection_state_t`) and frees it in
/// `deinit`. Not `Sendable`: it is created, used and destroyed on its I/O
/// thread only, because rabbitmq-c connections must never be touched by two
/// threads.
final class RawConnection {
    let state: amqp_connection_state_t
    let heartbeat: Int

    private init(state: amqp_connection_state_t, heartbeat: Int) {
        self.state = state
        self.heartbeat = heartbeat
    }

    deinit { amqp_destroy_connection(state) }

    /// Connects and logs in. Blocks: call it on the I/O thread only.
    ///
    /// The login (`warren_login` in shim.h, compiled into this file) advertises
    /// the capabilities warren handles, `connection.blocked` among them.
    static func open(_ options: ConnectionOptions) throws(AMQPError) -> RawConnection {
        guard let state = amqp_new_connection() else {
            throw AMQPError(.connectFailed, "out of memory creating a connection")
        }
        let connection = RawConnection(state: state, heartbeat: options.heartbeat)
        let socket: OpaquePointer?
        if options.tls {
            socket = amqp_ssl_socket_new(state)
            guard let socket else { throw AMQPError(.connectFailed, "could not create a TLS socket") }
            amqp_ssl_socket_set_verify_peer(socket, 1)
            amqp_ssl_socket_set_verify_hostname(socket, 1)
            if let ca = options.tlsCA, amqp_ssl_socket_set_cacert(socket, ca) != 0 {
                throw AMQPError(.connectFailed, "cannot read TLS CA file \(ca)")
            }
            if let cert = options.tlsCert, let key = options.tlsKey,
               amqp_ssl_socket_set_key(socket, cert, key) != 0 {
                throw AMQPError(.connectFailed, "cannot read TLS client certificate \(cert) or key \(key)")
            }
        } else {
            socket = amqp_tcp_socket_new(state)
        }
        guard let socket else { throw AMQPError(.connectFailed, "could not create a socket") }

        var timeout = timeval(tv_sec: options.connectTimeout, tv_usec: 0)
        let status = amqp_socket_open_noblock(socket, options.host, Int32(options.port), &timeout)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw AMQPError(.connectFailed,
                            "cannot connect to \(options.host):\(options.port): \(statusText(status))\(tlsAdvice(status, options))")
        }
        // A bound on every synchronous call, so a broker that stops answering
        // cannot hold a drain or a close forever.
        var rpcTimeout = timeval(tv_sec: 30, tv_usec: 0)
        amqp_set_rpc_timeout(state, &rpcTimeout)
        amqp_set_handshake_timeout(state, &timeout)

        let reply = warren_login(state, options.virtualHost, 0, Int32(clamping: options.frameMax), Int32(options.heartbeat),
                                 options.user, options.password, options.connectionName)
        if let error = connection.error(from: reply, channel: 0, doing: "logging in") {
            if error.replyCode == 403 || error.code == .connectionClosedByBroker {
                throw AMQPError(.loginRefused,
                                "broker refused login as '\(options.user)' on vhost '\(options.virtualHost)': \(error.reason)",
                                replyCode: error.replyCode)
            }
            throw error
        }
        return connection
    }

    var socketFD: Int32 { amqp_get_sockfd(state) }

    /// The `version` the broker sent in `connection.start` (after login).
    var serverVersion: String? {
        guard let properties = amqp_get_server_properties(state) else { return nil }
        return FieldTable(properties.pointee)["version"]?.stringValue
    }

    /// Translates an RPC reply into an error, answering the broker's close
    /// with its close-ok as the protocol requires. nil when the reply is normal.
    func error(from reply: amqp_rpc_reply_t, channel: UInt16, doing what: String) -> AMQPError? {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return nil
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return AMQPError(.connectionLost, "\(what): \(statusText(reply.library_error))")
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            switch Int32(reply.reply.id) {
            case Int32(bitPattern: AMQP_CONNECTION_CLOSE_METHOD):
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                var ok = amqp_connection_close_ok_t(dummy: 0)
                amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok)
                return AMQPError(.connectionClosedByBroker, "\(what): \(close.reply_text.string)",
                                 replyCode: close.reply_code)
            case Int32(bitPattern: AMQP_CHANNEL_CLOSE_METHOD):
                let close = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                var ok = amqp_channel_close_ok_t(dummy: 0)
                amqp_send_method(state, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)
                return AMQPError(.channelClosedByBroker, "\(what): \(close.reply_text.string)",
                                 replyCode: close.reply_code)
            default:
                return AMQPError(.protocolError, "\(what): unexpected method \(reply.reply.id)")
            }
        default:
            return AMQPError(.protocolError, "\(what): missing RPC reply")
        }
    }

    /// The error for the last synchronous call, or nil if it succeeded.
    func lastError(channel: UInt16, doing what: String) -> AMQPError? {
        error(from: amqp_get_rpc_reply(state), channel: channel, doing: what)
    }
}

/// Which CA the broker's certificate was checked against, and what to do:
/// with the system bundle as the silent default, the operator may not know
/// a CA file was involved at all.
private func tlsAdvice(_ status: Int32, _ options: ConnectionOptions) -> String {
    guard options.tls else { return "" }
    switch status {
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED.rawValue:
        return " (the broker's certificate is not signed by a CA in \(options.tlsCA ?? "no CA file"); "
            + "set tls_ca to the CA that signed it)"
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED.rawValue:
        return " (the broker's certificate does not name \(options.host); connect by a name it holds)"
    default:
        return ""
    }
}

func statusText(_ status: Int32) -> String {
    guard let text = amqp_error_string2(status) else { return "status \(status)" }
    return String(cString: text)
}

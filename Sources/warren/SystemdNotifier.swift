import CWarrenSupport
import Glibc
import Logging
import Warren

/// The systemd notify protocol (sd_notify(3)), spoken only when systemd
/// set `NOTIFY_SOCKET`: `READY=1` once every consumer consumes,
/// `STOPPING=1` when a drain begins, `STATUS=` with the state.
struct SystemdNotifier: Sendable {
    let socket: String
    let logger: Logger

    static func fromEnvironment(logger: Logger) -> SystemdNotifier? {
        guard let value = getenv("NOTIFY_SOCKET") else { return nil }
        let path = String(cString: value)
        return path.isEmpty ? nil : SystemdNotifier(socket: path, logger: logger)
    }

    func send(_ message: String) {
        if warren_sd_notify(socket, message) != 0 {
            logger.warning("cannot notify systemd", metadata: ["socket": "\(socket)", "error": "\(String(cString: strerror(errno)))"])
        }
    }

    func lifecycleChanged(_ state: Lifecycle.State) {
        switch state {
        case .starting(let n):
            send("STATUS=starting, \(n) in flight")
        case .running(let n):
            send("READY=1\nSTATUS=running, \(n) in flight")
        case .draining(let n, let terminating):
            send("STOPPING=1\nSTATUS=draining, \(n) in flight\(terminating ? ", terminating handlers" : "")")
        case .closing:
            send("STOPPING=1\nSTATUS=closing: flushing acks and closing the connection")
        case .reconnecting(let n):
            send("STATUS=reconnecting to the broker, \(n) in flight")
        case .stopped(let code):
            send("STATUS=stopped, exit code \(code)")
        }
    }
}

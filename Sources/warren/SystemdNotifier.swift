import CWarrenSupport
import Glibc
import Logging
import Synchronization
import Warren

/// The systemd notify protocol (sd_notify(3)), spoken only when systemd
/// set `NOTIFY_SOCKET` (a path, or an abstract name starting with `@`):
/// `READY=1` once every consumer is consuming, `STOPPING=1` when a drain
/// begins, `STATUS=` with the state and the messages in flight,
/// `EXTEND_TIMEOUT_USEC=` each time a drain makes progress, and `WATCHDOG=1`
/// while the I/O loop is going round.
final class SystemdNotifier: Sendable {
    let socket: String
    let logger: Logger
    /// How far each sign of drain progress pushes systemd's stop timeout.
    let extendBy: Duration
    /// In flight at the last drain report, to tell progress.
    private let lastDraining = Mutex<Int?>(nil)
    /// Held while a state is decided and sent, so the state changes and
    /// the refresher's repeats reach systemd in the order they happened.
    private let speech = Mutex(())
    /// What the last STATUS said, so the refresher sends only changes.
    private let lastSaid = Mutex<(state: Lifecycle.State, inFlight: Int)?>(nil)
    /// The last state kind sent and when: a flapping connection changes
    /// state often, and systemd needs no STATUS more than once a second.
    private let lastStatus = Mutex<(kind: String, at: ContinuousClock.Instant)?>(nil)
    /// SIGTSTP came and no SIGCONT since: a running warren says `STATUS=paused`.
    private let isPaused = Mutex(false)

    /// false when this is the same kind of state as the last one sent, less than a second ago.
    private func worthSending(_ kind: String) -> Bool {
        let now = ContinuousClock.now
        return lastStatus.withLock { last in
            if let last, last.kind == kind, now - last.at < .seconds(1) { return false }
            last = (kind, now)
            return true
        }
    }

    init(socket: String, logger: Logger, extendBy: Duration) {
        self.socket = socket
        self.logger = logger
        self.extendBy = extendBy
    }

    static func fromEnvironment(logger: Logger, shutdown: ShutdownSettings) -> SystemdNotifier? {
        guard let value = getenv("NOTIFY_SOCKET") else { return nil }
        let path = String(cString: value)
        return path.isEmpty ? nil : SystemdNotifier(socket: path, logger: logger, extendBy: shutdown.killAfter + .seconds(15))
    }

    func send(_ message: String) {
        if warren_sd_notify(socket, message) != 0 {
            logger.warning("cannot notify systemd", metadata: ["socket": "\(socket)", "error": "\(String(cString: strerror(errno)))"])
        }
    }

    /// A state change of the runtime speaking for the process, with what it has in flight now.
    func lifecycleChanged(_ state: Lifecycle.State, inFlight n: Int) {
        speech.withLock { _ in speak(state, inFlight: n, refreshOnly: false) }
    }

    /// Says `state` (called under `speech`). `refreshOnly`: the refresher's
    /// repeat, which carries `STATUS=` (and a drain's progress) but never
    /// `READY=1` or `STOPPING=1`: those belong to state changes alone, so a
    /// repeat can never end a reload early or contradict a stop.
    private func speak(_ state: Lifecycle.State, inFlight n: Int, refreshOnly: Bool) {
        // A STATUS held back by the rate limit is not said: the refresher sends it later.
        func say(_ message: String) {
            lastSaid.withLock { $0 = (state, n) }
            send(message)
        }
        switch state {
        case .starting:
            if refreshOnly || worthSending("starting") { say("STATUS=starting, \(n) in flight") }
        case .running:
            let status = isPaused.withLock { $0 } ? "paused (SIGCONT resumes)" : "running"
            if refreshOnly {
                say("STATUS=\(status), \(n) in flight")
            } else if worthSending("running") {
                say("READY=1\nSTATUS=\(status), \(n) in flight")
            }
        case .reconnecting:
            if refreshOnly || worthSending("reconnecting") { say("STATUS=reconnecting to the broker, \(n) in flight") }
        case .draining(let terminating):
            let progressed = lastDraining.withLock { last -> Bool in
                defer { last = n }
                return last.map { n < $0 } ?? true
            }
            var message = "\(refreshOnly ? "" : "STOPPING=1\n")STATUS=draining, \(n) in flight\(terminating ? ", terminating handlers" : "")"
            if progressed {
                message += "\nEXTEND_TIMEOUT_USEC=\(extendBy.milliseconds * 1000)"
            }
            if !refreshOnly { _ = worthSending("draining") }
            say(message)
        case .closing:
            guard !refreshOnly else { return }
            _ = worthSending("closing")
            say("STOPPING=1\nSTATUS=closing: flushing acks and closing the connection")
        case .stopped(let code):
            guard !refreshOnly else { return }
            say("STATUS=stopped, exit code \(code)")
        }
    }

    /// Messages come and go without a state change: every second, the
    /// STATUS of the runtime speaking for the process (nil during a reload)
    /// is sent again if its count changed, so a drain that makes progress
    /// pushes systemd's stop timeout. Decided and sent under `speech`, with
    /// the state read again there: a state change said meanwhile is never
    /// followed by a stale repeat of the state before it.
    func refreshStatus(runtime: @Sendable () -> WarrenRuntime?) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            speech.withLock { _ in
                guard let runtime = runtime() else { return }
                let inFlight = runtime.inFlight
                let state = runtime.state
                switch state {
                case .starting, .running, .reconnecting, .draining: break
                case .closing, .stopped: return  // said once, by the state change
                }
                let changed = lastSaid.withLock { last in last.map { $0.state != state || $0.inFlight != inFlight } ?? true }
                if changed { speak(state, inFlight: inFlight, refreshOnly: true) }
            }
        }
    }

    /// SIGTSTP / SIGCONT: a running warren's STATUS says so at once (the
    /// lifecycle state stays running: still connected, still ready for systemd).
    /// Said only while the runtime speaking for the process (`speaking`;
    /// nil during a reload, whose STATUS stays) is running: starting or
    /// reconnecting, its own STATUS stays, and says `paused` once running.
    func paused(_ paused: Bool, speaking runtime: WarrenRuntime?) {
        speech.withLock { _ in
            isPaused.withLock { $0 = paused }
            guard let runtime, runtime.state == .running else { return }
            speak(.running, inFlight: runtime.inFlight, refreshOnly: true)
        }
    }

    /// A reload begins: `RELOADING=1`; the new runtime's `READY=1` ends it.
    func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        speech.withLock { _ in
            lastStatus.withLock { $0 = ("reloading", ContinuousClock.now) }
            send("RELOADING=1\nMONOTONIC_USEC=\(Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)\nSTATUS=reloading the config")
        }
    }

    /// `WATCHDOG_USEC` from systemd, when it asks for pings (and they are for us).
    static func watchdogInterval() -> Duration? {
        guard let value = getenv("WATCHDOG_USEC"), let usec = Int64(String(cString: value)), usec > 0 else { return nil }
        if let pid = getenv("WATCHDOG_PID"), Int32(String(cString: pid)) != getpid() { return nil }
        return .microseconds(usec)
    }

    /// Pings at half the watchdog interval, but only while the runtime's I/O
    /// loop is going round: a wedged loop stops the pings, and systemd
    /// restarts warren.
    func pingWatchdog(every interval: Duration, runtime: @Sendable () -> WarrenRuntime) async {
        let half = interval / 2
        let halfMs = half.milliseconds
        var complained = false
        while !Task.isCancelled {
            if runtime().isResponsive(within: max(halfMs, 1500)) {
                send("WATCHDOG=1")
                complained = false
            } else if !complained {
                logger.critical("the I/O loop is not going round; no watchdog ping for systemd")
                complained = true
            }
            try? await Task.sleep(for: half)
        }
    }
}

/// How long settling one message may take once its handler is done: a
/// retry or dead-letter copy waits at most `confirmTimeout` for the
/// broker's confirm, and after a refused copy (or a shortage of warren's
/// own) the message waits at most `refusalPauseCap` before it goes back to
/// the queue. The publisher and the consumer keep to them, and
/// `AckTimeoutRule` adds them to every message's time unacked. A file of
/// its own, so the config loader (and its fuzzer) need nothing else.
enum SettleBounds {
    static let confirmTimeout: Duration = .seconds(5)
    static let refusalPauseCap: Duration = .seconds(5)
}

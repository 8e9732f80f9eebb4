// warren's library with an in-process no-op handler, for `make bench`:
//   warren-bench URL QUEUE COUNT PREFETCH CONCURRENCY
// Prints "elapsed_seconds count", from the first delivery to the last ack.
import AMQP
import Glibc
import Logging
import Synchronization
import Warren

let arguments = CommandLine.arguments
guard arguments.count == 6, let count = Int(arguments[3]), let prefetch = UInt16(arguments[4]),
      let concurrency = Int(arguments[5]) else {
    print("usage: warren-bench URL QUEUE COUNT PREFETCH CONCURRENCY")
    exit(2)
}
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}

final class Counter: Sendable {
    /// Guards the count and the clock readings.
    let state = Mutex<(count: Int, first: ContinuousClock.Instant?, last: ContinuousClock.Instant?)>((0, nil, nil))
}

let counter = Counter()
var endpoint = try ConnectionOptions(url: arguments[1])
endpoint.heartbeat = 30
let settings = WarrenSettings(
    broker: BrokerSettings(endpoints: [endpoint]),
    shutdown: ShutdownSettings(gracePeriod: .seconds(5), killAfter: .seconds(1)),
    consumers: [ConsumerSettings(name: "bench", queue: arguments[2], prefetch: prefetch, concurrency: concurrency, timeout: nil)])
let box = Mutex<WarrenRuntime?>(nil)
let runtime = WarrenRuntime(settings: settings, handlers: ["bench": ClosureHandler { _ in
    // The clock is read for the first and the last message only, as the C
    // baseline does.
    let done = counter.state.withLock { state -> Bool in
        state.count += 1
        if state.count == 1 { state.first = ContinuousClock.now }
        if state.count == count { state.last = ContinuousClock.now }
        return state.count == count
    }
    if done { box.withLock { $0?.stop() } }
    return .ack
}], logger: Logger(label: "warren-bench"))
box.withLock { $0 = runtime }
let code = await runtime.runUntilStopped()
let (received, first, last) = counter.state.withLock { ($0.count, $0.first, $0.last) }
if let first, let last {
    let elapsed = last - first
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    print("\(seconds) \(received)")
}
exit(code)

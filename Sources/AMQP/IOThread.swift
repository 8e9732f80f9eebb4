import CWarrenSupport
import Glibc

/// Starts a dedicated OS thread, never one of Swift's cooperative pool:
/// rabbitmq-c blocks, and a connection must stay on one thread for its life.
/// warren's other blocking loops (the process supervisor, the watchdog
/// timer) start theirs here too.
public enum IOThread {
    private final class Box {
        let name: String
        let body: () -> Void
        init(_ name: String, _ body: @escaping () -> Void) {
            self.name = String(name.prefix(15))
            self.body = body
        }
    }

    /// Runs `body` on a new detached thread named `name` (15 characters kept).
    /// `body` is sent to that thread: whatever it captures belongs to it.
    public static func start(name: String, _ body: sending @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.name.withCString { warren_set_thread_name($0) }
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        pthread_detach(thread)
    }
}

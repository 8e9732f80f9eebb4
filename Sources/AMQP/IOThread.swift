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

    /// The system would not give warren another thread.
    public struct StartError: Error, Sendable, CustomStringConvertible {
        public var name: String
        public var code: Int32
        public var description: String {
            "cannot start thread '\(name)': \(String(cString: strerror(code))); raise the task limit (TasksMax, ulimit -u) or free memory"
        }
    }

    /// Runs `body` on a new detached thread named `name` (15 characters kept).
    /// `body` is sent to that thread: whatever it captures belongs to it.
    public static func start(name: String, _ body: sending @escaping () -> Void) {
        do {
            try tryStart(name: name, body)
        } catch {
            preconditionFailure(error.description)
        }
    }

    /// `start`, for callers that can report the failure (EAGAIN when out
    /// of tasks, ENOMEM) rather than stop the process.
    public static func tryStart(name: String, _ body: sending @escaping () -> Void) throws(StartError) {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.name.withCString { warren_set_thread_name($0) }
            box.body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw StartError(name: String(name.prefix(15)), code: rc)
        }
        pthread_detach(thread)
    }
}

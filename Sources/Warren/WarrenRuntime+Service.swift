public import ServiceLifecycle

/// warren's consumers as one service of a program's own `ServiceGroup`,
/// beside its HTTP server or anything else, with one graceful shutdown:
/// the group's graceful shutdown (its SIGTERM, say) drains exactly as the
/// `warren` daemon does on SIGTERM; cancellation stops at once, as SIGQUIT.
extension WarrenRuntime: Service {
    /// The runtime ended with a nonzero exit code: it could not start (a
    /// refused topology, no descriptor to spare), or its consumers stopped
    /// for another reason the log names.
    public struct Stopped: Error, CustomStringConvertible {
        public var exitCode: Int32
        public var description: String {
            "warren's consumers stopped with exit code \(exitCode); the log above says why (a refused queue, an unreachable broker with failFast, no descriptors to spare)"
        }
    }

    /// Runs until the service group shuts down gracefully (then drains) or
    /// is cancelled (then terminates the running handlers, which requeues
    /// their messages). Throws `Stopped` when the runtime exits nonzero,
    /// so the group treats it as a failed service.
    public func run() async throws {
        // The drain runs to its end even when cancellation arrives part-way:
        // the runtime runs in a task of its own, awaited here, and
        // cancellation becomes a quit instead of cutting its work off.
        let runtime = Task { await self.runUntilStopped() }
        let code = await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await runtime.value
            } onCancel: {
                self.quit()
            }
        } onGracefulShutdown: {
            self.stop()
        }
        guard code == 0 else { throw Stopped(exitCode: code) }
    }
}

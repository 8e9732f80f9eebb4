/// Runs `body`, and if it has not finished after `limit`, calls `giveUp`,
/// which must make `body` end soon (drop the socket it waits on): a task
/// cannot be abandoned, only ended. Returns true if `body` finished in
/// time. For waits on a broker that may never answer, inside a stop whose
/// length is bounded.
func finishes(within limit: Duration, orElse giveUp: @escaping @Sendable () -> Void,
              _ body: @escaping @Sendable () async -> Void) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            await body()
            return true
        }
        group.addTask {
            try? await Task.sleep(for: limit)
            if Task.isCancelled { return true }
            giveUp()
            return false
        }
        let first = await group.next() ?? true
        group.cancelAll()
        return first
    }
}

import Foundation
import Glibc
import Testing

/// The built `warren` binary, run as an operator would: a config file,
/// real signals, an exit code.
final class WarrenBinary: @unchecked Sendable {
    // @unchecked: `process` is configured before launch and then only read;
    // Foundation's Process is thread-safe for terminationStatus after exit.
    static var path: String {
        if let value = getenv("WARREN_BINARY") { return String(cString: value) }
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        return "/\(root)/.build/debug/warren"
    }

    let directory: String
    let configPath: String
    let logPath: String
    private let process = Process()
    private let exited = DispatchSemaphore(value: 0)

    /// Writes `config` (a `{dir}` in it becomes the test's own directory) and starts warren on it.
    /// `shell`, if given, runs first in `sh`, which then becomes warren
    /// (same pid): `exec 7</etc/hostname` hands warren a descriptor.
    /// `separateStdout`: stdout goes to its own file (`stdout`), not the log
    /// (a command whose output a test parses, such as `warren dlq list --json`).
    init(config: String, arguments: [String]? = nil, environment: [String: String] = [:], shell: String? = nil,
         separateStdout: Bool = false) throws {
        directory = try Self.makeDirectory()
        configPath = directory + "/warren.ini"
        logPath = directory + "/warren.log"
        try config.replacingOccurrences(of: "{dir}", with: directory).write(toFile: configPath, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let warrenArguments = arguments ?? ["--config", configPath]
        if let shell {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", shell + "\nexec \"$0\" \"$@\"", Self.path] + warrenArguments
        } else {
            process.executableURL = URL(fileURLWithPath: Self.path)
            process.arguments = warrenArguments
        }
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardError = log
        if separateStdout {
            _ = FileManager.default.createFile(atPath: directory + "/stdout", contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: directory + "/stdout")!
        } else {
            process.standardOutput = log
        }
        process.standardInput = FileHandle.nullDevice
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let done = exited
        process.terminationHandler = { _ in done.signal() }
        try process.run()
    }

    static func makeDirectory() throws -> String {
        var template = Array("/tmp/warren-e2e-XXXXXX".utf8CString)
        guard let result = mkdtemp(&template) else { throw CancellationError() }
        return String(cString: result)
    }

    var pid: pid_t { process.processIdentifier }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the exit; returns the exit code, or nil on timeout (then kills it).
    func waitForExit(timeout: Duration = .seconds(60)) async -> Int32? {
        let semaphore = exited
        let seconds = Double(timeout.components.seconds)
        let finished = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: semaphore.wait(timeout: .now() + seconds) == .success)
            }
        }
        guard finished else {
            kill(pid, SIGKILL)
            Issue.record("warren did not exit within \(timeout); its log:\n\(log)")
            return nil
        }
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// What it wrote on stdout, when started with `separateStdout`.
    var stdout: String { (try? String(contentsOfFile: file("stdout"), encoding: .utf8)) ?? "" }

    func file(_ name: String) -> String { directory + "/" + name }

    /// Lines of a file in the test directory (a handler's ledger).
    func lines(_ name: String) -> [String] {
        ((try? String(contentsOfFile: file(name), encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL) }
    }
}

/// A config for one consumer on the test broker. `consumerTimeout`: the
/// test broker's acknowledgement timeout is an hour (scripts/broker.sh),
/// far beyond any test's handlers, so the check against it is off unless
/// a test is about it (TopologyTests).
func warrenConfig(queue: String, command: String, prefetch: Int = 16, concurrency: Int = 4, grace: String = "30s",
                  killAfter: String = "10s", consumerTimeout: String = "0", extra: String = "") throws -> String {
    """
    [broker]
    url = \(TestBroker.url)
    heartbeat = 5s
    consumer_timeout = \(consumerTimeout)

    [shutdown]
    grace_period = \(grace)
    kill_after = \(killAfter)

    [consumer.test]
    queue = \(queue)
    command = \(command)
    prefetch = \(prefetch)
    concurrency = \(concurrency)
    \(extra)

    [log]
    level = info
    """
}

/// A process is gone when /proc has no entry for it. A zombie (`Z`) is not
/// gone: it holds its pid and counts against the unit's task limit until
/// its parent reaps it.
func isGone(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)] == "X"
}

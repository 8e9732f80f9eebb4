import Foundation
import Glibc
import Testing

/// What a handler may see of warren's own environment: nothing of warren's
/// configuration (the broker password above all) and nothing that lets it
/// speak to systemd as warren; the per-message `WARREN_*` variables and the
/// rest of the environment, as before.
@Suite(.serialized) struct HandlerSecretsTests {
    @Test func aHandlerRunningEnvSeesNeitherTheBrokerPasswordNorWarrensConfigNorSystemdsSockets() async throws {
        try await withTestQueue { client, queue in
            // A user of its own, so the password is a string found nowhere else.
            let user = "warren-secret-\(UInt32.random(in: 0...UInt32.max))"
            let password = "Pw-\(UInt64.random(in: 0...UInt64.max))-s3cret"
            try FaultTests.rabbitmqctl("add_user", user, password)
            try FaultTests.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            defer { try? FaultTests.rabbitmqctl("delete_user", user) }
            let base = try #require(URL(string: TestBroker.url))
            let secretURL = "amqp://\(user):\(password)@127.0.0.1:\(base.port ?? 5672)/%2f"
            let notify = try SystemdNotifyTests.NotifySocket(abstract: false)

            let ids = ["env-1", "env-2"]
            try await client.publish(ids: ids, to: queue)
            // The handler prints its environment to a file and to stdout
            // (which warren logs), and tries to tell "systemd" it is warren.
            let command = #"sh -c 'env > {dir}/env-$WARREN_MESSAGE_ID; env; if [ -n "$NOTIFY_SOCKET" ]; then echo forged; fi'"#
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: command, concurrency: 1),
                environment: [
                    "WARREN_BROKER_URL": secretURL,
                    "WARREN_CONSUMER_TEST_TIMEOUT": "45s",
                    "WARREN_SOMETHING_ELSE": "warren-private",
                    "NOTIFY_SOCKET": notify.name,
                    "WATCHDOG_USEC": "30000000",
                    "WATCHDOG_PID": "\(getpid())",
                    "LISTEN_FDS": "0",
                    "LISTEN_PID": "\(getpid())",
                    "LISTEN_FDNAMES": "none",
                    "CREDENTIALS_DIRECTORY": "/run/credentials/warren.service",
                    "JOURNAL_STREAM": "8:12345",
                    "HANDLER_MAY_SEE": "yes",
                ])
            try await eventually("both handlers ran") {
                let written = ids.allSatisfy { FileManager.default.fileExists(atPath: warren.file("env-\($0)")) }
                let ready = try await client.count(queue)
                return written && ready == 0
            }
            try await Task.sleep(for: .milliseconds(300))
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let log = warren.log
            #expect(log.contains("WARREN_MESSAGE_ID=env-1"), "the handler's env output reaches the log: \(log)")
            #expect(!log.contains(password), "the broker password is in warren's log")
            #expect(!log.contains("forged"), "a handler saw NOTIFY_SOCKET")
            for id in ids {
                let env = try String(contentsOfFile: warren.file("env-\(id)"), encoding: .utf8)
                let names = Set(env.split(separator: "\n").compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
                #expect(!env.contains(password), "the handler saw the broker password:\n\(env)")
                for hidden in ["WARREN_BROKER_URL", "WARREN_CONSUMER_TEST_TIMEOUT", "WARREN_SOMETHING_ELSE", "NOTIFY_SOCKET",
                               "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                               "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"] {
                    #expect(!names.contains(hidden), "the handler inherited \(hidden)")
                }
                #expect(env.contains("WARREN_MESSAGE_ID=\(id)\n"))
                #expect(env.contains("WARREN_QUEUE=\(queue)\n"))
                #expect(env.contains("WARREN_ATTEMPT=1\n"))
                #expect(env.contains("WARREN_REDELIVERED=0\n"))
                #expect(env.contains("HANDLER_MAY_SEE=yes\n"), "the rest of the environment is inherited")
                #expect(names.contains("PATH"))
            }
            #expect(try await client.count(queue) == 0, "every message acked")
        }
    }

    @Test func aPasswordFromPasswordFileLogsInAndIsSeenNeitherByHandlersNorInTheLog() async throws {
        try await withTestQueue { client, queue in
            let user = "warren-file-\(UInt32.random(in: 0...UInt32.max))"
            let password = "Pf-\(UInt64.random(in: 0...UInt64.max))-s3cret"
            try FaultTests.rabbitmqctl("add_user", user, password)
            try FaultTests.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            defer { try? FaultTests.rabbitmqctl("delete_user", user) }
            let base = try #require(URL(string: TestBroker.url))
            let directory = try WarrenBinary.makeDirectory()
            try (password + "\n").write(toFile: directory + "/amqp-password", atomically: true, encoding: .utf8)
            try await client.publish(ids: ["pf-1"], to: queue)
            let config = try warrenConfig(queue: queue, command: #"sh -c 'env > {dir}/env'"#, concurrency: 1)
                .replacingOccurrences(of: "url = \(TestBroker.url)",
                                      with: "url = amqp://\(user)@127.0.0.1:\(base.port ?? 5672)/%2f\npassword_file = \(directory)/amqp-password")
            let warren = try WarrenBinary(config: config)
            try await eventually("the message is handled") {
                let left = try await client.count(queue)
                return FileManager.default.fileExists(atPath: warren.file("env")) && left == 0
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(!warren.log.contains(password), "the password is in warren's log")
            let env = try String(contentsOfFile: warren.file("env"), encoding: .utf8)
            #expect(!env.contains(password), "a handler saw the password")
            #expect(!env.contains("amqp-password"), "a handler learned where the password is")
        }
    }

    /// A descriptor is a capability: the broker's socket, warren's log, the
    /// metrics listener, or whatever warren's own parent left open (a shell's
    /// `exec 7<`, systemd's sockets) must not reach handler code.
    @Test(arguments: ["exec", "persistent"])
    func aHandlerGetsOnlyStdinStdoutAndStderrNeverADescriptorWarrenHoldsOrInherited(_ mode: String) async throws {
        let directory = try WarrenBinary.makeDirectory()
        let script = """
            import json, os, sys
            def note():
                fds = []
                for fd in range(3, 1024):
                    try:
                        os.fstat(fd)
                        fds.append(fd)
                    except OSError:
                        pass
                with open(os.path.join(sys.argv[1], "fds"), "a") as f:
                    f.write(json.dumps(fds) + "\\n")
            note()
            if sys.argv[2] == "persistent":
                print(json.dumps({"ready": True}), flush=True)
                for line in sys.stdin:
                    note()
                    print(json.dumps({"id": json.loads(line)["id"], "outcome": "ack"}), flush=True)
            """
        try script.write(toFile: directory + "/fds.py", atomically: true, encoding: .utf8)
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["fd-1", "fd-2"], to: queue)
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: "python3 \(directory)/fds.py {dir} \(mode)", concurrency: 1,
                                         extra: mode == "persistent" ? "mode = persistent" : ""),
                shell: "exec 7</etc/hostname 9>>\(directory)/inherited")
            try await eventually("both messages handled") {
                try await client.count(queue) == 0 && warren.lines("fds").count >= 2
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let seen = warren.lines("fds")
            #expect(!seen.isEmpty)
            for line in seen { #expect(line == "[]", "the handler holds descriptors beyond 0, 1 and 2: \(line)") }
        }
    }
}

import Glibc
import Testing
import Warren
@testable import WarrenConfig

/// `password_file`: the broker password from a file (systemd's
/// `LoadCredential=`, a container secret), never printed, never beside a
/// password in `url`.
@Suite struct PasswordFileTests: ConfigProblems {
    static let secret = "s3cret-\(UInt64.random(in: 0...UInt64.max))"

    func file(_ contents: String) throws -> String {
        let path = "/tmp/warren-password-\(UInt64.random(in: 0...UInt64.max))"
        guard let handle = fopen(path, "w") else { throw CancellationError() }
        fputs(contents, handle)
        fclose(handle)
        return path
    }

    func config(url: String = "amqp://orders@127.0.0.1:5672/%2f amqp://orders@127.0.0.2:5672/%2f", _ path: String) -> String {
        """
        [broker]
        url = \(url)
        password_file = \(path)

        [consumer.orders]
        queue = orders
        command = /bin/true
        """
    }


    @Test func thePasswordComesFromTheFileForEveryURLWithoutItsFinalNewline() throws {
        let path = try file(Self.secret + "\n")
        defer { unlink(path) }
        let loaded = try ConfigLoader.parse(config(path), file: "w.ini", environment: [:])
        #expect(loaded.warren.broker.endpoints.map(\.password) == [Self.secret, Self.secret])
        #expect(loaded.warren.broker.endpoints.map(\.user) == ["orders", "orders"])
        #expect(!ConfigDescription.render(loaded).contains(Self.secret), "--check-config prints the password")
    }

    @Test func aPasswordInBothTheURLAndAFileIsRefusedAtTheKeysLine() throws {
        let path = try file(Self.secret)
        defer { unlink(path) }
        let found = problems(config(url: "amqp://orders:other@127.0.0.1:5672/%2f", path))
        #expect(found == ["w.ini:3: a password is given both in url and in password_file: remove it from url (keep user@host)"])
    }

    @Test(arguments: ["missing", "directory", "empty", "two lines"])
    func anUnusableFileIsNamedButNeverQuoted(_ kind: String) throws {
        let path: String
        switch kind {
        case "missing": path = "/nonexistent/warren-password"
        case "directory": path = "/tmp"
        case "empty": path = try file("")
        default: path = try file(Self.secret + "\n" + Self.secret + "\n")
        }
        defer { if kind == "empty" || kind == "two lines" { unlink(path) } }
        let found = problems(config(path))
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.hasPrefix("w.ini:3: password_file '\(path)': ") == true, "\(found)")
        #expect(!found.joined().contains(Self.secret))
    }
}

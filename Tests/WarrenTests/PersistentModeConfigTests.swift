import Testing
import Warren
@testable import WarrenConfig

/// `mode`, `startup_timeout`, `max_messages`, `max_memory`: their defaults,
/// their types, and the nonsense refused with the line named.
@Suite struct PersistentModeConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /usr/bin/worker\n"


    @Test func execIsTheDefaultAndPersistentKeysHaveTheirDefaults() throws {
        let consumer = try #require(try ConfigLoader.parse(Self.minimal, file: "w.ini").warren.consumers.first)
        #expect(consumer.mode == .exec)
        #expect(consumer.startupTimeout == .seconds(30))
        #expect(consumer.maxMessages == 0)
        #expect(consumer.maxMemory == nil)
    }

    @Test func persistentKeysAreReadWithTheirTypes() throws {
        let text = Self.minimal + "mode = persistent\nstartup_timeout = 2m\nmax_messages = 1000\nmax_memory = 512MB\n"
        let consumer = try #require(try ConfigLoader.parse(text, file: "w.ini").warren.consumers.first)
        #expect(consumer.mode == .persistent)
        #expect(consumer.startupTimeout == .seconds(120))
        #expect(consumer.maxMessages == 1000)
        #expect(consumer.maxMemory == 512 << 20)
    }

    @Test func nonsenseIsRefusedWithItsLine() {
        let cases: [(String, String)] = [
            ("mode = forking\n", "w.ini:4: 'forking' is not allowed here (allowed: exec, persistent)"),
            ("mode = persistent\nmax_messages = -1\n", "w.ini:5: -1 is out of range (allowed: 0 to 1000000000)"),
            ("mode = persistent\nstartup_timeout = 0\n", "w.ini:5: '0' is too short"),
            ("mode = persistent\nmax_memory = 0\n", "w.ini:5: '0' is too small"),
        ]
        for (extra, expected) in cases {
            let found = problems(Self.minimal + extra)
            #expect(found.count == 1 && found[0].hasPrefix(expected), "\(extra): \(found)")
        }
        let noCommand = problems("[consumer.orders]\nqueue = orders\nmode = persistent\n")
        #expect(noCommand.contains { $0.contains("has no 'command'") }, "\(noCommand)")
    }
}

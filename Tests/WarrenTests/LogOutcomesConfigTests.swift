import Testing
import Warren
@testable import WarrenConfig

/// `log_outcomes`: on by default, read like every boolean, shown by
/// --check-config, and nonsense refused with its line.
@Suite struct LogOutcomesConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /bin/cat\n"

    @Test func outcomeLinesAreOnByDefault() throws {
        let consumer = try #require(try ConfigLoader.parse(Self.minimal, file: "w.ini").warren.consumers.first)
        #expect(consumer.logOutcomes)
    }

    @Test func logOutcomesIsReadFromTheFileAndTheEnvironmentAndShownByCheckConfig() throws {
        let text = Self.minimal + "log_outcomes = no\n"
        let config = try ConfigLoader.parse(text, file: "w.ini")
        #expect(config.warren.consumers[0].logOutcomes == false)
        let overridden = try ConfigLoader.parse(text, file: "w.ini", environment: ["WARREN_CONSUMER_ORDERS_LOG_OUTCOMES": "on"])
        #expect(overridden.warren.consumers[0].logOutcomes)
        let described = ConfigDescription.render(config)
        #expect(described.contains("log_outcomes = false\n"), "\(described)")
        #expect(try ConfigLoader.parse(described, file: "described.ini").warren.consumers == config.warren.consumers)
    }

    @Test func nonsenseIsRefusedWithItsLine() {
        for (extra, expected) in [("log_outcomes = maybe\n", "w.ini:4: 'maybe' is not a boolean"),
                                  ("log_outcomes =\n", "w.ini:4: empty value")] {
            let found = problems(Self.minimal + extra)
            #expect(found.count == 1 && found[0].hasPrefix(expected), "\(extra): \(found)")
        }
    }
}

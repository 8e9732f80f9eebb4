import Testing
import Warren
@testable import WarrenConfig

/// `pause_after_failures`: off by default, read from the file or the
/// environment, printed by --check-config, refused with its line.
@Suite struct BreakerConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /bin/true\n"

    func load(_ text: String, environment: [String: String] = [:]) throws -> Config {
        try ConfigLoader.parse(text, file: "w.ini", environment: environment)
    }

    @Test func theBreakerIsOffByDefaultAndReadFromTheFileOrTheEnvironment() throws {
        #expect(try load(Self.minimal).warren.consumers[0].pauseAfterFailures == 0)
        #expect(try load(Self.minimal + "pause_after_failures = 5\n").warren.consumers[0].pauseAfterFailures == 5)
        let overridden = try load(Self.minimal, environment: ["WARREN_CONSUMER_ORDERS_PAUSE_AFTER_FAILURES": "3"])
        #expect(overridden.warren.consumers[0].pauseAfterFailures == 3)
    }

    @Test func checkConfigPrintsItAndItsOutputLoadsBack() throws {
        let printed = ConfigDescription.render(try load(Self.minimal + "pause_after_failures = 7\n"))
        #expect(printed.contains("pause_after_failures = 7\n"))
        #expect(try load(printed).warren.consumers[0].pauseAfterFailures == 7)
    }

    @Test func aNegativeOrNonNumericValueNamesItsLine() {
        let negative = problems(Self.minimal + "pause_after_failures = -1\n")
        #expect(negative.count == 1 && negative[0].hasPrefix("w.ini:4:"), "\(negative)")
        let words = problems(Self.minimal + "pause_after_failures = often\n")
        #expect(words.count == 1 && words[0].hasPrefix("w.ini:4:"), "\(words)")
        #expect(problems(Self.minimal + "pause_after_failures = 1000001\n").first?.hasPrefix("w.ini:4:") == true)
    }
}

import Testing
import Warren
@testable import WarrenConfig

/// `input`: body by default, envelope when asked, anything else refused with its line.
@Suite struct InputConfigTests {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /bin/true\n"

    @Test func inputDefaultsToTheBodyAndIsReadFromTheFileOrTheEnvironment() throws {
        #expect(try ConfigLoader.parse(Self.minimal, file: "w.ini").warren.consumers[0].input == .body)
        #expect(try ConfigLoader.parse(Self.minimal + "input = envelope\n", file: "w.ini").warren.consumers[0].input == .envelope)
        let overridden = try ConfigLoader.parse(Self.minimal, file: "w.ini",
                                                environment: ["WARREN_CONSUMER_ORDERS_INPUT": "envelope"])
        #expect(overridden.warren.consumers[0].input == .envelope)
        let described = ConfigDescription.render(try ConfigLoader.parse(Self.minimal + "input = envelope\n", file: "w.ini"))
        #expect(described.contains("input = envelope\n"))
    }

    @Test func anUnknownInputIsRefusedWithItsLine() {
        do {
            _ = try ConfigLoader.parse(Self.minimal + "input = json\n", file: "w.ini")
            Issue.record("input = json was accepted")
        } catch {
            #expect(error.problems.map(\.description) == ["w.ini:4: 'json' is not allowed here (allowed: body, envelope)"])
        }
    }
}

import Testing
import Warren
@testable import WarrenConfig

/// The defaults live once, in the settings types; config/warren.ini and
/// README's configuration table state them too, and must say the same.
@Suite struct ConfigDefaultsDocTests {
    static let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")

    /// Only what is required: everything else is the code's default.
    static let required = """
        [consumer.demo]
        queue = warren.demo
        command = config/demo-handler.sh

        """

    func codeDefaults() throws -> Config {
        try ConfigLoader.parse(Self.required, file: "required.ini")
    }

    func readme() throws -> String {
        try String(contentsOfFile: Self.root + "/README.md", encoding: .utf8)
    }

    /// README's configuration table: (section, key, default) for each key
    /// whose default is a value (in backquotes, not "required" or "<queue>.dead").
    func readmeDefaults() throws -> [(section: String, key: String, value: String)] {
        let lines = try readme().split(separator: "\n", omittingEmptySubsequences: false)
        guard let header = lines.firstIndex(where: { $0.hasPrefix("| section | key | default |") }) else {
            Issue.record("README has no configuration table (| section | key | default | meaning |)")
            return []
        }
        var section = ""
        var result: [(String, String, String)] = []
        for line in lines[(header + 2)...] {
            guard line.hasPrefix("|") else { break }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { String($0).trimmingCharacters() }
            guard cells.count >= 4 else { continue }
            if let name = quoted(cells[1]).first { section = String(name.dropFirst().dropLast()) }
            let keys = quoted(cells[2])
            let values = quoted(cells[3])
            guard values.count == keys.count, !values.contains(where: { $0.contains("<") }) else { continue }
            for (key, value) in zip(keys, values) { result.append((section, key, value)) }
        }
        return result
    }

    func quoted(_ text: String) -> [String] {
        text.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
    }

    @Test func theSampleConfigStatesTheCodesDefaults() throws {
        let sample = try ConfigLoader.load(path: Self.root + "/config/warren.ini", environment: [:])
        let defaults = try codeDefaults()
        #expect(sample.warren == defaults.warren, "config/warren.ini and the settings types' defaults differ")
        #expect(sample.log == defaults.log)
        #expect(sample.metrics == defaults.metrics)
    }

    @Test func readmesConfigurationTableStatesTheCodesDefaults() throws {
        let rows = try readmeDefaults()
        #expect(rows.count >= 20, "only \(rows.count) defaults found in README's table")
        var sections: [String: [String]] = ["consumer.demo": ["queue = warren.demo", "command = config/demo-handler.sh"]]
        for row in rows {
            let section = row.section == "consumer.NAME" ? "consumer.demo" : row.section
            sections[section, default: []].append("\(row.key) = \(row.value)")
        }
        var text = ""
        for (section, lines) in sections.sorted(by: { $0.key < $1.key }) {
            text += "[\(section)]\n" + lines.joined(separator: "\n") + "\n"
        }
        let stated = try ConfigLoader.parse(text, file: "README.md")
        let defaults = try codeDefaults()
        #expect(stated.warren == defaults.warren, "README's defaults and the settings types' differ:\n\(text)")
        #expect(stated.log == defaults.log)
    }

    @Test func everyKeyIsInReadmesTableAndTheSampleConfig() throws {
        let readme = try readme()
        let sample = try String(contentsOfFile: Self.root + "/config/warren.ini", encoding: .utf8)
        for key in ConfigKeys.broker.union(ConfigKeys.shutdown).union(ConfigKeys.consumer).union(ConfigKeys.metrics)
            .union(ConfigKeys.log) {
            #expect(readme.contains("`\(key)`"), "README's configuration table lacks \(key)")
            #expect(sample.contains("\(key) = "), "config/warren.ini lacks \(key)")
        }
    }
}

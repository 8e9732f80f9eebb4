import Warren
@testable import WarrenConfig

/// For suites that check what a config text is refused for: its problems
/// as the operator reads them (`w.ini:LINE: problem`), none when valid.
protocol ConfigProblems {}

extension ConfigProblems {
    func problems(_ text: String, environment: [String: String] = [:]) -> [String] {
        do {
            _ = try ConfigLoader.parse(text, file: "w.ini", environment: environment)
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }
}

import Glibc

/// warren's own environment, as `NAME=value` entries in their order: read
/// once by the handler environment and by the command (config overrides).
public enum ProcessEnvironment {
    public static func entries() -> [String] {
        var result: [String] = []
        var index = 0
        while let entry = environ[index] {
            result.append(String(cString: entry))
            index += 1
        }
        return result
    }
}

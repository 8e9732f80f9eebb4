/// Durations in the config: `250ms`, `30s`, `5m`, `1h`, or bare seconds (`30`, `0.5`).
public enum DurationParser {
    public static func parse(_ text: String) -> Duration? {
        let units: [(suffix: String, scale: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var number = Substring(text)
        var scale = 1.0
        for unit in units where number.hasSuffix(unit.suffix) {
            number = number.dropLast(unit.suffix.count)
            scale = unit.scale
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
              number.filter({ $0 == "." }).count <= 1, number.first != ".", number.last != ".",
              let value = Double(number) else { return nil }
        let milliseconds = (value * scale * 1000).rounded()
        guard milliseconds <= 1e12 else { return nil }
        return .milliseconds(Int64(milliseconds))
    }
}

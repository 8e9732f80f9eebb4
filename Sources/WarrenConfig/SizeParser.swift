/// Sizes in the config: `16MB`, `512KB`, `1GB`, or bare bytes (`1048576`).
///
/// Units are powers of 1024 (`KB` = 1024 bytes, `MB` = 1024 KB, `GB` =
/// 1024 MB), as memory is counted; `KiB`, `MiB`, `GiB` and `B` are accepted
/// too, in any case. Whole numbers only: `1.5MB` is refused rather than
/// rounded, so what the operator wrote is what is enforced.
public enum SizeParser {
    /// The largest size accepted: far above anything a broker delivers
    /// (RabbitMQ's own ceiling is 512 MiB), low enough never to overflow.
    public static let maximum = 1 << 40

    public static func parse(_ text: String) -> Int? {
        let units: [(suffix: String, scale: Int)] = [
            ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30),
            ("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("b", 1),
        ]
        let lowered = text.lowercased()
        var digits = Substring(lowered)
        var scale = 1
        for unit in units where digits.hasSuffix(unit.suffix) {
            digits = digits.dropLast(unit.suffix.count)
            scale = unit.scale
            break
        }
        guard !digits.isEmpty, digits.count <= 13, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let value = Int(digits) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow, bytes <= maximum else { return nil }
        return bytes
    }

    /// The shortest exact spelling: `16MB`, `1536KB`, `1000`.
    public static func format(_ bytes: Int) -> String {
        for (suffix, scale) in [("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] where bytes >= scale && bytes % scale == 0 {
            return "\(bytes / scale)\(suffix)"
        }
        return "\(bytes)"
    }
}

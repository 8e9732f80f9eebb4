// The libFuzzer entry point for the config loader, compiled into the
// WarrenConfig module by scripts/fuzz.sh (not part of the SwiftPM package).
// Any input may be rejected; none may crash, and every rejection must say
// which line of this input is wrong, printably.

@_cdecl("LLVMFuzzerTestOneInput")
public func configFuzzTarget(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let text = try? ConfigLoader.text(from: bytes) else { return 0 }
    let lineCount = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).count
    do {
        _ = try ConfigLoader.parse(text, file: "fuzz.ini")
    } catch {
        if error.problems.isEmpty { fatalError("rejected without a problem") }
        for problem in error.problems {
            if problem.file != "fuzz.ini" { fatalError("problem names another file: \(problem)") }
            if !(0...lineCount).contains(problem.line) { fatalError("line \(problem.line) of \(lineCount): \(problem)") }
            if problem.message.isEmpty { fatalError("empty message at line \(problem.line)") }
            if problem.message.unicodeScalars.contains(where: { $0 != "\t" && $0.properties.generalCategory == .control }) {
                fatalError("control character in: \(problem)")
            }
            if !problem.description.hasPrefix("fuzz.ini:\(problem.line): ") { fatalError("not file:line: \(problem)") }
        }
    }
    return 0
}

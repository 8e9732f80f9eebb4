import Foundation
import Logging
import Testing
@testable import warren

/// One log record is one line, whatever a message or a handler put in it:
/// journald and every shipper split records on newlines, and a terminal
/// obeys escapes.
@Suite struct LogFormatTests {
    static let formats: [(StderrLogHandler.Format, Bool)] = [(.text, false), (.text, true), (.json, false), (.json, true)]

    /// Every character that ends a line or steers a terminal somewhere.
    static let controls: [Unicode.Scalar] = {
        var values: [UInt32] = Array(0..<0x20)
        values.append(0x7f)
        values += Array(0x80...0x9f)
        values += [0x2028, 0x2029]
        return values.compactMap(Unicode.Scalar.init)
    }()

    func render(_ format: StderrLogHandler.Format, journal: Bool, level: Logger.Level = .info, _ message: String,
                _ metadata: Logger.Metadata = [:]) -> String {
        StderrLogHandler(label: "t", level: .trace, format: format, journal: journal)
            .render(level: level, message: "\(message)", metadata: metadata)
    }

    func isRaw(_ scalar: Unicode.Scalar) -> Bool { Self.controls.contains(scalar) }

    @Test(arguments: 0..<4)
    func aForgedJournalRecordInAMessageIdStaysOnItsOwnLine(format index: Int) {
        let (format, journal) = Self.formats[index]
        let line = render(format, journal: journal, "handler output",
                          ["message_id": "abc\n<2>forged_critical", "stream": "stdout"])
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().unicodeScalars.allSatisfy { !isRaw($0) }, "\(line.debugDescription)")
        #expect(line.contains(#"abc\n<2>forged_critical"#), "\(line.debugDescription)")
        if journal { #expect(line.hasPrefix("<6>")) }
    }

    @Test(arguments: 0..<4)
    func everyControlCharacterInMessageKeyOrValueIsEscaped(format index: Int) {
        let (format, journal) = Self.formats[index]
        for scalar in Self.controls {
            let text = "a\(Character(scalar))b"
            let line = render(format, journal: journal, level: .warning, text, [text: "\(text)", "plain": "v"])
            #expect(line.filter { $0 == "\n" }.count == 1 && line.hasSuffix("\n"),
                    "U+\(String(scalar.value, radix: 16)): \(line.debugDescription)")
            #expect(line.dropLast().unicodeScalars.allSatisfy { !isRaw($0) },
                    "U+\(String(scalar.value, radix: 16)) left raw: \(line.debugDescription)")
            if journal { #expect(line.hasPrefix("<4>")) }
        }
    }

    @Test func textEscapesAreVisibleAndNameTheCharacter() {
        let line = render(.text, journal: true, "a\rb\tc\u{1b}[31md\u{7f}e\u{85}f\u{2028}g\0h", ["id": "x\ny"])
        #expect(line == #"<6>a\rb\tc\x1b[31md\x7fe\x85f\u2028g\x00h id="x\ny""# + "\n")
    }

    @Test func ordinaryTextIsLeftAlone() {
        let line = render(.text, journal: true, #"handler failed; C:\path "quoted" é"#,
                          ["plain": "v-1", "spaced": "a b", "empty": ""])
        #expect(line == #"<6>handler failed; C:\path "quoted" é empty="" plain=v-1 spaced="a b""# + "\n")
    }

    @Test func jsonKeepsTheExactTextRecoverable() throws {
        var all = ""
        for scalar in Self.controls { all.unicodeScalars.append(scalar) }
        let text = "start \(all) \\ \" é end"
        let line = render(.json, journal: false, text, ["message_id": "\(text)"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == text)
        #expect(object["message_id"] as? String == text)
        #expect(object["level"] as? String == "info")
    }
}

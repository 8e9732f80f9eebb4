import Testing
@testable import Warren

/// A persistent worker's stdout, read as the protocol: lines within a
/// bound, JSON, and the answer's fields.
@Suite struct WorkerLineTests {
    func read(_ text: String) -> WorkerLine { WorkerLine(Array(text.utf8)) }

    @Test func readyAndAnswersAreRecognisedWithTheirOptionalFields() {
        #expect(read(#"{"ready":true}"#) == .ready)
        #expect(read(#" { "ready" : true } "#) == .ready)
        #expect(read(#"{"id":"42","outcome":"ack"}"#) == .answer(WorkerAnswer(id: "42", verdict: .ack)))
        #expect(read(#"{"outcome":"retry","id":"7","reason":"db down","extra":[1,{"a":null}]}"#)
            == .answer(WorkerAnswer(id: "7", verdict: .retry, reason: "db down")))
        #expect(read(#"{"id":"1","outcome":"dead_letter","reason":null,"reply":"caf\u00e9 \ud83d\ude00\n"}"#)
            == .answer(WorkerAnswer(id: "1", verdict: .dead_letter, reply: "café 😀\n")))
    }

    @Test func anythingElseIsInvalidAndSaysWhy() {
        let cases: [(String, String)] = [
            ("hello", "not JSON"),
            (#"{"id":"1","outcome":"ack"} x"#, "not JSON"),
            (#"["ready"]"#, "not a JSON object"),
            (#"{"ready":false}"#, "no string \"id\""),
            (#"{"id":42,"outcome":"ack"}"#, "no string \"id\""),
            (#"{"id":"1","outcome":"ok"}"#, "\"outcome\" must be"),
            (#"{"id":"1","outcome":"ack","reason":5}"#, "\"reason\" must be a string"),
            (#"{"id":"1\ud800","outcome":"ack"}"#, "not JSON"),
            (#"{"id":"1","outcome":"ack""#, "not JSON"),
            ("{\"id\":\"a\u{01}\",\"outcome\":\"ack\"}", "not JSON"),
            (#"{"n":01}"#, "not JSON"),
            (#"{"id":"1","outcome":"ack","outcome":"retry"}"#, "not JSON"),
            (String(repeating: "[", count: 100) + String(repeating: "]", count: 100), "not JSON"),
        ]
        for (text, why) in cases {
            guard case .invalid(let said, _) = read(text) else {
                Issue.record("\(text) was accepted")
                continue
            }
            #expect(said.hasPrefix(why), "\(text): \(said)")
        }
    }

    /// A reason rides in a header of the retry copy: unbounded, it could
    /// outgrow a frame and make the copy, and so the message, fail forever.
    @Test func aLongReasonIsCutToFitAHeader() {
        let long = String(repeating: "é", count: 100_000)
        guard case .answer(let answer) = read(#"{"id":"1","outcome":"retry","reason":""# + long + #""}"#) else {
            Issue.record("a long reason made the answer invalid")
            return
        }
        let reason = answer.reason ?? ""
        #expect(reason.utf8.count <= WorkerLine.reasonLimit + 3)
        #expect(reason.hasPrefix("éé") && reason.hasSuffix("…"))
    }

    @Test func numbersAndNestingParse() throws {
        #expect(try JSONValue.parse(Array("[-1.5e3, 0, 12, true, false, null, \"\\\"\\\\/\"]".utf8))
            == .array([.number(-1500), .number(0), .number(12), .bool(true), .bool(false), .null, .string("\"\\/")]))
    }

    @Test func theLogExcerptIsTheFirst200Bytes() {
        guard case .invalid(_, let excerpt) = read(String(repeating: "x", count: 500)) else {
            Issue.record("500 x's were accepted")
            return
        }
        #expect(excerpt == String(repeating: "x", count: 200) + "…")
    }

    @Test func stdoutIsCutIntoLinesAndALineOverTheLimitIsReportedOnceAndSkipped() {
        var splitter = WorkerLineSplitter(limit: 10)
        var pieces: [WorkerLineSplitter.Piece] = []
        splitter.feed(Array("ab\r\ncd\n0123".utf8)[...]) { pieces.append($0) }
        splitter.feed(Array("456789ABCDEF".utf8)[...]) { pieces.append($0) }
        splitter.feed(Array("GH\nok\n".utf8)[...]) { pieces.append($0) }
        #expect(pieces == [.line(Array("ab".utf8)), .line(Array("cd".utf8)),
                           .tooLong(prefix: Array("0123456789ABCDEF".utf8)), .line(Array("ok".utf8))])
    }
}

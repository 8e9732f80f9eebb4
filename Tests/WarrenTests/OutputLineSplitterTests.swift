import Testing
@testable import Warren

/// The log budget of one output stream, without processes.
@Suite struct OutputLineSplitterTests {
    func feed(_ splitter: inout OutputLineSplitter, _ text: String) -> [String?] {
        var lines: [String?] = []
        splitter.feed(Array(text.utf8)[...]) { lines.append($0) }
        return lines
    }

    @Test func linesAreCutAtNewlinesAcrossReadsAndTheLastOneIsFlushedAtTheEnd() {
        var splitter = OutputLineSplitter(limit: 1000)
        #expect(feed(&splitter, "one\ntw") == ["one"])
        #expect(feed(&splitter, "o\r\nthree") == ["two"])
        var rest: [String?] = []
        splitter.finish { rest.append($0) }
        #expect(rest == ["three"])
        #expect(splitter.lastLine == "three")
    }

    @Test func theBudgetCountsNewlinesAndEndsInOneNotice() {
        var splitter = OutputLineSplitter(limit: 10)
        // "abcd\n" costs 5: two fit exactly, the third does not.
        #expect(feed(&splitter, "abcd\nefgh\nijkl\nmnop\n") == ["abcd", "efgh", nil])
        #expect(splitter.truncated)
        #expect(feed(&splitter, "more\n").isEmpty)
    }

    @Test func pastTheBudgetNothingIsDecodedButTheLastLineIsKept() {
        var splitter = OutputLineSplitter(limit: 64 * 1024)
        var emitted = 0
        let flood = [UInt8](repeating: UInt8(ascii: "y"), count: 1) + [UInt8(ascii: "\n")]
        let chunk = Array([[UInt8]](repeating: flood, count: 32 * 1024).joined())
        for _ in 0..<64 { splitter.feed(chunk[...]) { _ in emitted += 1 } }
        splitter.feed(Array("the real error\n".utf8)[...]) { _ in emitted += 1 }
        splitter.finish { _ in emitted += 1 }
        #expect(emitted == 32768 + 1)
        #expect(splitter.logged == 64 * 1024)
        #expect(splitter.lastLine == "the real error")
    }

    @Test func aLineWithoutNewlineIsLoggedInPiecesOfBoundedSize() {
        var splitter = OutputLineSplitter(limit: 100_000)
        let lines = feed(&splitter, String(repeating: "x", count: OutputLineSplitter.maxLine * 2 + 10))
        #expect(lines.map { $0?.count } == [OutputLineSplitter.maxLine, OutputLineSplitter.maxLine])
    }
}

import Testing
@testable import WarrenConfig

@Suite struct INIParserTests {
    func parse(_ text: String) throws -> INIFile { try INIParser.parse(text, file: "t.ini") }

    func problems(_ text: String) -> [String] {
        do {
            _ = try INIParser.parse(text, file: "t.ini")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test func sectionsAndKeysWithBlanksAroundThem() throws {
        let ini = try parse("  [broker]  \n  url   =   amqp://h  \n\n[consumer.orders]\nqueue=orders\n")
        #expect(ini.sections.map(\.name) == ["broker", "consumer.orders"])
        #expect(ini.section("broker")?.entry("url")?.value == "amqp://h")
        #expect(ini.section("broker")?.entry("url")?.line == 2)
        #expect(ini.section("consumer.orders")?.entry("queue")?.value == "orders")
    }

    @Test func fullLineCommentsWithSemicolonOrHash() throws {
        let ini = try parse("; a comment\n# another\n[log]\n   ; indented\nlevel = info\n")
        #expect(ini.section("log")?.entries.count == 1)
    }

    @Test func inlineCommentsNeedABlankBeforeThem() throws {
        let ini = try parse("[broker]\nurl = amqp://h/%2f ; primary\nheartbeat = 30s#not a comment\n")
        #expect(ini.section("broker")?.entry("url")?.value == "amqp://h/%2f")
        #expect(ini.section("broker")?.entry("heartbeat")?.value == "30s#not a comment")
    }

    @Test func quotesProtectCommentCharactersAndAreKept() throws {
        let ini = try parse("[consumer.a]\ncommand = sh -c 'echo a; echo b # c' ; real comment\n")
        #expect(ini.section("consumer.a")?.entry("command")?.value == "sh -c 'echo a; echo b # c'")
    }

    @Test func emptyValuesAreKeptForTheReaderToJudge() throws {
        let ini = try parse("[broker]\ntls_ca =\n")
        #expect(ini.section("broker")?.entry("tls_ca")?.value == "")
    }

    @Test func valuesMayContainEqualsSigns() throws {
        let ini = try parse("[consumer.a]\ncommand = env A=1 prog\n")
        #expect(ini.section("consumer.a")?.entry("command")?.value == "env A=1 prog")
    }

    @Test func windowsLineEndingsAndAByteOrderMarkAreAccepted() throws {
        let ini = try parse("\u{FEFF}[log]\r\nlevel = debug\r\n")
        #expect(ini.section("log")?.entry("level")?.value == "debug")
    }

    @Test func duplicateKeysAreAnErrorNamingBothLines() {
        #expect(problems("[log]\nlevel = info\nlevel = debug\n") == ["t.ini:3: 'level' is set twice in [log] (first at line 2); keep one"])
    }

    @Test func duplicateSectionsAreAnError() {
        #expect(problems("[log]\nlevel = info\n[log]\n") == ["t.ini:3: section [log] appears twice (first at line 1); merge them"])
    }

    @Test func brokenSectionHeaderNamesTheLine() {
        #expect(problems("[broker\nurl = x\n").first == "t.ini:1: section header '[broker' has no closing ']'")
    }

    @Test func keyBeforeAnySectionIsAnError() {
        #expect(problems("url = x\n").first?.hasPrefix("t.ini:1: 'url' comes before any [section]") == true)
    }

    @Test func lineWithoutEqualsIsAnError() {
        #expect(problems("[log]\nlevel info\n") == ["t.ini:2: expected 'key = value' or '[section]', found 'level info'"])
    }

    @Test func everyProblemIsReportedNotOnlyTheFirst() {
        #expect(problems("[log\nnonsense\n[x]\n=1\n").count == 3)
    }

    @Test func aCommentAfterASectionHeaderIsAllowed() throws {
        let ini = try parse("[log] ; logging\nlevel = info\n[broker]\t# where\nurl = amqp://h\n")
        #expect(ini.sections.map(\.name) == ["log", "broker"])
        #expect(ini.section("log")?.entry("level")?.value == "info")
    }

    @Test func textAfterASectionHeaderThatIsNotACommentIsAnError() {
        #expect(problems("[log] level = info\n") == ["t.ini:1: section header '[log] level = info' has text after the closing ']' (a comment there needs a blank before its ';' or '#')"])
    }

    @Test func aNULByteIsAnErrorNamingItsLine() {
        #expect(problems("[log]\nlevel = in\u{0}fo\n") == ["t.ini:2: control character U+0000 in the line; remove it (only tab is allowed)"])
        #expect(problems("[log\u{0}]\n").count == 1)
        #expect(problems("[log]\n;\u{0} in a comment\n") == ["t.ini:2: control character U+0000 in the line; remove it (only tab is allowed)"])
    }

    @Test func otherControlCharactersAreErrorsButTabIsABlank() throws {
        #expect(problems("[log]\nlevel = in\u{1B}[31mfo\n") == ["t.ini:2: control character U+001B in the line; remove it (only tab is allowed)"])
        #expect(try parse("[log]\n\tlevel\t=\tinfo\t\n").section("log")?.entry("level")?.value == "info")
    }

    /// The parser once scanned every earlier key and section for duplicates:
    /// by hand, 10k keys in one section took 11 s and 40k took 110 s
    /// (debug), so 200k would take most of an hour. With hashed lookups 20x
    /// the input costs about 20x the time, and both sizes finish in seconds.
    @Test(arguments: [10_000, 200_000])
    func largeFilesParseInOnePass(lines: Int) throws {
        var text = "[consumer.big]\n"
        text.reserveCapacity(lines * 16)
        for index in 0..<lines { text += "k\(index) = v\(index)\n" }
        let ini = try parse(text)
        #expect(ini.sections.first?.entries.count == lines)
        #expect(ini.sections.first?.entries.last?.line == lines + 1)

        var sections = ""
        for index in 0..<lines / 2 { sections += "[consumer.c\(index)]\nqueue = q\n" }
        sections += "[consumer.c0]\n"
        #expect(problems(sections) == ["t.ini:\(lines + 1): section [consumer.c0] appears twice (first at line 1); merge them"])
    }
}

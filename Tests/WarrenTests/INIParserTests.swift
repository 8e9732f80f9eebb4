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
}

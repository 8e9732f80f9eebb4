import Testing
import Warren

@Suite struct CommandWordsTests {
    @Test func blanksSeparateWords() throws {
        #expect(try CommandWords.split("  /bin/handler --verbose\t-x  ") == ["/bin/handler", "--verbose", "-x"])
    }

    @Test func singleQuotesKeepEverythingLiterally() throws {
        #expect(try CommandWords.split("sh -c 'echo \"$X\"; exit 3'") == ["sh", "-c", "echo \"$X\"; exit 3"])
    }

    @Test func doubleQuotesUnescapeOnlyQuoteAndBackslash() throws {
        #expect(try CommandWords.split(#"say "a \"b\" \\ \n""#) == ["say", #"a "b" \ \n"#])
    }

    @Test func backslashOutsideQuotesEscapesTheNextCharacter() throws {
        #expect(try CommandWords.split(#"a\ b c"#) == ["a b", "c"])
    }

    @Test func adjacentQuotedPartsJoinIntoOneWord() throws {
        #expect(try CommandWords.split(#"--name='a b'"c d"e"#) == ["--name=a bc de"])
    }

    @Test func emptyQuotesMakeAnEmptyWord() throws {
        #expect(try CommandWords.split("prog '' x") == ["prog", "", "x"])
    }

    @Test func unterminatedQuotesAreErrors() {
        #expect(throws: CommandWords.SplitError.self) { try CommandWords.split("sh -c 'echo") }
        #expect(throws: CommandWords.SplitError.self) { try CommandWords.split("sh -c \"echo") }
        #expect(throws: CommandWords.SplitError.self) { try CommandWords.split("trailing\\") }
    }

    @Test func noShellSyntaxIsInterpreted() throws {
        #expect(try CommandWords.split("a | b > c $HOME *") == ["a", "|", "b", ">", "c", "$HOME", "*"])
    }
}

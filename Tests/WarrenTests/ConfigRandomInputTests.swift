import Testing
@testable import WarrenConfig

/// The deterministic half of the config fuzzing (scripts/fuzz.sh is the
/// libFuzzer half): mutations of the seed corpus in Fuzz/corpus, from a fixed
/// seed so a failure is reproducible, must never crash the loader, and every
/// rejection must name a line of the input.
@Suite struct ConfigRandomInputTests {
    /// SplitMix64: a seeded generator, so every run tries the same inputs.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static var corpusDirectory: String {
        "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/") + "/Fuzz/corpus"
    }

    static func seeds() throws -> [[UInt8]] {
        let names = ["minimal.ini", "full.ini", "tls.ini", "comments.ini", "broken.ini"]
        return try names.map { name in
            try ConfigLoader.readFile(corpusDirectory + "/" + name).utf8.map { $0 }
        }
    }

    /// Pieces that matter to the grammar, spliced in at random places.
    static let tokens: [String] = [
        "[", "]", "=", ";", "#", " ; ", " # ", "'", "\"", "\n", "\r\n", "\t", "\u{0}", "\u{FEFF}", "[consumer.", "[broker]\n",
        "url = ", "amqps://", "amqp://u:p/w@h", "@", "%2f", "%", ":", "[::1]", "tls_ca = ", "command = ", "queue = ",
        "prefetch = 0", "timeout = 1h", "exit_ack = 0,", "é", "\u{7F}", "\u{85}", String(repeating: "x", count: 300),
    ]

    static func mutate(_ input: [UInt8], _ random: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        for _ in 0..<Int.random(in: 1...8, using: &random) {
            let at = bytes.isEmpty ? 0 : Int.random(in: 0...bytes.count, using: &random)
            switch Int.random(in: 0..<6, using: &random) {
            case 0 where at < bytes.count: bytes[at] = UInt8.random(in: 0...255, using: &random)
            case 1 where at < bytes.count: bytes.removeSubrange(at..<min(bytes.count, at + Int.random(in: 1...40, using: &random)))
            case 2: bytes.insert(contentsOf: tokens.randomElement(using: &random)!.utf8, at: at)
            case 3 where at < bytes.count:
                let end = min(bytes.count, at + Int.random(in: 1...80, using: &random))
                bytes.insert(contentsOf: bytes[at..<end], at: Int.random(in: 0...bytes.count, using: &random))
            case 4: bytes.insert(UInt8.random(in: 0...127, using: &random), at: at)
            default: bytes.insert(UInt8(ascii: "\n"), at: at)
            }
        }
        return bytes
    }

    /// What the loader must do with any bytes: accept, or reject with
    /// problems that each name this file and a line it has (0 = the file as
    /// a whole), print safely, and never show the password of a URL.
    static func check(_ bytes: [UInt8]) {
        let text: String
        do {
            text = try ConfigLoader.text(from: bytes)
        } catch {
            #expect(!error.message.isEmpty)
            return
        }
        let lineCount = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).count
        do {
            _ = try ConfigLoader.parse(text, file: "fuzz.ini")
        } catch {
            #expect(!error.problems.isEmpty)
            for problem in error.problems {
                #expect(problem.file == "fuzz.ini", "\(problem)")
                #expect((0...lineCount).contains(problem.line), "\(problem) in \(lineCount) lines")
                #expect(!problem.message.isEmpty)
                #expect(!problem.message.unicodeScalars.contains { $0 != "\t" && $0.properties.generalCategory == .control }, "\(problem)")
                #expect(problem.description.hasPrefix("fuzz.ini:\(problem.line): "))
                // A URL still recognisable as one never shows its password
                // (once a mutation breaks the '://', nothing marks it as one).
                #expect(!problem.message.contains("://u:p"), "\(problem)")
            }
        }
    }

    @Test func theSeedCorpusIsLoadedOrRejectedWithLineNumbers() throws {
        let seeds = try Self.seeds()
        #expect(seeds.count == 5)
        for seed in seeds { Self.check(seed) }
        #expect((try? ConfigLoader.parse(ConfigLoader.text(from: seeds[0]), file: "fuzz.ini")) != nil, "minimal.ini must be valid")
    }

    @Test(arguments: [1, 2, 3, 4])
    func randomMutationsNeverCrashAndEveryRejectionNamesALine(seed: UInt64) throws {
        let seeds = try Self.seeds()
        var random = SeededGenerator(state: seed)
        for _ in 0..<5_000 {
            var input = seeds.randomElement(using: &random)!
            for _ in 0..<Int.random(in: 1...3, using: &random) { input = Self.mutate(input, &random) }
            Self.check(input)
        }
    }
}

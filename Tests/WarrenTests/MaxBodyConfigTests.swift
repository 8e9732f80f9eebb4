import Testing
import Warren
@testable import WarrenConfig

/// `max_body`: its size syntax, its default, its errors.
@Suite struct MaxBodyConfigTests: ConfigProblems {
    static let minimal = "[consumer.orders]\nqueue = orders\ncommand = /bin/true\n"

    func load(_ text: String, environment: [String: String] = [:]) throws -> Config {
        try ConfigLoader.parse(text, file: "w.ini", environment: environment)
    }


    @Test func sizesAreBytesOrPowersOf1024() {
        #expect(SizeParser.parse("1048576") == 1 << 20)
        #expect(SizeParser.parse("512KB") == 512 << 10)
        #expect(SizeParser.parse("16MB") == 16 << 20)
        #expect(SizeParser.parse("1GB") == 1 << 30)
        #expect(SizeParser.parse("16mb") == 16 << 20)
        #expect(SizeParser.parse("16MiB") == 16 << 20)
        #expect(SizeParser.parse("100B") == 100)
        #expect(SizeParser.parse("1024GB") == 1 << 40)
        for bad in ["", "MB", "-1MB", "1.5MB", "16 MB", "16M", "1TB", "0x10", "1025GB", "99999999999999999999", "+5", "1e6"] {
            #expect(SizeParser.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func sizesPrintInTheirShortestExactUnit() {
        #expect(SizeParser.format(16 << 20) == "16MB")
        #expect(SizeParser.format(1536 << 10) == "1536KB")
        #expect(SizeParser.format(1 << 30) == "1GB")
        #expect(SizeParser.format(1000) == "1000")
    }

    @Test func maxBodyDefaultsTo16MBAndIsReadFromTheFileOrTheEnvironment() throws {
        #expect(try load(Self.minimal).warren.consumers[0].maxBody == 16 << 20)
        #expect(try load(Self.minimal + "max_body = 1MB\n").warren.consumers[0].maxBody == 1 << 20)
        let overridden = try load(Self.minimal, environment: ["WARREN_CONSUMER_ORDERS_MAX_BODY": "2MB"])
        #expect(overridden.warren.consumers[0].maxBody == 2 << 20)
        #expect(ConfigDescription.render(try load(Self.minimal + "max_body = 512KB\n")).contains("max_body = 512KB\n"))
    }

    @Test func nonsenseMaxBodyNamesItsLine() {
        #expect(problems(Self.minimal + "max_body = lots\n")
                == ["w.ini:4: 'lots' is not a size (use 16MB, 512KB, 1GB or whole bytes; up to 1024GB)"])
        #expect(problems(Self.minimal + "max_body = 1.5MB\n").first?.hasPrefix("w.ini:4: '1.5MB' is not a size") == true)
        #expect(problems(Self.minimal + "max_body = 0\n") == ["w.ini:4: '0' is too small (at least 1 byte)"])
        #expect(problems(Self.minimal + "max_body =\n").first?.contains("empty value") == true)
    }
}

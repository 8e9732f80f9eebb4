import Testing
@testable import Warren

/// When warren reports its own shortage, and how long a message waits.
@Suite struct ResourceShortageTests {
    @Test func aShortageIsReportedOncePerIntervalWithTheRequeuesInBetween() {
        let shortage = ResourceShortage()
        #expect(shortage.failed(now: 0) == .init(report: true, unreported: 0, streak: 0))
        #expect(shortage.failed(now: 100) == .init(report: false, unreported: 1, streak: 1))
        #expect(shortage.failed(now: 200) == .init(report: false, unreported: 2, streak: 2))
        #expect(shortage.failed(now: ResourceShortage.reportIntervalMs + 1) == .init(report: true, unreported: 2, streak: 0))
        #expect(shortage.failed(now: ResourceShortage.reportIntervalMs + 2) == .init(report: false, unreported: 1, streak: 1))
    }
}

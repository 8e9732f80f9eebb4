import AMQP
import Foundation
import Glibc
import Testing

/// Messages built to hurt: ids that forge log records, handlers that print
/// terminal escapes, bodies larger than anyone should hold. warren logs them
/// as one record per line and keeps every message accounted for.
@Suite(.serialized) struct HostileMessageTests {
    /// Under journald each line is a record and its `<N>` prefix its
    /// priority: a newline in a message id must not start a new record.
    @Test(arguments: ["text", "json"])
    func controlCharactersFromAMessageOrAHandlerNeverStartANewJournalRecord(format: String) async throws {
        try await withTestQueue { client, queue in
            let forged = "abc\n<2>forged_critical"
            try await client.publish(ids: [forged], to: queue)
            // stdout: CR, ESC, DEL, C1 NEL and U+2028; stderr: NUL, BEL, VT, FF; then the id itself; then dead-letter.
            let command = #"sh -c 'printf "out\r<2>cr\033[31mesc\177del\302\205nel\342\200\250ls\n"; printf "err\000nul\007bel\013vt\014ff\n" >&2; echo "id=$WARREN_MESSAGE_ID"; exit 65'"#
            let warren = try WarrenBinary(
                config: try warrenConfig(queue: queue, command: command, concurrency: 1),
                environment: ["JOURNAL_STREAM": "8:12345", "WARREN_LOG_FORMAT": format])
            try await eventually("the message was dead-lettered") { try await client.count(queue + ".dead") == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let log = warren.log
            let lines = log.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            #expect(lines.count > 3)
            for line in lines {
                let prefix = line.prefix(3)
                #expect(prefix.count == 3 && prefix.first == "<" && prefix.last == ">" && ("0"..."7").contains(prefix.dropFirst().first!),
                        "a line without its priority prefix: \(line.debugDescription)")
                #expect(!line.hasPrefix("<2>"), "a forged critical record: \(line.debugDescription)")
                #expect(!line.unicodeScalars.contains { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) || $0 == "\u{2028}" },
                        "a raw control character: \(line.debugDescription)")
                if format == "json" {
                    let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(3).utf8))
                    #expect(object is [String: Any], "not one JSON object: \(line.debugDescription)")
                }
            }
            // The escapes are visible, so nothing is hidden either.
            #expect(log.contains(#"abc\n<2>forged_critical"#), "\(log)")
            #expect(log.contains(#"\u001b[31mesc"#) || log.contains(#"\x1b[31mesc"#), "\(log)")
            #expect(log.contains("message dead-lettered"))
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == [forged])
            #expect(try await client.count(queue) == 0)
        }
    }

    /// `max_body`: a larger message goes to the dead-letter queue with its
    /// reason and is never handed to a handler; smaller ones are handled.
    @Test func aBodyOverMaxBodyIsDeadLetteredWithItsReasonAndNeverHandled() async throws {
        try await withTestQueue { client, queue in
            let limit = 1 << 20
            let small = (1...6).map { "small-\($0)" }
            let large = (1...3).map { "large-\($0)" }
            // Interleaved, so a large one sits between small ones in the prefetch window.
            for (index, id) in small.enumerated() {
                try await client.publish(ids: [id], to: queue)
                if index < large.count {
                    try await client.connection.publish([UInt8](repeating: UInt8(ascii: "x"), count: 2 * limit), routingKey: queue, on: 1,
                                                        properties: MessageProperties(deliveryMode: 2, messageId: large[index]))
                }
            }
            let exact = "exactly-the-limit"
            try await client.connection.publish([UInt8](repeating: UInt8(ascii: "y"), count: limit), routingKey: queue, on: 1,
                                                properties: MessageProperties(deliveryMode: 2, messageId: exact))
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID $(wc -c)" >> {dir}/handled'"#,
                prefetch: 16, concurrency: 2, extra: "max_body = 1MB"))
            try await eventually("every message settled", timeout: .seconds(30)) {
                let dead = try await client.count(queue + ".dead")
                return warren.lines("handled").count == small.count + 1 && dead == large.count
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")

            let handled = Dictionary(uniqueKeysWithValues: warren.lines("handled").map { line -> (String, Int) in
                let parts = line.split(separator: " ")
                return (String(parts[0]), Int(parts[1]) ?? -1)
            })
            #expect(Set(handled.keys) == Set(small + [exact]), "handled: \(handled.keys.sorted())")
            #expect(handled[exact] == limit, "a body of exactly max_body is handled whole")
            let dead = try await client.drain(queue + ".dead")
            #expect(Set(dead.map(\.id)) == Set(large))
            for message in dead {
                #expect(message.headers?["x-warren-reason"]?.stringValue == "body too large")
                #expect(message.headers?["x-warren-body-size"]?.integerValue == Int64(2 * limit))
                #expect(message.headers?["x-warren-consumer"]?.stringValue == "test")
            }
            #expect(try await client.count(queue) == 0, "nothing left behind")
            #expect(warren.log.contains("body too large"))
        }
    }

    @Test(arguments: ["lots", "1.5MB", "0", "-1MB", "16 MB"])
    func aNonsenseMaxBodyStopsWarrenWith78AndNamesItsLine(value: String) async throws {
        let text = "[consumer.a]\nqueue = q\ncommand = true\nmax_body = \(value)\n"
        let warren = try WarrenBinary(config: text)
        #expect(await warren.waitForExit(timeout: .seconds(20)) == 78)
        #expect(warren.log.contains("\(warren.configPath):4: '\(value)' is"), "\(warren.log)")
    }
}

import AMQP
import Foundation
import Glibc
import Logging
import Testing

/// The whole message reaches a command handler: every property and every
/// header type through the real broker, in the environment and in the
/// envelope (`input = envelope`), read by a Python handler that knows the
/// values only from this file; and messages built to break either arrive
/// handled, with the daemon unharmed.
@Suite(.serialized) struct WholeMessageTests {
    static let body = "{\"order\":7}\n\ttail é ✓"

    /// Every basic property, and a header of every AMQP field type the broker carries.
    static func everything(id: String) -> MessageProperties {
        MessageProperties(
            contentType: "application/json", contentEncoding: "identity",
            headers: FieldTable([
                ("t-bool", .bool(true)), ("t-i8", .int8(-8)), ("t-u8", .uint8(200)), ("t-i16", .int16(-1600)),
                ("t-u16", .uint16(60000)), ("t-i32", .int32(-2_000_000_000)), ("t-u32", .uint32(4_000_000_000)),
                ("t-i64", .int64(-9_000_000_000_000)), ("t-f32", .float(1.5)), ("t-f64", .double(-0.125)),
                ("t-decimal", .decimal(scale: 2, value: 12345)), ("t-string", .string("acme é")),
                ("t-bytes", .bytes([0, 1, 2, 255])), ("t-timestamp", .timestamp(1_700_000_000)),
                ("t-table", .table(FieldTable([("a", .int32(1)), ("b", .array([.string("x"), .bool(false)]))]))),
                ("t-array", .array([.int32(1), .string("two"), .table(FieldTable([("three", .int8(3))]))])),
                ("t-void", .void), ("t-control", .string("tab\there\nnewline\u{1}soh")),
                ("t-latin1", .string([0x63, 0x61, 0x66, 0xE9])),
                ("traceparent", .string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")),
            ]),
            deliveryMode: 2, priority: 7, correlationId: "corr-é-1", replyTo: "replies.here", expiration: "3600000",
            messageId: id, timestamp: 1_700_000_000, type: "order.created", userId: "guest", appId: "shop")
    }

    /// The handler: checks every value it was given against the values
    /// written here, writes `ok` or what differed, and exits 0 only if all matched.
    static let checker = #"""
        import base64, json, os, sys, time

        QUEUE = "{queue}"
        SOURCE = QUEUE + ".reject-me"
        BROKER_URL = "{url}".encode()
        BODY = "{\"order\":7}\n\ttail é ✓"
        raw = sys.stdin.buffer.read()
        env = os.environb
        problems = []

        def check(what, got, want):
            if got != want or type(got) is not type(want):
                problems.append(f"{what}: got {got!r}, want {want!r}")

        check("one line", raw.count(b"\n"), 1)
        check("ends with a newline", raw.endswith(b"\n"), True)
        e = json.loads(raw, parse_constant=lambda c: problems.append(f"non-JSON constant {c}"))
        p = e["properties"]
        mid = p["message_id"]
        dead = mid == "whole-dead"
        check("keys", list(e), ["id", "queue", "consumer", "exchange", "routing_key", "redelivered", "attempt", "body", "properties"])
        check("property keys", list(p), ["message_id", "correlation_id", "reply_to", "content_type", "content_encoding",
              "delivery_mode", "priority", "expiration", "timestamp", "type", "user_id", "app_id", "headers"])
        check("id is digits", e["id"].isdigit(), True)
        check("queue", e["queue"], QUEUE)
        check("consumer", e["consumer"], "test")
        check("exchange", e["exchange"], "")
        check("routing_key", e["routing_key"], QUEUE)
        check("redelivered", e["redelivered"], False)
        check("attempt", e["attempt"], 1)
        check("body", e["body"], BODY)
        expected = {"correlation_id": "corr-é-1", "reply_to": "replies.here", "content_type": "application/json",
                    "content_encoding": "identity", "delivery_mode": 2, "priority": 7,
                    # The broker drops the expiration of a message it dead-letters (and keeps it in x-death).
                    "expiration": None if dead else "3600000",
                    "timestamp": 1700000000, "type": "order.created", "user_id": "guest", "app_id": "shop"}
        for key, want in expected.items():
            check(f"properties.{key}", p[key], want)
        headers = dict(p["headers"])
        want_headers = {
            "t-bool": True, "t-i8": -8, "t-u8": 200, "t-i16": -1600, "t-u16": 60000, "t-i32": -2000000000,
            "t-u32": 4000000000, "t-i64": -9000000000000, "t-f32": 1.5, "t-f64": -0.125, "t-decimal": 123.45,
            "t-string": "acme é", "t-bytes": base64.b64encode(bytes([0, 1, 2, 255])).decode(), "t-timestamp": 1700000000,
            "t-table": {"a": 1, "b": ["x", False]}, "t-array": [1, "two", {"three": 3}], "t-void": None,
            "t-control": "tab\there\nnewline\x01soh", "t-latin1": "caf\ufffd",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
        want_env = {
            b"WARREN_QUEUE": QUEUE.encode(), b"WARREN_CONSUMER": b"test", b"WARREN_EXCHANGE": b"",
            b"WARREN_ROUTING_KEY": QUEUE.encode(), b"WARREN_MESSAGE_ID": mid.encode(),
            b"WARREN_CORRELATION_ID": "corr-é-1".encode(), b"WARREN_REPLY_TO": b"replies.here",
            b"WARREN_CONTENT_TYPE": b"application/json", b"WARREN_CONTENT_ENCODING": b"identity",
            b"WARREN_DELIVERY_MODE": b"2", b"WARREN_PRIORITY": b"7", b"WARREN_EXPIRATION": b"" if dead else b"3600000",
            b"WARREN_TIMESTAMP": b"1700000000", b"WARREN_TYPE": b"order.created", b"WARREN_USER_ID": b"guest",
            b"WARREN_APP_ID": b"shop", b"WARREN_REDELIVERED": b"0", b"WARREN_ATTEMPT": b"1",
            b"WARREN_HEADER_T_BOOL": b"true", b"WARREN_HEADER_T_I8": b"-8", b"WARREN_HEADER_T_U8": b"200",
            b"WARREN_HEADER_T_I16": b"-1600", b"WARREN_HEADER_T_U16": b"60000", b"WARREN_HEADER_T_I32": b"-2000000000",
            b"WARREN_HEADER_T_U32": b"4000000000", b"WARREN_HEADER_T_I64": b"-9000000000000",
            b"WARREN_HEADER_T_F32": b"1.5", b"WARREN_HEADER_T_F64": b"-0.125", b"WARREN_HEADER_T_DECIMAL": b"123.45",
            b"WARREN_HEADER_T_STRING": "acme é".encode(), b"WARREN_HEADER_T_BYTES": b'"AAEC/w=="',
            b"WARREN_HEADER_T_TIMESTAMP": b"1700000000", b"WARREN_HEADER_T_TABLE": b'{"a":1,"b":["x",false]}',
            b"WARREN_HEADER_T_ARRAY": b'[1,"two",{"three":3}]', b"WARREN_HEADER_T_VOID": b"null",
            b"WARREN_HEADER_T_CONTROL": b"tab\there\nnewline\x01soh", b"WARREN_HEADER_T_LATIN1": "caf\ufffd".encode(),
            b"WARREN_HEADER_TRACEPARENT": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"TRACEPARENT": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        }
        if dead:
            # A real x-death, as the broker wrote it when a consumer of SOURCE rejected the message.
            deaths = headers.pop("x-death", None)
            check("x-death is a list of one table", isinstance(deaths, list) and len(deaths) == 1, True)
            death = dict(deaths[0]) if deaths else {}
            when = death.pop("time", None)
            check("x-death time is a number of seconds near now", isinstance(when, int) and abs(when - time.time()) < 3600, True)
            check("x-death", death, {"count": 1, "reason": "rejected", "queue": SOURCE, "exchange": "",
                                     "routing-keys": [SOURCE], "original-expiration": "3600000"})
            check("x-death in the environment", json.loads(env.get(b"WARREN_HEADER_X_DEATH", b"null")), deaths)
            for name, want in [("x-first-death-exchange", ""), ("x-first-death-queue", SOURCE),
                               ("x-first-death-reason", "rejected")]:
                check(name, headers.pop(name, None), want)
                want_env[b"WARREN_HEADER_" + name.upper().replace("-", "_").encode()] = want.encode()
        check("header names", sorted(headers), sorted(want_headers))
        for name, want in want_headers.items():
            check(f"header {name}", headers.get(name), want)
        for name, want in want_env.items():
            check(f"${name.decode()}", env.get(name), want)
        for name, value in env.items():
            if BROKER_URL in value:
                problems.append(f"${name.decode()} holds the broker URL")
        with open(f"{dir}/result-{mid}", "w") as out:
            out.write("\n".join(problems) if problems else "ok")
        sys.exit(65 if problems else 0)
        """#

    /// Takes one message off `queue` and rejects it, so the broker dead-letters it.
    static func rejectOne(from queue: String) async throws {
        let connection = try await TestBroker.connect()
        try await connection.openChannel(9, prefetch: 1)
        let tag = try await connection.consume(queue: queue, on: 9)
        for await event in connection.events {
            guard case .delivery(let delivery) = event else { continue }
            connection.nack(delivery, requeue: false)
            break
        }
        try await connection.cancel(consumerTag: tag, on: 9)
        await connection.close()
    }

    static func script(_ text: String, queue: String, directory: String) -> String {
        text.replacingOccurrences(of: "{queue}", with: queue).replacingOccurrences(of: "{url}", with: TestBroker.url)
            .replacingOccurrences(of: "{dir}", with: directory)
    }

    @Test func everyPropertyAndEveryHeaderTypeReachTheHandlerInItsEnvironmentAndItsEnvelope() async throws {
        try await withTestQueue { client, queue in
            let source = queue + ".reject-me"
            try await client.connection.declareQueue(source, on: 1, arguments: FieldTable([
                ("x-dead-letter-exchange", .string("")), ("x-dead-letter-routing-key", .string(queue)),
            ]))
            try await client.connection.publish(Array(Self.body.utf8), routingKey: queue, on: 1,
                                                properties: Self.everything(id: "whole-direct"))
            try await client.connection.publish(Array(Self.body.utf8), routingKey: source, on: 1,
                                                properties: Self.everything(id: "whole-dead"))
            try await Self.rejectOne(from: source)
            try await eventually("the broker dead-lettered the rejected message") { try await client.count(queue) == 2 }
            try await client.connection.deleteQueue(source, on: 1)

            let directory = try WarrenBinary.makeDirectory()
            try Self.script(Self.checker, queue: queue, directory: directory)
                .write(toFile: directory + "/check.py", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "/usr/bin/python3 \(directory)/check.py", concurrency: 1, extra: "input = envelope"))
            let results = ["whole-direct", "whole-dead"].map { directory + "/result-\($0)" }
            try await eventually("both messages handled") {
                let settled = try await client.count(queue) == 0
                return settled && results.allSatisfy { FileManager.default.fileExists(atPath: $0) }
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            for result in results {
                let text = try String(contentsOfFile: result, encoding: .utf8)
                #expect(text == "ok", "\(result):\n\(text)")
            }
            #expect(try await client.count(queue + ".dead") == 0, "a check failed, so the handler dead-lettered it")
        }
    }

    /// What the broker delivers is written exactly: the line on stdin is
    /// these bytes, to the last one (the first delivery of a fresh warren has id 1).
    @Test func theEnvelopeOnStdinIsExactlyTheExpectedLine() async throws {
        try await withTestQueue { client, queue in
            let properties = MessageProperties(
                contentType: "text/plain",
                headers: FieldTable([
                    ("x-death-like", .array([.table(FieldTable([("count", .int64(2)), ("queue", .string("orders"))]))])),
                    ("tenant", .string("acme")), ("at", .timestamp(1_700_000_000)), ("price", .decimal(scale: 3, value: 5)),
                    ("raw", .bytes([0xDE, 0xAD])), ("quote\"key", .string("line\nbreak\u{7}")),
                ]),
                deliveryMode: 1, correlationId: "c-9", messageId: "exact-1", appId: "shop")
            try await client.connection.publish(Array("he said \"hi\"\r\n\u{0}".utf8), routingKey: queue, on: 1,
                                                properties: properties)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "sh -c 'cat > {dir}/envelope'", concurrency: 1, extra: "input = envelope"))
            try await eventually("the message was handled") {
                try await client.count(queue) == 0 && !warren.lines("envelope").isEmpty
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            let written = try #require(FileManager.default.contents(atPath: warren.file("envelope")))
            let expected = #"{"id":"1","queue":"\#(queue)","consumer":"test","exchange":"","routing_key":"\#(queue)","#
                + #""redelivered":false,"attempt":1,"body":"he said \"hi\"\r\n\u0000","properties":{"message_id":"exact-1","#
                + #""correlation_id":"c-9","reply_to":null,"content_type":"text/plain","content_encoding":null,"#
                + #""delivery_mode":1,"priority":null,"expiration":null,"timestamp":null,"type":null,"user_id":null,"#
                + #""app_id":"shop","headers":{"x-death-like":[{"count":2,"queue":"orders"}],"tenant":"acme","#
                + #""at":1700000000,"price":0.005,"raw":"3q0=","quote\"key":"line\nbreak\u0007"}}}"# + "\n"
            #expect(String(decoding: written, as: UTF8.self) == expected)
            #expect(Array(written) == Array(expected.utf8))
        }
    }

    /// The handler for the hostile messages: checks that each arrived whole
    /// in the envelope, and that the environment held what fit.
    static let hostileChecker = #"""
        import base64, json, os, sys

        raw = sys.stdin.buffer.read()
        e = json.loads(raw)
        env = os.environb
        mid = e["properties"]["message_id"]
        headers = e["properties"]["headers"] or {}
        problems = []
        if raw.count(b"\n") != 1:
            problems.append("not one line")
        if mid == "not-utf8":
            if "body" in e:
                problems.append("a body that is not UTF-8 came as text")
            if base64.b64decode(e.get("body_base64", "")) != bytes([0xFF, 0xFE, 0x00, 0x41, 0xC3]):
                problems.append(f"body_base64 is {e.get('body_base64')!r}")
        elif mid == "many-headers":
            if len(headers) != 10000 or any(headers.get(f"h{i}") is not True for i in range(10000)):
                problems.append(f"the envelope holds {len(headers)} headers")
            passed = [name for name in env if name.startswith(b"WARREN_HEADER_H")]
            if not 0 < len(passed) < 10000 or env.get(b"WARREN_HEADER_H0") != b"true":
                problems.append(f"{len(passed)} header variables")
        elif mid == "big-header":
            if headers.get("big") != "x" * (1 << 20):
                problems.append("the megabyte header is not whole in the envelope")
            if b"WARREN_HEADER_BIG" in env:
                problems.append("the megabyte header is in the environment")
            if env.get(b"WARREN_HEADER_SMALL") != b"kept":
                problems.append("the small header beside it is missing")
        else:
            problems.append(f"unexpected message {mid}")
        with open(f"{dir}/result-{mid}", "w") as out:
            out.write("\n".join(problems) if problems else "ok")
        sys.exit(65 if problems else 0)
        """#

    /// A body that is not UTF-8, 10,000 headers, a megabyte header: each is
    /// handled and acked, the environment stays within its budget (so the
    /// spawn never fails with E2BIG), what was left out is named once in
    /// the log, and warren goes on to a clean stop.
    @Test func hostileMessagesAreHandledWholeAndTheDaemonGoesOn() async throws {
        try await withTestQueue { client, queue in
            // A connection allowed frames big enough for a megabyte of headers
            // (the test broker allows 4 MiB; a message's headers travel in one frame).
            var options = try TestBroker.options
            options.frameMax = 4 << 20
            let publisher = try await AMQPConnection.connect(options, logger: Logger(label: "test"))
            try await publisher.openChannel(1)
            try await publisher.enableConfirms(on: 1)
            try await publisher.publish([0xFF, 0xFE, 0x00, 0x41, 0xC3], routingKey: queue, on: 1,
                                        properties: MessageProperties(messageId: "not-utf8"))
            let many = FieldTable((0..<10_000).map { (key: "h\($0)", value: FieldValue.bool(true)) })
            try await publisher.publish(Array("many".utf8), routingKey: queue, on: 1,
                                        properties: MessageProperties(headers: many, messageId: "many-headers"))
            let big = FieldTable([("big", .string(String(repeating: "x", count: 1 << 20))), ("small", .string("kept"))])
            try await publisher.publish(Array("big".utf8), routingKey: queue, on: 1,
                                        properties: MessageProperties(headers: big, messageId: "big-header"))
            await publisher.close()

            let directory = try WarrenBinary.makeDirectory()
            try Self.script(Self.hostileChecker, queue: queue, directory: directory)
                .write(toFile: directory + "/check.py", atomically: true, encoding: .utf8)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: "/usr/bin/python3 \(directory)/check.py", concurrency: 1, extra: "input = envelope"))
            let ids = ["not-utf8", "many-headers", "big-header"]
            try await eventually("every message handled") {
                let settled = try await client.count(queue) == 0
                return settled && ids.allSatisfy { FileManager.default.fileExists(atPath: directory + "/result-\($0)") }
            }
            #expect(!isGone(warren.pid), "warren is still running")
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            for id in ids {
                let text = try String(contentsOfFile: directory + "/result-\(id)", encoding: .utf8)
                #expect(text == "ok", "\(id):\n\(text)")
            }
            #expect(try await client.count(queue + ".dead") == 0)
            let notes = warren.log.split(separator: "\n").filter { $0.contains("headers left out of the handler's environment") }
            #expect(notes.count == 2, "one note for each message with too much in its headers:\n\(warren.log)")
            #expect(notes.contains { $0.contains("message_id=big-header") && $0.contains("headers=big ") }, "\(notes)")
            #expect(notes.contains { $0.contains("message_id=many-headers") && $0.contains(" more\"") }, "\(notes)")
            #expect(!warren.log.contains("reconnecting"), "warren lost its connection:\n\(warren.log)")
        }
    }

    /// RabbitMQ refuses a publish whose `user_id` is not the publishing
    /// user. A message another user published must still be retried and
    /// dead-lettered (not requeued and handled again forever); its copies
    /// carry the `user_id` in `x-warren-user-id`.
    @Test func aMessageFromAnotherUserIsRetriedAndDeadLetteredWithItsUserIDInAHeader() async throws {
        try await withTestQueue { client, queue in
            let user = "producer-\(UInt32.random(in: 0...UInt32.max))"
            try FaultTests.rabbitmqctl("add_user", user, "pw")
            try FaultTests.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
            defer { try? FaultTests.rabbitmqctl("delete_user", user) }
            var options = try TestBroker.options
            options.user = user
            options.password = "pw"
            let producer = try await AMQPConnection.connect(options, logger: Logger(label: "test"))
            try await producer.openChannel(1)
            try await producer.enableConfirms(on: 1)
            try await producer.publish(Array("hi".utf8), routingKey: queue, on: 1,
                                       properties: MessageProperties(messageId: "from-\(user)", userId: user))
            await producer.close()

            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'echo "$WARREN_ATTEMPT $WARREN_USER_ID/$WARREN_HEADER_X_WARREN_USER_ID" >> {dir}/seen; [ "$WARREN_ATTEMPT" -ge 2 ] && exit 65; exit 75'"#,
                concurrency: 1, extra: "max_attempts = 5\nretry_delay = 100ms\ninput = envelope"))
            try await eventually("the message was dead-lettered on its second attempt") {
                try await client.count(queue + ".dead") == 1
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(warren.lines("seen") == ["1 \(user)/", "2 /\(user)"], "\(warren.log)")
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.first?.headers?["x-warren-user-id"]?.stringValue == user)
            #expect(!warren.log.contains("refused"), "\(warren.log)")
        }
    }
}

import AMQP
import Testing
@testable import Warren

@Suite struct HandlerContractTests {
    func message(headers: FieldTable? = nil, redelivered: Bool = false) -> Message {
        let properties = MessageProperties(contentType: "application/json", headers: headers, correlationId: "c-1", messageId: "m-1")
        let delivery = Delivery(channel: 1, deliveryTag: 7, consumerTag: "t", exchange: "ex", routingKey: "rk",
                                redelivered: redelivered, properties: properties, body: Array("{}".utf8))
        return Message(delivery: delivery, consumer: "orders", queue: "orders", attempt: Message.attempt(of: delivery))
    }

    @Test func environmentDescribesTheMessage() {
        let env = HandlerEnvironment.forMessage(message(headers: FieldTable([
            ("x-tenant", .string("acme")), ("traceparent", .string("00-abc-def-01")), ("count", .int32(3)),
        ]), redelivered: true)).variables
        for expected in ["WARREN_QUEUE=orders", "WARREN_EXCHANGE=ex", "WARREN_ROUTING_KEY=rk", "WARREN_MESSAGE_ID=m-1",
                         "WARREN_CORRELATION_ID=c-1", "WARREN_CONTENT_TYPE=application/json", "WARREN_REDELIVERED=1",
                         "WARREN_ATTEMPT=1", "WARREN_HEADER_X_TENANT=acme", "TRACEPARENT=00-abc-def-01"] {
            #expect(env.contains(expected), "\(expected)")
        }
        // Every header becomes a variable; a number as its JSON.
        #expect(env.contains("WARREN_HEADER_COUNT=3"))
    }

    @Test func headerNamesAreUpperCasedWithUnderscores() {
        #expect(HandlerEnvironment.headerName("x-trace.id") == "X_TRACE_ID")
        #expect(HandlerEnvironment.headerName("Ünïcode") == "_N_CODE")
    }

    @Test func attemptComesFromWarrensHeaderThenTheBrokersDeliveryCount() {
        #expect(message().attempt == 1)
        #expect(message(headers: FieldTable([("x-warren-attempt", .int32(3))])).attempt == 3)
        #expect(message(headers: FieldTable([("x-delivery-count", .int64(2))])).attempt == 3)
    }

    @Test(arguments: [FieldValue.string("3"), .int64(-1), .int64(0), .uint64(UInt64.max), .int64(Int64.max), .bool(true)])
    func malformedAttemptHeadersCountAsAFirstAttempt(value: FieldValue) {
        #expect(message(headers: FieldTable([("x-warren-attempt", value)])).attempt == 1)
    }

    func handler() -> ExecHandler {
        ExecHandler(argv: ["true"], killAfter: .seconds(1), exitAck: [0], exitRetry: [75], exitDeadLetter: [65],
                    supervisor: try! ProcessSupervisor(), logger: .init(label: "test"))
    }

    @Test func exitCodesMapToOutcomes() {
        let h = handler()
        #expect(h.outcome(of: .init(status: .exited(0), lastErrorLine: nil, terminated: false)) == .ack)
        #expect(h.outcome(of: .init(status: .exited(75), lastErrorLine: nil, terminated: false))
                == .retry(Failure(reason: "exit code 75", exitCode: 75)))
        #expect(h.outcome(of: .init(status: .exited(65), lastErrorLine: "bad json", terminated: false))
                == .deadLetter(Failure(reason: "exit code 65", exitCode: 65, lastErrorLine: "bad json")))
        #expect(h.outcome(of: .init(status: .exited(3), lastErrorLine: nil, terminated: false))
                == .retry(Failure(reason: "exit code 3", exitCode: 3)))
    }

    @Test func deathBySignalRetries() {
        if case .retry(let failure) = handler().outcome(of: .init(status: .signaled(9), lastErrorLine: nil, terminated: false)) {
            #expect(failure.signal == 9 && !failure.timedOut)
        } else {
            Issue.record("death by signal must retry")
        }
    }

    @Test func aWatchdogTerminationIsNeverAnAckEvenWithExitZero() {
        if case .retry(let failure) = handler().outcome(of: .init(status: .exited(0), lastErrorLine: nil, terminated: true)) {
            #expect(failure.timedOut)
        } else {
            Issue.record("a terminated handler must not be acked")
        }
    }
}

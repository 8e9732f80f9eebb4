import Testing
@testable import Warren

/// What a handler inherits from warren's environment: everything except
/// warren's own configuration and systemd's messages to warren.
@Suite struct HandlerEnvironmentTests {
    static let warrensOwn = [
        "WARREN_BROKER_URL=amqp://u:secret@h/%2f", "WARREN_BROKER_PASSWORD_FILE=/run/credentials/x",
        "WARREN_CONSUMER_ORDERS_TIMEOUT=45s", "WARREN_LOG_LEVEL=debug", "WARREN_ANYTHING=1", "WARREN_=x",
        // Stale per-message names in warren's own environment: set fresh per message, never inherited.
        "WARREN_QUEUE=stale", "WARREN_MESSAGE_ID=stale", "WARREN_HEADER_X=stale", "TRACEPARENT=00-stale",
        "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1",
        "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b", "CREDENTIALS_DIRECTORY=/run/credentials/warren.service",
        "JOURNAL_STREAM=8:1234",
    ]
    static let everyoneElse = [
        "PATH=/usr/bin:/bin", "HOME=/var/lib/warren", "LANG=C.UTF-8", "TZ=UTC", "INVOCATION_ID=abc",
        "WARRENTY=kept", "MY_WARREN_URL=kept", "warren_lower=kept", "NOT_AN_ASSIGNMENT", "=odd",
    ]

    @Test func warrensConfigurationAndSystemdsVariablesAreNotInherited() {
        let kept = HandlerEnvironment.inheritable(Self.warrensOwn + Self.everyoneElse)
        #expect(kept == Self.everyoneElse)
    }

    @Test func theOrderAndTheRestOfTheEnvironmentAreKept() {
        let mixed = ["A=1", "WARREN_BROKER_URL=x", "B=2", "NOTIFY_SOCKET=y", "C=3"]
        #expect(HandlerEnvironment.inheritable(mixed) == ["A=1", "B=2", "C=3"])
    }

    @Test func perMessageVariablesAreStillSetForEachMessage() {
        let env = HandlerEnvironment.forMessage(HandlerContractTests().message()).variables
        for expected in ["WARREN_QUEUE=orders", "WARREN_MESSAGE_ID=m-1", "WARREN_ATTEMPT=1", "WARREN_REDELIVERED=0"] {
            #expect(env.contains(expected), "\(expected)")
        }
    }
}

import AMQP
import Logging
import Testing
@testable import Warren

/// The wait for a copy's confirm is bounded: by `Publisher.confirmTimeout`,
/// and by the shutdown switch (grace period over), whichever comes first.
@Suite(.serialized) struct PublisherTests {
    @Test func aCopyWithoutAConfirmIsRefusedAfterTheTimeoutOrAtOnceWhenTheShutdownSwitchIsThrown() async throws {
        try await withTestQueue { _, queue in
            let proxy = try TestProxy(targetPort: UInt16(try TestBroker.options.port))
            defer { proxy.stop() }
            let options = try ConnectionOptions(url: "amqp://guest:guest@127.0.0.1:\(proxy.port)/%2f")
            let publisher = Publisher(broker: BrokerSettings(endpoints: [options]), logger: Logger(label: "test"))
            let shutdown = TerminationSignal()
            func copy(_ id: String) async -> AMQPError? {
                await publisher.publishCopy(MessageBody(Array(id.utf8)), to: queue, properties: MessageProperties(messageId: id),
                                            shutdown: shutdown)
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await publisher.run() }
                #expect(await copy("confirmed") == nil)
                // Bytes stop flowing both ways: no confirm will come.
                proxy.mode = .blackHole
                let clock = ContinuousClock()
                var start = clock.now
                let late = await copy("late")
                let waited = clock.now - start
                #expect(late?.reason.hasPrefix("no confirm from the broker within") == true, "\(String(describing: late))")
                #expect(waited >= Publisher.confirmTimeout && waited < Publisher.confirmTimeout + .seconds(2), "\(waited)")
                start = clock.now
                async let stopping = copy("stopping")
                try? await Task.sleep(for: .milliseconds(300))
                shutdown.fire()
                let refused = await stopping
                #expect(refused?.reason.contains("warren is stopping") == true, "\(String(describing: refused))")
                #expect(clock.now - start < .seconds(2))
                await publisher.stop()
            }
        }
    }
}

import Foundation
import Glibc
import Testing

/// The `warren` binary, a real broker, real signals. Each test accounts for
/// every message it published: finished and acked, or still in the queue.
@Suite(.serialized) struct EndToEndTests {
    @Test func drainUnderLoadLosesNothingAndFinishesNothingTwice() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...1000).map { "id-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'sleep 0.02; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 32, concurrency: 8))
            try await eventually("work in flight") { warren.lines("finished").count >= 150 }
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGTERM)
            let code = await warren.waitForExit()
            let stopTime = clock.now - signalled
            #expect(code == 0, "\(warren.log)")
            #expect(stopTime < .seconds(5), "the drain took \(stopTime); handlers take 20 ms, grace is 30 s")

            let finished = warren.lines("finished")
            let left = try await client.drain(queue).map(\.id)
            #expect(finished.count == Set(finished).count, "a message was finished twice")
            #expect(Set(finished).isDisjoint(with: left), "a finished message was not acked")
            #expect(Set(finished).union(left) == Set(ids), "a message was lost")
            #expect(left.count == Set(left).count)
            #expect(finished.count < ids.count, "the stop came before the queue was empty")
            #expect(warren.log.contains("stop requested: draining"))
        }
    }

    @Test func aHungHandlerAtStopIsKilledWithItsChildrenAndItsMessageRequeued() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["hung"], to: queue)
            // Ignores SIGTERM (and so does its child); only SIGKILL ends them.
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'trap "" TERM; echo $$ > {dir}/pids; sleep 300 & echo $! >> {dir}/pids; wait; wait'"#,
                grace: "2s", killAfter: "2s"))
            try await eventually("the handler and its child started") { warren.lines("pids").count == 2 }
            let pids = warren.lines("pids").compactMap { pid_t($0) }
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGTERM)
            let code = await warren.waitForExit()
            let stopTime = clock.now - signalled
            #expect(code == 0, "\(warren.log)")
            #expect(stopTime >= .milliseconds(3500), "exited after \(stopTime), before grace + kill_after")
            #expect(stopTime < .seconds(9), "exited after \(stopTime), well past grace + kill_after")
            for pid in pids { #expect(isGone(pid), "process \(pid) of the handler's group survived") }
            let left = try await client.drain(queue)
            #expect(left.map(\.id) == ["hung"])
            #expect(left.first?.redelivered == true)
        }
    }

    @Test func aSecondSignalSkipsTheRestOfTheGracePeriod() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...5).map { "slow-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'trap "" TERM; echo "$WARREN_MESSAGE_ID" >> {dir}/started; sleep 300'"#,
                prefetch: 5, concurrency: 2, grace: "120s", killAfter: "2s"))
            try await eventually("two handlers running") { warren.lines("started").count == 2 }
            warren.signal(SIGTERM)
            try await Task.sleep(for: .seconds(1))
            let clock = ContinuousClock()
            let second = clock.now
            warren.signal(SIGTERM)
            let code = await warren.waitForExit()
            let stopTime = clock.now - second
            #expect(code == 0, "\(warren.log)")
            #expect(stopTime >= .milliseconds(1500) && stopTime < .seconds(6), "exited \(stopTime) after the second signal; kill_after is 2 s")
            let left = try await client.drain(queue)
            #expect(Set(left.map(\.id)) == Set(ids), "every message requeued")
            #expect(left.filter(\.redelivered).count >= 2)
        }
    }

    @Test func sigquitStopsAtOnceAndRequeuesEverything() async throws {
        try await withTestQueue { client, queue in
            let ids = (1...4).map { "q-\($0)" }
            try await client.publish(ids: ids, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo "$WARREN_MESSAGE_ID" >> {dir}/started; sleep 300'"#,
                prefetch: 4, concurrency: 2, grace: "120s", killAfter: "2s"))
            try await eventually("two handlers running") { warren.lines("started").count == 2 }
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGQUIT)
            let code = await warren.waitForExit()
            #expect(code == 0, "\(warren.log)")
            #expect(clock.now - signalled < .seconds(4))
            #expect(Set(try await client.drain(queue).map(\.id)) == Set(ids))
        }
    }

    @Test func aCrashingHandlerNeverTakesTheDaemonDown() async throws {
        try await withTestQueue { client, queue in
            let good = (1...5).map { "good-\($0)" }
            try await client.publish(ids: ["crash"] + good, to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue,
                command: #"sh -c 'if [ "$WARREN_MESSAGE_ID" = crash ]; then kill -SEGV $$; fi; echo "$WARREN_MESSAGE_ID" >> {dir}/finished'"#,
                prefetch: 2, concurrency: 1, extra: "max_attempts = 2\nretry_delay = 100ms"))
            try await eventually("the good messages went through and the crash was dead-lettered") {
                let dead = try await client.count(queue + ".dead")
                return Set(warren.lines("finished")) == Set(good) && dead == 1
            }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0, "\(warren.log)")
            #expect(try await client.count(queue) == 0)
            let dead = try await client.drain(queue + ".dead")
            #expect(dead.map(\.id) == ["crash"])
            #expect(dead.first?.headers?["x-warren-signal"] == .int32(11))
            #expect(warren.log.contains("killed by signal 11"))
        }
    }

    @Test func theHandlerSeesTheMessageOnStdinAndInItsEnvironment() async throws {
        try await withTestQueue { client, queue in
            try await client.connection.publish(Array("the body".utf8), routingKey: queue, on: 1, properties: .init(
                contentType: "text/plain", headers: .init([("x-tenant", .string("acme"))]), correlationId: "corr", messageId: "m-1"))
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c '{ cat; echo; env | grep -E "^(WARREN_|TRACEPARENT)" | sort; } > {dir}/seen; echo done >> {dir}/done'"#))
            try await eventually("the handler ran") { warren.lines("done").count == 1 }
            warren.signal(SIGTERM)
            #expect(await warren.waitForExit() == 0)
            let seen = warren.lines("seen")
            #expect(seen.first == "the body")
            for expected in ["WARREN_QUEUE=\(queue)", "WARREN_MESSAGE_ID=m-1", "WARREN_CORRELATION_ID=corr", "WARREN_CONTENT_TYPE=text/plain",
                             "WARREN_REDELIVERED=0", "WARREN_ATTEMPT=1", "WARREN_HEADER_X_TENANT=acme", "WARREN_ROUTING_KEY=\(queue)",
                             "WARREN_EXCHANGE="] {
                #expect(seen.contains(expected), "\(expected) in \(seen)")
            }
        }
    }

    @Test func sigusr1LogsTheRunningHandlersWithTheirPids() async throws {
        try await withTestQueue { client, queue in
            try await client.publish(ids: ["slow-a"], to: queue)
            let warren = try WarrenBinary(config: try warrenConfig(
                queue: queue, command: #"sh -c 'echo $$ > {dir}/pid; sleep 300'"#, killAfter: "1s"))
            try await eventually("the handler runs") { warren.lines("pid").count == 1 }
            let pid = warren.lines("pid")[0]
            warren.signal(SIGUSR1)
            try await eventually("the report") { warren.log.contains("in flight") }
            let line = warren.log.split(separator: "\n").first { $0.contains("NOTICE in flight") }.map(String.init) ?? ""
            #expect(line.contains("message_id=slow-a") && line.contains("pid=\(pid)") && line.contains("consumer=test"), "\(line)")
            warren.signal(SIGQUIT)
            #expect(await warren.waitForExit() == 0)
        }
    }

    @Test func aStopWithNothingInFlightIsImmediate() async throws {
        try await withTestQueue { _, queue in
            let warren = try WarrenBinary(config: try warrenConfig(queue: queue, command: "true"))
            try await eventually("consuming") { warren.log.contains("running") }
            let clock = ContinuousClock()
            let signalled = clock.now
            warren.signal(SIGINT)
            #expect(await warren.waitForExit() == 0)
            #expect(clock.now - signalled < .seconds(2))
        }
    }

    @Test func aMissingQueueWithDeclareOffIsAClearStartupError() async throws {
        let warren = try WarrenBinary(config: try warrenConfig(queue: "test.absent.\(UInt32.random(in: 0...UInt32.max))",
                                                               command: "true", extra: "declare = false"))
        #expect(await warren.waitForExit() == 1)
        #expect(warren.log.contains("does not exist and declare = false"))
    }
}

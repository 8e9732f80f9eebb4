import AMQP
import Testing
@testable import Warren

/// A retry or dead-letter copy keeps every property the broker lets warren
/// publish; a `user_id` naming another user moves to `x-warren-user-id`.
@Suite struct PublishableCopyTests {
    static let properties = MessageProperties(contentType: "text/plain", headers: FieldTable([("tenant", .string("acme"))]),
                                              deliveryMode: 2, priority: 3, correlationId: "c", replyTo: "r", expiration: "5",
                                              messageId: "m", timestamp: 9, type: "t", userId: "shop", appId: "a")

    @Test func aCopyOfWarrensOwnUsersMessageKeepsEveryProperty() {
        #expect(Publisher.publishable(Self.properties, by: "shop") == Self.properties)
        var none = Self.properties
        none.userId = nil
        #expect(Publisher.publishable(none, by: "warren") == none)
    }

    @Test func aCopyOfAnotherUsersMessageCarriesItsUserIDInAHeader() {
        var expected = Self.properties
        expected.userId = nil
        expected.headers = FieldTable([("tenant", .string("acme")), ("x-warren-user-id", .string("shop"))])
        #expect(Publisher.publishable(Self.properties, by: "warren") == expected)
        var headerless = Self.properties
        headerless.headers = nil
        #expect(Publisher.publishable(headerless, by: "warren").headers == FieldTable([("x-warren-user-id", .string("shop"))]))
    }
}

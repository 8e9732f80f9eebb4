import Synchronization

/// warren's own ids for deliveries (the envelope's `id`): a counter, so an
/// id is never reused while warren runs, whatever channel or connection the
/// delivery came on (delivery tags start again on each channel).
enum DeliveryID {
    private static let counter = Atomic<UInt64>(0)

    static func next() -> String {
        String(counter.add(1, ordering: .relaxed).newValue)
    }
}

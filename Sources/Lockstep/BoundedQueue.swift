import Foundation

/// A blocking first-in-first-out queue of at most `capacity` items between two threads: the
/// producer waits when it is full, the consumer when it is empty. Closing it wakes both.
final class BoundedQueue<Element>: @unchecked Sendable {
    private let capacity: Int
    private var items: [Element] = []
    private var closed = false
    private let condition = NSCondition()

    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Adds an item; false when the queue was closed (the consumer stopped).
    func push(_ item: Element) -> Bool {
        condition.lock(); defer { condition.unlock() }
        while items.count >= capacity && !closed { condition.wait() }
        if closed { return false }
        items.append(item)
        condition.broadcast()
        return true
    }

    /// The next item, or nil once the queue is closed and empty.
    func pop() -> Element? {
        condition.lock(); defer { condition.unlock() }
        while items.isEmpty && !closed { condition.wait() }
        if items.isEmpty { return nil }
        let item = items.removeFirst()
        condition.broadcast()
        return item
    }

    /// No more items will be pushed; waiting threads wake up.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Closes and drops what is queued, for a consumer that gives up early.
    func cancel() {
        condition.lock()
        closed = true
        items.removeAll()
        condition.broadcast()
        condition.unlock()
    }
}

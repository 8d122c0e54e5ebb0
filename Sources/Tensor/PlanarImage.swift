/// A planar float image or feature map: `channels` planes of `height × width` Float32 values,
/// row-major, planes stored one after another. Images hold RGB in [0, 1], planes in R, G, B order.
///
/// A value type with copy-on-write storage, so frames can be handed between pipeline stages
/// without copying their pixels.
public struct PlanarImage: @unchecked Sendable {
    public let channels: Int
    public let height: Int
    public let width: Int
    private var storage: Storage

    /// A zero-filled image.
    public init(channels: Int, height: Int, width: Int) {
        self.init(uninitializedChannels: channels, height: height, width: width)
        storage.pointer.initialize(repeating: 0, count: count)
    }

    /// An image whose values are whatever its recycled buffer held: for producers that write
    /// every value (decoders, kernels), saving a pass over memory.
    public init(uninitializedChannels channels: Int, height: Int, width: Int) {
        precondition(channels > 0 && height > 0 && width > 0, "PlanarImage dimensions must be positive")
        self.channels = channels
        self.height = height
        self.width = width
        self.storage = Storage(count: channels * height * width)
    }

    /// An image whose values are `values`, planes first.
    public init(channels: Int, height: Int, width: Int, values: [Float]) {
        precondition(values.count == channels * height * width, "value count does not match the shape")
        self.init(channels: channels, height: height, width: width)
        values.withUnsafeBufferPointer { src in
            storage.pointer.update(from: src.baseAddress!, count: src.count)
        }
    }

    public var planeSize: Int { height &* width }
    public var count: Int { channels &* height &* width }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = Storage(count: count)
            // Copy-on-write: `copy` is fully overwritten below.
            copy.pointer.update(from: storage.pointer, count: count)
            storage = copy
        }
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// Reads one value; for tests and small tools, not for hot loops.
    public subscript(channel: Int, y: Int, x: Int) -> Float {
        get {
            precondition(channel < channels && y < height && x < width)
            return storage.pointer[(channel * height + y) * width + x]
        }
        set {
            precondition(channel < channels && y < height && x < width)
            let index = (channel * height + y) * width + x
            withUnsafeMutableBufferPointer { $0[index] = newValue }
        }
    }

    /// All values, planes first.
    public var values: [Float] { withUnsafeBufferPointer { Array($0) } }

    /// True when both images have the same shape and bit-identical values.
    public func isIdentical(to other: PlanarImage) -> Bool {
        guard channels == other.channels, height == other.height, width == other.width else { return false }
        return withUnsafeBufferPointer { a in other.withUnsafeBufferPointer { b in
            memcmp(a.baseAddress!, b.baseAddress!, count * MemoryLayout<Float>.stride) == 0
        } }
    }

    private final class Storage {
        let pointer: UnsafeMutablePointer<Float>
        let count: Int
        init(count: Int) {
            self.count = count
            pointer = BufferPool.shared.take(count: count)
        }
        deinit { BufferPool.shared.give(pointer, count: count) }
    }
}

/// Recycles the buffers of released images. A video pipeline allocates and frees images of the
/// same few sizes every frame; without recycling, every frame's buffer is fresh memory from the
/// kernel (page faults on every frame), and malloc's per-thread arenas kept up to twice the
/// working set alive. At most `limit` free buffers of each size are kept, and a streaming loop
/// calls `releaseIdle` once a frame: what no frame has taken since the last call (the set-up's
/// own temporaries, a size no longer used) goes back to the system, so the pool holds what one
/// frame needs and no more.
public final class BufferPool: @unchecked Sendable {
    public static let shared = BufferPool()
    private let lock = NSLock()
    /// Free buffers by size; each marked idle once a `releaseIdle` call has seen it in the pool.
    private var free: [Int: [(pointer: UnsafeMutablePointer<Float>, idle: Bool)]] = [:]
    private let limit: Int
    /// Above 0 while a `withoutRecycling` step runs.
    private var bypassing = 0
    /// Buffers smaller than this are left to malloc, which handles them well.
    private let minimumCount = 16384

    /// A pool that keeps up to `limit` free buffers of each size (`shared` is the images' own).
    public init(limit: Int = 6) { self.limit = limit }

    /// A buffer of `count` floats, uninitialised: recycled when one is free.
    public func take(count: Int) -> UnsafeMutablePointer<Float> {
        if count >= minimumCount {
            lock.lock()
            let recycled = free[count]?.popLast()
            lock.unlock()
            if let recycled { return recycled.pointer }
        }
        // 64-byte alignment keeps SIMD loads on cache-line boundaries.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: count)
    }

    /// Returns a buffer from `take`.
    public func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        if count >= minimumCount {
            lock.lock()
            if bypassing == 0 && free[count, default: []].count < limit {
                free[count, default: []].append((pointer, false))
                lock.unlock()
                return
            }
            lock.unlock()
        }
        UnsafeMutableRawPointer(pointer).deallocate()
    }

    /// Frees the buffers that have stayed in the pool since the last call, and marks the rest.
    /// Buffers are taken from the end of each list, so the idle ones are those nearest its start.
    public func releaseIdle() {
        lock.lock()
        var released: [UnsafeMutablePointer<Float>] = []
        for (count, buffers) in free {
            released += buffers.filter(\.idle).map(\.pointer)
            free[count] = buffers.filter { !$0.idle }.map { ($0.pointer, true) }
        }
        lock.unlock()
        for pointer in released { UnsafeMutableRawPointer(pointer).deallocate() }
    }

    /// Runs a one-off step (a keyframe's set-up) whose temporaries the frames to come will not
    /// use: what is freed meanwhile goes back to the system at once instead of into the pool,
    /// where each size's buffers would have stayed (181 MB of them after a 1080p keyframe's).
    public func withoutRecycling<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        bypassing += 1
        lock.unlock()
        defer {
            lock.lock()
            bypassing -= 1
            lock.unlock()
        }
        return try body()
    }

    /// Bytes held by free buffers (for tests and measurements).
    public var bytesHeld: Int {
        lock.lock(); defer { lock.unlock() }
        return free.reduce(0) { $0 + $1.key * $1.value.count } * MemoryLayout<Float>.stride
    }
}

import Foundation

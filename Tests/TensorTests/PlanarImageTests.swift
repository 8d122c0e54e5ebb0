import Tensor
import Testing

@Suite struct PlanarImageTests {
    /// Four quarter turns are the identity; one turn moves the top-left sample to the top right.
    @Test func rotationIsAnExactPermutation() {
        let image = PlanarImage(channels: 2, height: 3, width: 5, values: (0..<30).map(Float.init))
        #expect(image.rotatedClockwise(quarterTurns: 4).isIdentical(to: image))
        let once = image.rotatedClockwise(quarterTurns: 1)
        #expect(once.height == 5 && once.width == 3)
        #expect(once[0, 0, 2] == image[0, 0, 0])
        #expect(once.rotatedClockwise(quarterTurns: 3).isIdentical(to: image))
        #expect(image.rotatedClockwise(quarterTurns: 2)[1, 2, 4] == image[1, 0, 0])
    }

    /// Writing to a copy leaves the original alone, also when buffers are recycled.
    @Test func copyOnWriteAndRecycledBuffers() {
        var a = PlanarImage(channels: 3, height: 128, width: 128)
        let b = a
        a[0, 0, 0] = 1
        #expect(b[0, 0, 0] == 0 && a[0, 0, 0] == 1)
        do { _ = PlanarImage(channels: 3, height: 128, width: 128, values: [Float](repeating: 7, count: 3 * 128 * 128)) }
        let fresh = PlanarImage(channels: 3, height: 128, width: 128)
        #expect(fresh.values.allSatisfy { $0 == 0 }, "a recycled buffer must come back zeroed")
    }

    /// A free buffer that nobody takes between two `releaseIdle` calls (a frame's time) goes
    /// back to the system; one taken and given back in between stays for the next frame.
    @Test func idleBuffersAreReleasedAfterAFrame() {
        let pool = BufferPool(), count = 20_000, bytes = count * MemoryLayout<Float>.stride
        let buffer = pool.take(count: count)
        pool.give(buffer, count: count)
        #expect(pool.bytesHeld == bytes)
        pool.releaseIdle()
        #expect(pool.bytesHeld == bytes, "seen idle once: kept")
        let again = pool.take(count: count)
        #expect(again == buffer, "the free buffer is recycled")
        pool.give(again, count: count)
        pool.releaseIdle()
        #expect(pool.bytesHeld == bytes, "used since the last call: kept")
        pool.releaseIdle()
        #expect(pool.bytesHeld == 0, "idle for a whole frame: released")
        pool.withoutRecycling {
            let temporary = pool.take(count: count)
            pool.give(temporary, count: count)
        }
        #expect(pool.bytesHeld == 0, "a one-off step's temporaries are not kept")
    }

    /// Each output sample is the mean of its own factor × factor block, a partial last block is
    /// dropped, and factor 1 is the identity.
    @Test(arguments: [1, 2, 3, 5])
    func averagePoolingAveragesEachBlock(factor: Int) {
        let h = 11, w = 17
        let image = PlanarImage(channels: 2, height: h, width: w, values: (0..<(2 * h * w)).map { Float(($0 * 7919) % 251) })
        let pooled = image.averagePooled(factor)
        #expect(pooled.height == h / factor && pooled.width == w / factor)
        for c in 0..<2 {
            for y in 0..<pooled.height {
                for x in 0..<pooled.width {
                    var sum: Float = 0
                    for dy in 0..<factor { for dx in 0..<factor { sum += image[c, factor * y + dy, factor * x + dx] } }
                    #expect(abs(pooled[c, y, x] - sum / Float(factor * factor)) < 1e-4)
                }
            }
        }
    }
}

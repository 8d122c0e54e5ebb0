/// What each pixel showed, per channel, the last time a frame of the shot saw none of its
/// channels clipped: the corrected values, the guide's values then, and that frame's index. A value the flicker clipped
/// (`GridFieldApplier.white`, `black`) only bounds its truth; where the guide shows the same there
/// as when the pixel was last seen (within its noise, `DeflickerAnalysis.agreementNoise`), the
/// content is the same, and what the correction made of it then is the estimate that is right
/// by construction: a still camera's highlights take their own value from the frames before a
/// brighter one, whatever the edit (a pencil sketch's paper and strokes over the same guide
/// tone included, which the guide's tone alone averages to grey). Content that moved shows
/// another guide value there and takes the guide's tone as before (`ConsensusCorrection.apply`).
///
/// Per frame it depends on the frames of the window before it only (`DeflickerPlan.window`, in
/// the shot), so a part of a split job that reads those first (`DeflickerPlan.recalled`) makes
/// the whole run's frames. Half precision for the values and the guide's (an eighth of an 8-bit
/// level near white).
public final class ClippedMemory: @unchecked Sendable {
    /// Values (3 planes), and pixels.
    let count: Int, pixels: Int
    let values: UnsafeMutablePointer<Float16>, guides: UnsafeMutablePointer<Float16>
    let frames: UnsafeMutablePointer<Int32>

    init(count: Int) {
        self.count = count
        pixels = count / 3
        values = .allocate(capacity: count)
        values.initialize(repeating: 0, count: count)
        guides = .allocate(capacity: count)
        guides.initialize(repeating: 0, count: count)
        // Never seen.
        frames = .allocate(capacity: pixels)
        frames.initialize(repeating: Int32.min, count: pixels)
    }

    deinit {
        values.deallocate()
        guides.deallocate()
        frames.deallocate()
    }

    /// The memory as frame `index` reads and writes it: entries of frames before `oldest` (out of
    /// the window, or before the shot's cut) do not count. A pixel is remembered where none of
    /// its channels is clipped (one frame index per pixel, not per value: about 5 bytes per
    /// value in all, 33 MB at 1080p).
    public struct Use {
        let memory: ClippedMemory
        let index: Int32, oldest: Int32
        /// Within this of the guide's value then, the guide shows the same content.
        static let tolerance = DeflickerAnalysis.agreementNoise

        /// Value i (of pixel `pixel`), if it was seen unclipped in the window where the guide
        /// showed `guide` (within its noise): what the correction made of it then, moved by the
        /// change that the guide's tone (`table`, mapped by `gain`) puts between the two guide values.
        @inline(__always)
        func recalled(_ i: Int, pixel: Int, guide: Float, table: UnsafePointer<Float>, lookup: LookupTable, gain: Float) -> Float? {
            guard memory.frames[pixel] >= oldest else { return nil }
            let then = Float(memory.guides[i])
            guard abs(guide - then) <= Self.tolerance else { return nil }
            let value = Float(memory.values[i])
            let change = table[lookup.index(guide)] - table[lookup.index(then)]
            return change.isNaN ? value : value + gain * change
        }

        /// Eight consecutive values remembered, those whose pixels were seen unclipped (`seen`).
        @inline(__always)
        func remember(_ i: Int, values: SIMD8<Float>, guides: SIMD8<Float>, where seen: SIMDMask<SIMD8<Int32>>) {
            guard any(seen) else { return }
            var newValues = values, newGuides = guides
            let v = UnsafeMutableRawPointer(memory.values + i), g = UnsafeMutableRawPointer(memory.guides + i)
            if !all(seen) {
                // The others keep what they had (half precision there and back is exact).
                let kept = .!seen
                newValues.replace(with: SIMD8<Float>(v.loadUnaligned(as: SIMD8<Float16>.self)), where: kept)
                newGuides.replace(with: SIMD8<Float>(g.loadUnaligned(as: SIMD8<Float16>.self)), where: kept)
            }
            v.storeBytes(of: SIMD8<Float16>(newValues), as: SIMD8<Float16>.self)
            g.storeBytes(of: SIMD8<Float16>(newGuides), as: SIMD8<Float16>.self)
        }

        @inline(__always)
        func remember(_ i: Int, value: Float, guide: Float) {
            memory.values[i] = Float16(value)
            memory.guides[i] = Float16(guide)
        }

        /// The pixels of a row (from `pixel`, `count` of them) that `seen` marks (1: none of their
        /// channels clipped), remembered as seen now: their values were, channel by channel.
        @inline(__always)
        func seen(_ pixel: Int, count: Int, where seen: UnsafePointer<Float>) {
            let f = memory.frames + pixel
            for x in 0..<count where seen[x] != 0 { f[x] = index }
        }
    }
}

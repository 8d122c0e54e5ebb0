/// What each pixel showed, per channel, the last time a frame of the shot saw it unclipped: the
/// corrected value, the guide's value then, and that frame's index. A value the flicker clipped
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
/// the whole run's frames. Half precision for the values (an eighth of an 8-bit level near
/// white): 8 bytes per value, 50 MB at 1080p.
public final class ClippedMemory: @unchecked Sendable {
    let count: Int
    let values: UnsafeMutablePointer<Float16>, guides: UnsafeMutablePointer<Float16>
    let frames: UnsafeMutablePointer<Int32>

    init(count: Int) {
        self.count = count
        values = .allocate(capacity: count)
        values.initialize(repeating: 0, count: count)
        guides = .allocate(capacity: count)
        guides.initialize(repeating: 0, count: count)
        // Never seen.
        frames = .allocate(capacity: count)
        frames.initialize(repeating: Int32.min, count: count)
    }

    deinit {
        values.deallocate()
        guides.deallocate()
        frames.deallocate()
    }

    /// The memory as frame `index` reads and writes it: entries of frames before `oldest` (out of
    /// the window, or before the shot's cut) do not count.
    public struct Use {
        let memory: ClippedMemory
        let index: Int32, oldest: Int32
        /// Within this of the guide's value then, the guide shows the same content.
        static let tolerance = DeflickerAnalysis.agreementNoise

        /// Value i, if it was seen unclipped in the window where the guide showed `guide` (within
        /// its noise): what the correction made of it then, moved by the change that the guide's
        /// tone (`table`, mapped by `gain`) puts between the two guide values.
        @inline(__always)
        func recalled(_ i: Int, guide: Float, table: UnsafePointer<Float>, lookup: LookupTable, gain: Float) -> Float? {
            guard memory.frames[i] >= oldest else { return nil }
            let then = Float(memory.guides[i])
            guard abs(guide - then) <= Self.tolerance else { return nil }
            let value = Float(memory.values[i])
            let change = table[lookup.index(guide)] - table[lookup.index(then)]
            return change.isNaN ? value : value + gain * change
        }

        /// Eight consecutive values remembered, those that were seen unclipped (`seen`).
        @inline(__always)
        func remember(_ i: Int, values: SIMD8<Float>, guides: SIMD8<Float>, where seen: SIMDMask<SIMD8<Int32>>) {
            var newValues = values, newGuides = guides, newFrames = SIMD8<Int32>(repeating: index)
            let v = UnsafeMutableRawPointer(memory.values + i), g = UnsafeMutableRawPointer(memory.guides + i)
            let f = UnsafeMutableRawPointer(memory.frames + i)
            if !all(seen) {
                // The others keep what they had (half precision there and back is exact).
                let kept = .!seen
                newValues.replace(with: SIMD8<Float>(v.loadUnaligned(as: SIMD8<Float16>.self)), where: kept)
                newGuides.replace(with: SIMD8<Float>(g.loadUnaligned(as: SIMD8<Float16>.self)), where: kept)
                newFrames.replace(with: f.loadUnaligned(as: SIMD8<Int32>.self), where: kept)
            }
            v.storeBytes(of: SIMD8<Float16>(newValues), as: SIMD8<Float16>.self)
            g.storeBytes(of: SIMD8<Float16>(newGuides), as: SIMD8<Float16>.self)
            f.storeBytes(of: newFrames, as: SIMD8<Int32>.self)
        }

        @inline(__always)
        func remember(_ i: Int, value: Float, guide: Float) {
            memory.values[i] = Float16(value)
            memory.guides[i] = Float16(guide)
            memory.frames[i] = index
        }
    }
}

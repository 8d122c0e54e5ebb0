import Foundation
import Tensor

/// With a guide, the last step of the second pass: each corrected frame's tone against its own
/// guide brought to the tone of the frames before it, as far as the difference is the
/// correction's error and not the picture's.
///
/// The correction maps a frame through curves fitted on its matches to a reference, composed
/// across links and agreed over a window, and clipped values are predicted from the guide. Each
/// of those steps errs a little differently in every frame, and where the truth is still (a
/// static camera, a grade) that error is what flickers: on the phone video's grade under global
/// jitter, the output's mean at a guide level moved by 0.4 to 0.8 levels of 255 from frame to
/// frame in the mid-tones and 2.8 in the highlights. The guide shows each frame without the
/// flicker, pixel for pixel, so the output's tone against it (`ToneRelation`: the mean output at
/// each guide value) says directly how the frame came out. Against the window of the frames
/// before it (up to `DeflickerPlan.window` of them, in its shot) and itself, the difference at
/// each guide value is added to the frame's pixels of that value (`ToneRelation.deviation`), scaled by
/// the share of it that is the correction's (`ToneReliability`).
///
/// Only the frames before count, and as the correction made them (before this step): a run
/// that starts inside a shot sees the same window once it has been given `recalled(before:)`,
/// so split jobs stay frame for frame the whole run's, and nothing carries on beyond the window.
/// (Measured the window centred on the frame, which needs the frames after it: within 0.3 dB of
/// this on my cases, in Python on the outputs.)
public struct ToneWindow {
    public init() {}

    /// The corrected frames' tones against their guides (whole, and over each half of the frame),
    /// by index, of the frames still in the window.
    private var tones: [Int: Measured] = [:]

    public struct Measured {
        public var whole: ToneRelation, halves: (ToneRelation, ToneRelation)
    }

    /// Measures `output`'s tone against `guide` (frame `index`), adds what brings it to its
    /// window's (frames `lower` to `index`), and remembers the measure for the frames after.
    /// `stride`: measured on every `stride`-th pixel along both axes; `block`: the side of the
    /// squares whose checkerboard makes the two halves, in pixels. Returns the tone measured
    /// (before this step).
    @discardableResult
    public mutating func steady(_ output: inout PlanarImage, guide: PlanarImage, index: Int, lower: Int, stride: Int, block: Int) -> ToneRelation {
        tones = tones.filter { $0.key >= lower && $0.key < index }
        let measured = Self.measure(output, against: guide, stride: stride, block: block)
        tones[index] = measured
        let window = tones.keys.sorted().map { tones[$0]! }
        guard window.count > 1 else { return measured.whole }
        let held = ToneRelation.robustMean(window.map(\.whole))
        let heldHalves = (ToneRelation.robustMean(window.map(\.halves.0)), ToneRelation.robustMean(window.map(\.halves.1)))
        var reliability = ToneReliability()
        for frame in window { reliability.add(own: frame.whole, halves: frame.halves, held: held, heldHalves: heldHalves) }
        let deviation = held.deviation(of: measured.whole, reliability: reliability.reliability)
        Self.add(deviation, to: &output, by: guide)
        return measured.whole
    }

    /// The tone of `picture` against `guide` over every `stride`-th pixel, whole and over each
    /// colour of a checkerboard of `block` × `block` squares, in one pass per channel.
    public static func measure(_ picture: PlanarImage, against guide: PlanarImage, stride: Int, block: Int) -> Measured {
        precondition(picture.channels == 3 && guide.count == picture.count && stride > 0 && block > 0)
        let w = picture.width, h = picture.height, plane = w * h, levels = ToneRelation.levels, last = levels - 1
        // Per half, channel and level: Σ value, then Σ weight.
        var sums = [Double](repeating: 0, count: 2 * 2 * 3 * levels)
        // Each column's square, counted along the row (0 or 1).
        let columns = (0..<w).map { ($0 / block) & 1 }
        picture.withUnsafeBufferPointer { p in guide.withUnsafeBufferPointer { g in sums.withUnsafeMutableBufferPointer { sb in
        columns.withUnsafeBufferPointer { cb in
            let sums = sb.baseAddress!, columns = cb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 3) { c in
                // The channel's own sums (half, then Σ value and Σ weight by level), in two
                // copies that alternate pixel by pixel: neighbours mostly share a level, and one
                // copy would make each wait for the other's store.
                let span = 2 * 2 * levels
                let local = UnsafeMutablePointer<Double>.allocate(capacity: 2 * span)
                local.initialize(repeating: 0, count: 2 * span)
                defer { local.deallocate() }
                var y = 0, copy = 0
                while y < h {
                    let row = c &* plane &+ y &* w, band = (y / block) & 1
                    var x = 0
                    while x < w {
                        let base = copy &* span &+ ((columns[x] &+ band) & 1) &* 2 &* levels
                        let t = min(max(g[row &+ x], 0), 1) * Float(last)
                        let k = min(Int(t), last &- 1), a = Double(t - Float(k)), v = Double(p[row &+ x])
                        local[base &+ k] += (1 - a) * v; local[base &+ levels &+ k] += 1 - a
                        local[base &+ k &+ 1] += a * v; local[base &+ levels &+ k &+ 1] += a
                        copy ^= 1
                        x &+= stride
                    }
                    y &+= stride
                }
                for half in 0..<2 {
                    for i in 0..<(2 * levels) {
                        sums[(half * 3 + c) * 2 * levels + i] = local[half * 2 * levels + i] + local[span + half * 2 * levels + i]
                    }
                }
            }
        } } } }
        func relation(_ halves: [Int]) -> ToneRelation {
            var values = [Float](repeating: .nan, count: 3 * levels), weights = [Float](repeating: 0, count: 3 * levels)
            for c in 0..<3 {
                for k in 0..<levels {
                    var sum = 0.0, weight = 0.0
                    for half in halves {
                        let base = (half * 3 + c) * 2 * levels
                        sum += sums[base + k]; weight += sums[base + levels + k]
                    }
                    guard Float(weight) >= ToneRelation.minimumSamples else { continue }
                    values[c * levels + k] = Float(sum / weight)
                    weights[c * levels + k] = Float(weight)
                }
            }
            return ToneRelation(values: values, weights: weights)
        }
        return Measured(whole: relation([0, 1]), halves: (relation([0]), relation([1])))
    }

    /// Adds to each value of `output` the table of its channel at its guide value, held in [0, 1].
    static func add(_ deviation: [LookupTable?], to output: inout PlanarImage, by guide: PlanarImage) {
        let plane = output.planeSize
        output.withUnsafeMutableBufferPointer { o in guide.withUnsafeBufferPointer { g in
            let out = o.baseAddress!, guide = g.baseAddress!
            for c in 0..<3 {
                guard let table = deviation[c] else { continue }
                table.values.withUnsafeBufferPointer { tv in
                    let values = tv.baseAddress!
                    parallelChunks(plane, minimumChunk: 1 << 14) { range in
                        let o = out + c &* plane, g = guide + c &* plane
                        // Eight at a time: the indices as vectors, the loads lane by lane.
                        var i = range.lowerBound
                        while i &+ 8 <= range.upperBound {
                            let at = table.indices(UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self))
                            var added = SIMD8<Float>()
                            for k in 0..<8 { added[k] = values[Int(at[k])] }
                            let sum = UnsafeRawPointer(o + i).loadUnaligned(as: SIMD8<Float>.self) + added
                            let held = sum.replacing(with: 0, where: sum .< 0).replacing(with: 1, where: sum .> 1)
                            UnsafeMutableRawPointer(o + i).storeBytes(of: held, as: SIMD8<Float>.self)
                            i &+= 8
                        }
                        while i < range.upperBound {
                            o[i] = min(max(o[i] + values[table.index(g[i])], 0), 1)
                            i &+= 1
                        }
                    }
                }
            }
        } }
    }
}

import Foundation
import Tensor

/// How one picture's values relate to another's on the same pixels (a frame and its guide): at
/// each of `levels` guide values on [0, 1], the mean value of the other picture where the guide
/// has that value (a binned regression, per channel). A conditional mean, not a matching of
/// distributions: a gain that varies across the frame spreads a picture's distribution (its
/// brightest values are where the picture is bright and the gain high), which would read as a
/// steeper tone, but it leaves the mean at each guide value at the gain's mean. An edit that
/// flattens a range of tones (a pencil sketch's paper takes most light tones to white) or
/// scatters them (strokes) is related as it is, the same in every frame. NaN where the guide has
/// too few values near a level to say (a dark scene has no highlights to relate). Where the frame
/// was clipped (`censored`), the value is only a lower bound: the clipped samples' truth lies
/// above white.
public struct ToneRelation: Sendable {
    /// Guide values k / (levels − 1).
    public static let levels = 65
    /// Fewer samples than this near a level leave it unknown: their mean would be off by more
    /// than an eighth of their spread.
    static let minimumSamples: Float = 64
    /// More than this share of a level's samples clipped, and its mean is taken as a bound only
    /// (clipped samples lower it by up to their flicker's gain: at 1%, by well under a level).
    static let censoringShare: Float = 0.01
    /// Per channel, the related value at each guide level, then each level's weight (samples).
    public var values: [Float]
    public var weights: [Float]
    /// Per channel and level, whether the frame was clipped there (the value is then a bound).
    public var censored: [Bool]

    public init(values: [Float], weights: [Float]) {
        precondition(values.count == 3 * Self.levels && weights.count == 3 * Self.levels)
        self.values = values
        self.weights = weights
        censored = [Bool](repeating: false, count: values.count)
    }

    /// The relation from `guide`'s values to `picture`'s (both 3 × H × W, the same pixels): each
    /// sample counts at the two levels around its guide value, in proportion to its nearness.
    /// A sample is clipped where `frame` (the frame `picture` was made from) is at white.
    public init(from guide: PlanarImage, to picture: PlanarImage, frame: PlanarImage) {
        precondition(guide.channels == 3 && picture.channels == 3 && guide.count == picture.count && frame.count == picture.count)
        let n = guide.planeSize, last = Self.levels - 1, white = FrameAppearance.clippedLevel
        var sums = [Double](repeating: 0, count: 3 * Self.levels), counts = sums, clipped = sums
        guide.withUnsafeBufferPointer { g in picture.withUnsafeBufferPointer { p in frame.withUnsafeBufferPointer { f in
        sums.withUnsafeMutableBufferPointer { sb in counts.withUnsafeMutableBufferPointer { cb in clipped.withUnsafeMutableBufferPointer { kb in
            let sums = sb.baseAddress!, counts = cb.baseAddress!, clipped = kb.baseAddress!
            // One task per channel (as `FrameAppearance.fitInTurn` fits its curves): each writes
            // only its own levels, in the same order as alone.
            DispatchQueue.concurrentPerform(iterations: 3) { c in
                let base = c * Self.levels
                for i in (c &* n)..<((c &+ 1) &* n) {
                    let t = min(max(g[i], 0), 1) * Float(last)
                    let k = min(Int(t), last - 1), a = Double(t - Float(k)), v = Double(p[i])
                    sums[base &+ k] += (1 - a) * v; counts[base &+ k] += 1 - a
                    sums[base &+ k &+ 1] += a * v; counts[base &+ k &+ 1] += a
                    if f[i] >= white { clipped[base &+ k] += 1 - a; clipped[base &+ k &+ 1] += a }
                }
            }
        } } } } } }
        let known = (0..<(3 * Self.levels)).map { Float(counts[$0]) >= Self.minimumSamples }
        censored = (0..<(3 * Self.levels)).map { known[$0] && Float(clipped[$0]) > Self.censoringShare * Float(counts[$0]) }
        values = (0..<(3 * Self.levels)).map { known[$0] ? Float(sums[$0] / counts[$0]) : .nan }
        weights = (0..<(3 * Self.levels)).map { known[$0] ? Float(counts[$0]) : 0 }
    }

    /// The relation with its censored levels unknown (NaN), their weights kept: what a frame
    /// mapped to the reference's tone says, where the others speak for a censored one.
    public var uncensored: ToneRelation {
        var out = ToneRelation(values: values, weights: weights)
        for i in censored.indices where censored[i] { out.values[i] = .nan }
        return out
    }

    /// Channel c's relation tabulated over guide values [0, 1] in `count` steps, each value then
    /// taken through `after`: linear between the levels known, NaN outside the first and last
    /// known (nothing says what lies there).
    public func table(channel c: Int, through after: LookupTable, count: Int = 1024) -> LookupTable {
        let base = c * Self.levels, last = Self.levels - 1
        let known = (0...last).filter { values[base + $0].isFinite }
        var table = [Float](repeating: .nan, count: count)
        guard let first = known.first, let final = known.last else { return LookupTable(lower: 0, upper: 1, values: table) }
        var k = 0
        for i in 0..<count {
            let t = Float(i) / Float(count - 1) * Float(last)
            guard t >= Float(first), t <= Float(final) else { continue }
            while k + 1 < known.count && Float(known[k + 1]) < t { k += 1 }
            let j0 = known[k], j1 = known[min(k + 1, known.count - 1)]
            let a = j1 > j0 ? (t - Float(j0)) / Float(j1 - j0) : 0
            table[i] = after.values[after.index(values[base + j0] + a * (values[base + j1] - values[base + j0]))]
        }
        return LookupTable(lower: 0, upper: 1, values: table)
    }

    /// The identity: every value related to itself, at every level.
    public static let identity = ToneRelation(values: (0..<(3 * levels)).map { Float($0 % levels) / Float(levels - 1) },
                                              weights: [Float](repeating: 1, count: 3 * levels))

    /// Level by level, the robust mean (`robustLocation`) of the relations that know it, and
    /// their mean weight; NaN where none does. For frames mapped to one reference's tone, which
    /// carry no flicker of their own (`uncensored`).
    public static func robustMean(_ relations: [ToneRelation]) -> ToneRelation {
        let count = Float(max(relations.count, 1))
        return ToneRelation(values: (0..<(3 * levels)).map { i in
            let v = relations.map { Double($0.values[i]) }.filter { $0.isFinite }
            return v.isEmpty ? .nan : Float(robustLocation(v))
        }, weights: (0..<(3 * levels)).map { i in relations.reduce(0) { $0 + $1.weights[i] } / count })
    }

    /// Level by level, the mean of relations of frames that each carry their own flicker, and
    /// their mean weight, gathered one frame at a time in constant memory. Where some frames
    /// were clipped, their values are bounds the truth lies above, and leaving them out would
    /// leave out the brightest frames: the mean is that of a normal censored at those bounds
    /// (`FieldConsensus.censoredMean`, the estimate the gain consensus makes, mirrored: there
    /// the bounds are upper ones).
    public struct CensoredMean: Sendable {
        /// Per channel and level: observed count, Σ z, Σ z²; censored count, Σ bounds (z = −value).
        private var sums = [Float](repeating: 0, count: 5 * 3 * ToneRelation.levels)
        private var weights = [Float](repeating: 0, count: 3 * ToneRelation.levels)
        private var count = 0

        public init() {}

        public mutating func add(_ relation: ToneRelation) {
            let n = 3 * ToneRelation.levels
            for i in 0..<n {
                weights[i] += relation.weights[i]
                guard relation.values[i].isFinite else { continue }
                let z = -relation.values[i]
                if relation.censored[i] {
                    sums[3 * n + i] += 1; sums[4 * n + i] += z
                } else {
                    sums[i] += 1; sums[n + i] += z; sums[2 * n + i] += z * z
                }
            }
            count += 1
        }

        public var mean: ToneRelation {
            let n = 3 * ToneRelation.levels
            return ToneRelation(values: (0..<n).map { i in
                guard sums[i] > 0 else { return .nan }
                return -FieldConsensus.censoredMean(observed: sums[i], sum: sums[n + i], squares: sums[2 * n + i],
                                                    censored: sums[3 * n + i], bounds: sums[4 * n + i])
            }, weights: weights.map { $0 / Float(max(count, 1)) })
        }
    }

    /// Per channel, the offset that brings this relation, taken through the inverse of
    /// `consensus` and then a gain of `field` (what the correction makes of it), to `target` on
    /// average, as it is added before that gain: the mean
    /// difference over the levels both know, each level weighed by this relation's weight there
    /// (its share of the frame), so the frame's mean value comes out as `target` says. Only
    /// levels whose value (the edit's, or the corrected one: `judged`) stays at or below
    /// `headroom` count (above, a flicker of a few percent clips,
    /// and what is seen there says little); the others count as needing nothing, so a frame
    /// mostly at white (a pencil sketch's paper) is left nearly as it is. An offset, not a gain:
    /// an error in the anchor moves every value by as much, and is not magnified in the
    /// highlights of a dark frame.
    public func offset(through consensus: [ToneCurve], field: [Float], to target: ToneRelation, headroomOf judged: HeadroomOf = .target) -> [Float] {
        (0..<3).map { c in
            let inverse = consensus[c].inverseTable(lower: -0.5, upper: 2, count: 10_001)
            var difference = 0.0, total = 0.0
            for level in 0..<Self.levels {
                let i = c * Self.levels + level
                total += Double(weights[i])
                guard values[i].isFinite, target.values[i].isFinite, weights[i] > 0 else { continue }
                let corrected = inverse.values[inverse.index(values[i])]
                guard (judged == .corrected ? corrected * field[c] : target.values[i]) <= Self.headroom else { continue }
                difference += Double(weights[i] * (target.values[i] / field[c] - corrected))
            }
            return total > 0 ? Float(difference / total) : 0
        }
    }

    /// Per channel, what to add to a value of the picture whose tone is `own`, by its guide
    /// value, to bring its tone to this one: at each level both know, their difference times
    /// the channel's `reliability`, smoothed over neighbouring levels (each weighed by its
    /// samples in `own`), reaching two levels beyond the last known and nothing further.
    /// Tabulated over guide values [0, 1]; nil for a channel whose reliability is 0.
    public func deviation(of own: ToneRelation, reliability: [Float], count: Int = 1024) -> [LookupTable?] {
        let kernel: [Float] = [1, 2, 3, 2, 1], reach = kernel.count / 2, last = Self.levels - 1
        return (0..<3).map { c in
            guard reliability[c] > 0 else { return nil }
            let base = c * Self.levels
            var difference = [Float](repeating: 0, count: Self.levels), weight = difference
            for level in 0...last where values[base + level].isFinite && own.values[base + level].isFinite {
                difference[level] = values[base + level] - own.values[base + level]
                weight[level] = own.weights[base + level]
            }
            let smoothed = (0...last).map { level -> Float in
                var sum: Float = 0, total: Float = 0
                for (k, tap) in kernel.enumerated() where level + k - reach >= 0 && level + k - reach <= last {
                    sum += tap * weight[level + k - reach] * difference[level + k - reach]
                    total += tap * weight[level + k - reach]
                }
                return total > 0 ? reliability[c] * sum / total : 0
            }
            return LookupTable(lower: 0, upper: 1, values: (0..<count).map { k in
                let t = Float(k) / Float(count - 1) * Float(last), j = min(Int(t), last - 1), a = t - Float(j)
                return smoothed[j] + a * (smoothed[j + 1] - smoothed[j])
            })
        }
    }

    /// Whose value must stay within `headroom` for a level to count in `offset`: the target's
    /// (the edit's tone, with a guide), or what the correction makes of the level (without
    /// one, where the target is the frame's own values: a level that the flicker clipped in the
    /// brighter frames would count only in the darker ones, and the offsets' mean would lean).
    public enum HeadroomOf: Sendable { case target, corrected }

    /// See `offset(through:field:to:)`. (Without it, on the public cases, guided: the pencil
    /// sketches 0.3 to 0.9 dB lower, the video's global jitter 39.2 → 38.9 dB.)
    static let headroom: Float = 0.9
}

/// How far the frames' tone deviations from their window's (`ToneRelation.deviation`) are the
/// correction's own error, per channel, from the deviations of a window's frames, in order.
///
/// A corrected frame's tone against its guide differs from its window's for two reasons. One is
/// the correction's error: a fit's, a link's, a clipped value's prediction, each of them one
/// curve over the whole frame and new in every frame (what moves slowly, the anchor has taken
/// out). The other is what the frame shows: an edit that is not a function of the guide (a
/// pencil sketch's strokes, a stylisation, even a grade's saturation, which mixes the channels)
/// gives a guide value another mean as the picture changes, and that is the truth's, to be
/// kept. It differs between parts of the frame, or it changes as smoothly as the picture
/// moves. So the correction's share is the product of two shares, each of them in [0, 1]:
///   shared by the frame's two halves (the colours of a checkerboard over it,
///     `ToneWindow.measure`): (S − N) / S, with S the mean product of the halves' deviations and
///     N half their mean squared difference. The picture's own change shows in both halves
///     about as much as it differs between them (on the truths of my cases, shared against
///     apart, rms in levels of 255: `motion.mov`'s pencil sketch 15 against 14, `tour.mp4`'s
///     stylisation 3 to 9 against 8, the phone's pencil sketch 1 to 2 against 1.4);
///   new in each frame: (V − C) / V, with V the deviations' mean square and C the mean product
///     of consecutive frames' (a scrolling screen recording's text changes its tone at every
///     guide value the same over the whole frame, but from one frame to the next only a little).
/// Near 1 for a grade of a still picture, near 0 for a pencil sketch.
public struct ToneReliability: Sendable {
    private var shared = [Double](repeating: 0, count: 3), apart = [Double](repeating: 0, count: 3)
    private var square = [Double](repeating: 0, count: 3), consecutive = [Double](repeating: 0, count: 3)
    private var previous: ToneRelation?

    public init() {}

    /// Adds the next frame of the window: its tone, whole (`own`) and over its halves
    /// (`halves`), and the window's (`held`, `heldHalves`).
    public mutating func add(own: ToneRelation, halves: (ToneRelation, ToneRelation), held: ToneRelation,
                             heldHalves: (ToneRelation, ToneRelation)) {
        let n = 3 * ToneRelation.levels
        let deviation = ToneRelation(values: (0..<n).map { held.values[$0] - own.values[$0] }, weights: own.weights)
        for c in 0..<3 {
            for level in 0..<ToneRelation.levels {
                let i = c * ToneRelation.levels + level
                let a = Double(heldHalves.0.values[i] - halves.0.values[i]), b = Double(heldHalves.1.values[i] - halves.1.values[i])
                if a.isFinite && b.isFinite {
                    shared[c] += a * b
                    apart[c] += (a - b) * (a - b) / 2
                }
                let d = Double(deviation.values[i]), before = Double(previous?.values[i] ?? .nan)
                if d.isFinite && before.isFinite {
                    square[c] += (d * d + before * before) / 2
                    consecutive[c] += d * before
                }
            }
        }
        previous = deviation
    }

    /// Per channel, the correction's share of the deviations, in [0, 1].
    public var reliability: [Float] {
        (0..<3).map { c in
            let halves = shared[c] > 0 ? min(max((shared[c] - apart[c]) / shared[c], 0), 1) : 0
            let new = square[c] > 0 ? min(max((square[c] - consecutive[c]) / square[c], 0), 1) : 0
            return Float(halves * new)
        }
    }
}

/// Huber's M-estimate of the location of `values`: scale from the median absolute deviation,
/// the usual k = 1.345, which keeps 95% of a mean's precision on normal data. As precise as a
/// mean where the values scatter evenly (an interquartile mean's error was twice the mean's on a
/// uniform jitter), and the few that are wrong (a failed fit, clipped tones) pull it only so far.
func robustLocation(_ values: [Double]) -> Double {
    guard values.count > 2 else { return values.reduce(0, +) / Double(max(values.count, 1)) }
    let sorted = values.sorted()
    var centre = sorted[sorted.count / 2]
    let deviations = values.map { abs($0 - centre) }.sorted()
    let scale = 1.4826 * deviations[deviations.count / 2]
    guard scale > 1e-9 else { return centre }
    let bound = 1.345 * scale
    for _ in 0..<50 {
        let next = values.reduce(0.0) { $0 + centre + min(max($1 - centre, -bound), bound) } / Double(values.count)
        if abs(next - centre) < 1e-8 { return next }
        centre = next
    }
    return centre
}

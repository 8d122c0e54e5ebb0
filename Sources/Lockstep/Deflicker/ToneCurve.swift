import Foundation
import Tensor

/// A smooth tone curve on [0, 1]: piecewise linear through `knots` equally spaced knots, extended
/// linearly beyond the ends. It models what global flicker does to one colour channel (gain,
/// gamma, offset, or any smooth monotone mapping) without assuming a formula.
public struct ToneCurve: Sendable, Equatable {
    public static let knotCount = 17
    /// Curve values at v = k / (knotCount − 1).
    public var values: [Float]

    public init(values: [Float]) {
        precondition(values.count == Self.knotCount)
        self.values = values
    }

    public static let identity = ToneCurve(values: (0..<knotCount).map { Float($0) / Float(knotCount - 1) })

    /// The quantile levels `matching` fits a curve through.
    public static let matchingLevels = 128

    /// f(v), linear between knots and beyond the ends.
    @inline(__always)
    public func callAsFunction(_ v: Float) -> Float {
        let last = Self.knotCount - 1
        let t = v * Float(last)
        let i = min(max(Int(t.rounded(.down)), 0), last - 1)
        let a = t - Float(i)
        return values[i] + a * (values[i + 1] - values[i])
    }

    /// The weighted least-squares curve through the pairs (x, y), with a penalty on curvature so
    /// that knots with little data follow their neighbours, and a faint pull to the identity so
    /// that a channel with no data at all stays unchanged.
    public static func fit(x: UnsafePointer<Float>, y: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int,
                           curvaturePenalty: Double = 1e-3, identityPull: Double = 1e-5) -> ToneCurve {
        let k = knotCount, last = k - 1
        var ata = [Double](repeating: 0, count: k * k), atb = [Double](repeating: 0, count: k)
        var total = 0.0
        for i in 0..<count {
            let w = Double(weight[i])
            guard w > 0 else { continue }
            let t = min(max(Double(x[i]), 0), 1) * Double(last)
            let j = min(Int(t), last - 1), a = t - Double(j)
            let (p, q) = (1 - a, a), v = Double(y[i])
            ata[j * k + j] += w * p * p
            ata[j * k + j + 1] += w * p * q
            ata[(j + 1) * k + j] += w * p * q
            ata[(j + 1) * k + j + 1] += w * q * q
            atb[j] += w * p * v
            atb[j + 1] += w * q * v
            total += w
        }
        guard total > 0 else { return .identity }
        for i in 0..<(k * k) { ata[i] /= total }
        for i in 0..<k { atb[i] /= total }
        // Curvature: Σ (f[j−1] − 2 f[j] + f[j+1])², the second differences' normal equations.
        let stencil: [(Int, Double)] = [(-1, 1), (0, -2), (1, 1)]
        for j in 1..<last {
            for (da, ca) in stencil {
                for (db, cb) in stencil { ata[(j + da) * k + j + db] += curvaturePenalty * ca * cb }
            }
        }
        for j in 0..<k {
            ata[j * k + j] += identityPull
            atb[j] += identityPull * Double(j) / Double(last)
        }
        let solution = solveSymmetric(ata, atb, size: k)
        return ToneCurve(values: solution.map { Float($0) })
    }

    /// The curve that maps the distribution of x onto that of y (both weighted): quantile
    /// matching. Unlike a regression of y on x, it is not flattened when x and y are noisy
    /// versions of each other (regression dilution): two samples of one picture with no flicker
    /// between them give the identity, however much their detail differs. The matched quantiles
    /// are then fitted as by `fit`, so the curve is smooth and extends past the data; with ten
    /// times `fit`'s usual curvature penalty, because matched quantiles also carry what differs
    /// between the two pictures' content, and a curve that bends to follow that is fitting noise
    /// (on the public cases up to +0.4 dB on both kinds of flicker, and less brightness flicker).
    public static func matching(x: UnsafePointer<Float>, y: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int,
                                levels: Int = matchingLevels) -> ToneCurve {
        let bins = 4096, lower: Float = -0.5, upper: Float = 1.5, scale = Float(bins) / (upper - lower)
        var hx = [Double](repeating: 0, count: bins), hy = hx
        var total = 0.0
        // Each value's bin: (v − lower)·scale truncated, clamped to the bins (NaN to the first).
        // Eight at a time without `Int(_:)`'s range checks; the sums in the same order.
        @inline(__always) func bins8(_ p: UnsafePointer<Float>) -> SIMD8<UInt32> {
            let v = (UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) - lower) * scale
            let clamped = v.replacing(with: 0, where: .!(v .> 0)).replacing(with: Float(bins - 1), where: v .> Float(bins - 1))
            return nearestWholeNumbers(wholePart(clamped))
        }
        @inline(__always) func bin(_ v: Float) -> Int { min(max(Int((v - lower) * scale), 0), bins - 1) }
        hx.withUnsafeMutableBufferPointer { hxb in hy.withUnsafeMutableBufferPointer { hyb in
            let px = hxb.baseAddress!, py = hyb.baseAddress!
            var i = 0
            while i &+ 8 <= count {
                let bx = bins8(x + i), by = bins8(y + i)
                for k in 0..<8 {
                    let w = Double(weight[i &+ k])
                    guard w > 0 else { continue }
                    px[Int(bx[k])] += w
                    py[Int(by[k])] += w
                    total += w
                }
                i &+= 8
            }
            while i < count {
                let w = Double(weight[i])
                if w > 0 {
                    px[bin(x[i])] += w
                    py[bin(y[i])] += w
                    total += w
                }
                i &+= 1
            }
        } }
        guard total > 0 else { return .identity }
        func quantiles(_ histogram: [Double]) -> [Float] {
            var out = [Float](repeating: 0, count: levels)
            var cumulative = 0.0, bin = 0
            for q in 0..<levels {
                let target = (Double(q) + 0.5) / Double(levels) * total
                while bin < bins - 1 && cumulative + histogram[bin] < target { cumulative += histogram[bin]; bin += 1 }
                let within = histogram[bin] > 0 ? (target - cumulative) / histogram[bin] : 0.5
                out[q] = lower + (Float(bin) + Float(within)) / scale
            }
            return out
        }
        let qx = quantiles(hx), qy = quantiles(hy)
        let ones = [Float](repeating: 1, count: levels)
        return qx.withUnsafeBufferPointer { px in qy.withUnsafeBufferPointer { py in ones.withUnsafeBufferPointer { pw in
            fit(x: px.baseAddress!, y: py.baseAddress!, weight: pw.baseAddress!, count: levels, curvaturePenalty: 1e-2)
        } } }
    }

    /// self ∘ inner: inner first, then this curve (exact at the knots, linear between them).
    public func after(_ inner: ToneCurve) -> ToneCurve {
        ToneCurve(values: inner.values.map { self($0) })
    }

    /// The pointwise robust mean of several curves: knot by knot, Huber's M-estimate
    /// (`robustLocation`), the estimate the module makes wherever frames that each carry their own
    /// flicker are averaged. As precise as a mean where the curves scatter evenly, and the few that
    /// are wrong (a failed fit, a frame whose tones moved with its content) pull it only so far.
    /// (It was the interquartile mean: on a jitter drawn uniformly, as the evaluation's and
    /// FFmpeg's `eq` draw it, that estimate scatters 1.36 times as far as the mean over the same
    /// 31 frames, and without a guide the output's level follows it: the level drift of
    /// `scripts/eval-long`'s static camera, blind, 8.24 → 7.23.)
    ///
    /// `clippedAtWhite[i]`: whether curve i's frame was clipped at white (`FrameAppearance.clipsWhite`),
    /// so that its last knot only bounds the truth: it mapped the clipped level, not white; and
    /// `clippedAtBlack` likewise for the first knot. Where some curves are such at a knot, their
    /// number is trimmed from each end there (at most down to the median) before the estimate: a
    /// symmetric trim, so no bias where the flicker is symmetric, and clear of the bounds.
    /// (Averaged as values, the bounds put a pencil sketch's white paper, clipped in half the
    /// frames, a few levels grey in every frame.)
    public static func robustMean(_ curves: [ToneCurve], clippedAtWhite: [Bool] = [], clippedAtBlack: [Bool] = []) -> ToneCurve {
        guard !curves.isEmpty else { return .identity }
        let n = curves.count
        let bounds = Bounds(white: clippedAtWhite, black: clippedAtBlack)
        return ToneCurve(values: (0..<knotCount).map { j in
            let v = curves.map { Double($0.values[j]) }.sorted()
            let cut = min(bounds.count(at: j), (n - 1) / 2)
            return Float(robustLocation(Array(v[cut..<(n - cut)])))
        })
    }

    /// Which curves only bound the truth at the end knots (`robustMean`).
    struct Bounds {
        let white: [Bool], black: [Bool]
        let whiteCount: Int, blackCount: Int

        init(white: [Bool], black: [Bool]) {
            self.white = white
            self.black = black
            whiteCount = white.filter { $0 }.count
            blackCount = black.filter { $0 }.count
        }

        /// The flags that apply at knot j: black's at the first, white's at the last, none between.
        func flags(at j: Int) -> [Bool] { j == 0 ? black : (j == ToneCurve.knotCount - 1 ? white : []) }
        func count(at j: Int) -> Int { j == 0 ? blackCount : (j == ToneCurve.knotCount - 1 ? whiteCount : 0) }
    }

    /// The pointwise mean of several curves.
    public static func mean(_ curves: [ToneCurve]) -> ToneCurve {
        guard !curves.isEmpty else { return .identity }
        var sum = [Float](repeating: 0, count: knotCount)
        for curve in curves { for j in 0..<knotCount { sum[j] += curve.values[j] } }
        return ToneCurve(values: sum.map { $0 / Float(curves.count) })
    }

    /// Slopes a curve is held within: flicker neither flattens a range of tones nor stretches it
    /// more than this, and a curve fitted where data is thin must not, or its inverse would
    /// magnify noise without bound.
    public static let slopeLimits: ClosedRange<Float> = 0.25...4

    /// The curve with every segment's slope clamped to `slopeLimits`, keeping the knot nearest
    /// the middle of the range fixed; increasing, so it has an inverse.
    public var monotone: ToneCurve {
        var v = values
        let last = Self.knotCount - 1, middle = last / 2, h = 1 / Float(last)
        let low = Self.slopeLimits.lowerBound * h, high = Self.slopeLimits.upperBound * h
        for j in (middle + 1)...last { v[j] = v[j - 1] + min(max(v[j] - v[j - 1], low), high) }
        for j in stride(from: middle - 1, through: 0, by: -1) { v[j] = v[j + 1] - min(max(v[j + 1] - v[j], low), high) }
        return ToneCurve(values: v)
    }

    /// f⁻¹ tabulated on `[lower, upper]` in `count` steps, for the monotone version of this curve.
    public func inverseTable(lower: Float, upper: Float, count: Int) -> LookupTable {
        let f = monotone.values, last = Self.knotCount - 1
        let slopeLow = (f[1] - f[0]) * Float(last), slopeHigh = (f[last] - f[last - 1]) * Float(last)
        var table = [Float](repeating: 0, count: count)
        var j = 0
        for i in 0..<count {
            let u = lower + (upper - lower) * Float(i) / Float(count - 1)
            if u <= f[0] {
                table[i] = (u - f[0]) / slopeLow
            } else if u >= f[last] {
                table[i] = 1 + (u - f[last]) / slopeHigh
            } else {
                while j < last - 1 && f[j + 1] < u { j += 1 }
                while j > 0 && f[j] > u { j -= 1 }
                table[i] = (Float(j) + (u - f[j]) / (f[j + 1] - f[j])) / Float(last)
            }
        }
        return LookupTable(lower: lower, upper: upper, values: table)
    }

    /// f tabulated on `[lower, upper]` in `count` steps.
    public func table(lower: Float = 0, upper: Float = 1, count: Int = 4096) -> LookupTable {
        LookupTable(lower: lower, upper: upper,
                    values: (0..<count).map { self(lower + (upper - lower) * Float($0) / Float(count - 1)) })
    }
}

/// A function tabulated on [lower, upper]: nearest entry, clamped at the ends. With a few
/// thousand entries its error is far below an 8-bit level.
public struct LookupTable: Sendable {
    public let lower: Float
    public let upper: Float
    public let values: [Float]
    let scale: Float
    /// The last index, as a float to clamp to.
    let last: Float

    public init(lower: Float, upper: Float, values: [Float]) {
        self.lower = lower
        self.upper = upper
        self.values = values
        scale = Float(values.count - 1) / (upper - lower)
        last = Float(values.count - 1)
    }

    /// Index of `v`'s entry in `values` (the nearest). Clamped in floating point and rounded by
    /// adding 2²³, where a float's last mantissa bit is worth 1: no branch and no checked
    /// conversion, so that a loop of lookups can vectorise (as gathers).
    @inline(__always)
    public func index(_ v: Float) -> Int {
        let t = min(max((v - lower) * scale, 0), last)
        return Int((t + 0x1p23).bitPattern & 0x7F_FFFF)
    }

    /// `index` of eight values, lane by lane.
    @inline(__always)
    func indices(_ v: SIMD8<Float>) -> SIMD8<UInt32> {
        let scaled = (v - lower) * scale
        let t = scaled.replacing(with: 0, where: .!(scaled .> 0)).replacing(with: last, where: scaled .> last)
        return nearestWholeNumbers(t)
    }
}

/// Solves A x = b for a small symmetric positive-definite A (Cholesky, in Double).
func solveSymmetric(_ a: [Double], _ b: [Double], size n: Int) -> [Double] {
    var l = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
        for j in 0...i {
            var s = a[i * n + j]
            for p in 0..<j { s -= l[i * n + p] * l[j * n + p] }
            l[i * n + j] = i == j ? (max(s, 1e-12)).squareRoot() : s / l[j * n + j]
        }
    }
    var y = b
    for i in 0..<n {
        for p in 0..<i { y[i] -= l[i * n + p] * y[p] }
        y[i] /= l[i * n + i]
    }
    for i in stride(from: n - 1, through: 0, by: -1) {
        for p in (i + 1)..<n { y[i] -= l[p * n + i] * y[p] }
        y[i] /= l[i * n + i]
    }
    return y
}

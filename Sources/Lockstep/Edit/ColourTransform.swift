import Foundation
import Tensor

/// A colour-to-colour function learned from example pairs: a 3D look-up table over RGB with
/// trilinear interpolation (lattice `size`³, values = the edit delta at that colour).
///
/// Many edits are, wholly or in part, a function of colour alone (a grade, a tint, a tone curve).
/// That part does not need motion to be propagated: applied to each frame's own colours it is exact
/// under any motion and cannot flicker. It is also the fallback for content that matches nothing
/// in the references. Lattice points that no example reaches are filled by diffusion from their
/// neighbours, so the function is defined, smooth and bounded everywhere.
public struct ColourTransform: Sendable {
    public let size: Int
    /// The delta at each lattice point: ((r·size + g)·size + b)·4 + channel, and as the fourth
    /// value its support, how much the keyframe's colours decide it rather than its neighbours
    /// (`LatticeSystem.support`, or for `averaged` 1 or 0): 0 where the function is only the
    /// extension of what they showed. A pair of points along b is one 8-float vector with a
    /// point in each half.
    var lattice: [Float]

    /// Fits the delta `edited − original` as a function of `original`'s colour, weighting each
    /// pixel by `weights` (nil: all 1).
    ///
    /// Where the edit is a function of colour (a grade, a tint, a tone curve), the lattice is the
    /// one whose trilinear interpolation predicts the examples best, in the least-squares sense
    /// (`LatticeSystem`): exact to about 58 dB on the evaluation's grade of the cockatoo, where
    /// each lattice point as the mean delta of the examples around it, a local average, missed
    /// every example wherever the function bends (41 dB).
    ///
    /// Where it is not (the fit leaves 4 levels or more on at least 1% of the keyframe: strokes,
    /// texture, paint, a stylisation's flattening; the evaluation's grades are left within 0.8
    /// to 3.3 levels on 99% of it), the local average is kept (`averaged`). There the
    /// least-squares fit also learns what the edit does to the fine variations within a colour
    /// (a stylisation flattens a table's grain: a slope of −1 within its colour's cell), and
    /// applied to other frames it takes that for the edit's response to their changes of
    /// colour: on a static camera whose exposure drifts (the corpus's `motion.mov`, stylised),
    /// the table's level then swung from frame to frame and the E_warp ratio to the truth went
    /// from 0.42 to 1.22; a stronger membrane did not cure it (0.78 at a hundred times the
    /// weight), since within one colour's cell the examples outweigh any.
    /// `start`: another fit's `solution` for a nearby edit (`KeyframeEdit`'s turns), where the
    /// least-squares fit begins; with `leastSquares` false, the local average is taken without
    /// trying the least-squares fit (and `start` is kept as the solution).
    init(original: PlanarImage, edited: PlanarImage, weights: [Float]? = nil, size: Int = 17,
         start: (values: [SIMD4<Double>], membrane: Double)?, leastSquares: Bool = true) {
        precondition(original.channels == 3 && edited.channels == 3 && original.count == edited.count)
        precondition(weights == nil || weights!.count == original.planeSize)
        self.size = size
        guard leastSquares else {
            solution = start ?? ([], 0)
            isLeastSquares = false
            lattice = Self.averaged(original: original, edited: edited, weights: weights, size: size)
            let fit = Self.residuals(of: lattice, size: size, original: original, edited: edited)
            explained = fit.total > 0 ? Float(min(max(1 - fit.squared / fit.total, 0), 1)) : 1
            return
        }
        // The lattice holds the edit less its affine trend in colour (`AffineColourTrend`), and
        // the trend is added back at every point: the membrane then pulls the colours no
        // example reaches towards that trend rather than towards their nearest examples' delta.
        let trend = AffineColourTrend(original: original, edited: edited, weights: weights)
        let system = LatticeSystem(original: original, edited: trend.residual(original: original, edited: edited),
                                   weights: weights, size: size)
        let (values, membrane) = system.solved(start: start)
        solution = (values, membrane)
        lattice = [Float](repeating: 0, count: size * size * size * 4)
        let last = Float(size - 1)
        for (p, support) in system.support(membrane: membrane).enumerated() {
            let colour = SIMD3<Float>(Float(p / (size * size)), Float(p / size % size), Float(p % size)) / last
            let base = trend(colour)
            for c in 0..<3 { lattice[4 * p + c] = Float(values[p][c]) + base[c] }
            lattice[4 * p + 3] = Float(support)
        }
        var fit = Self.residuals(of: lattice, size: size, original: original, edited: edited)
        // A function of colour: within `departure` on all but 1% of the keyframe.
        isLeastSquares = fit.departing * 100 < original.planeSize
        if !isLeastSquares {
            lattice = Self.averaged(original: original, edited: edited, weights: weights, size: size)
            fit = Self.residuals(of: lattice, size: size, original: original, edited: edited)
        }
        explained = fit.total > 0 ? Float(min(max(1 - fit.squared / fit.total, 0), 1)) : 1
    }

    public init(original: PlanarImage, edited: PlanarImage, weights: [Float]? = nil, size: Int = 17) {
        self.init(original: original, edited: edited, weights: weights, size: size, start: nil)
    }

    /// Whether the lattice is the least-squares fit (the edit a function of colour), not the
    /// local average.
    let isLeastSquares: Bool

    /// The least-squares fit's lattice values and membrane weight (kept whichever lattice is
    /// used), for a later fit of a nearby edit to start from.
    let solution: (values: [SIMD4<Double>], membrane: Double)

    /// How much of the keyframe's edit this function explains: 1 − Σ|δ − f(original)|² / Σ|δ − δ̄|²
    /// over the keyframe, in [0, 1] (a grade about 1, a stylisation much less).
    public let explained: Float

    /// How the function given by `lattice` fits the keyframe's edit δ = edited − original: the
    /// number of pixels it leaves `departure` or more off in some channel, Σ |δ − f|², and
    /// Σ |δ − δ̄|² (δ̄ each channel's mean). Row by row, with no full-size temporary.
    static func residuals(of lattice: [Float], size: Int, original: PlanarImage,
                          edited: PlanarImage) -> (departing: Int, squared: Double, total: Double) {
        let w = original.width, h = original.height, n = original.planeSize
        var departing = 0, squared: Double = 0
        var sum = SIMD4<Double>.zero, sumOfSquares = SIMD4<Double>.zero
        lattice.withUnsafeBufferPointer { table in original.withUnsafeBufferPointer { o in edited.withUnsafeBufferPointer { e in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * w) { buffer in
                let f = buffer.baseAddress!
                for y in 0..<h {
                    let line = y &* w
                    let (r, g, b) = (o.baseAddress! + line, o.baseAddress! + n + line, o.baseAddress! + 2 * n + line)
                    evaluateRow(r, g, b, count: w, size: size, table: table.baseAddress!, into: f)
                    for x in 0..<w {
                        var delta = SIMD4<Double>.zero, far = false
                        for c in 0..<3 {
                            let k = c &* n &+ line &+ x, d = e[k] - o[k], off = d - f[4 &* x &+ c]
                            far = far || abs(off) >= departure
                            squared += Double(off) * Double(off)
                            delta[c] = Double(d)
                        }
                        if far { departing += 1 }
                        sum += delta
                        sumOfSquares += delta * delta
                    }
                }
            }
        } } }
        let total = (sumOfSquares - sum * sum / Double(max(n, 1))).sum()
        return (departing, squared, max(total, 0))
    }

    /// What counts as departing from the colour function: 4 levels of 255, four times the two
    /// images' rounding.
    static let departure: Float = 4 / 255

    /// The lattice (four values a point) with each point the weighted mean delta of the examples
    /// around it (their trilinear weights), and the points no example reaches filled by diffusion
    /// from their neighbours; the support is 1 at the first and 0 at the others.
    static func averaged(original: PlanarImage, edited: PlanarImage, weights: [Float]?, size: Int) -> [Float] {
        let points = size * size * size
        var sums = [Double](repeating: 0, count: points * 3)
        var mass = [Double](repeating: 0, count: points)
        let n = original.planeSize, last = Float(size - 1)
        original.withUnsafeBufferPointer { o in edited.withUnsafeBufferPointer { e in
            let (r, g, b) = (o.baseAddress!, o.baseAddress! + n, o.baseAddress! + 2 * n)
            let (er, eg, eb) = (e.baseAddress!, e.baseAddress! + n, e.baseAddress! + 2 * n)
            for i in 0..<n {
                let weight = Double(weights?[i] ?? 1)
                if weight <= 0 { continue }
                let delta = (Double(er[i] - r[i]), Double(eg[i] - g[i]), Double(eb[i] - b[i]))
                Self.forEachCorner(r[i] * last, g[i] * last, b[i] * last, size: size) { index, w in
                    let ww = weight * Double(w)
                    mass[index] += ww
                    sums[3 * index] += ww * delta.0
                    sums[3 * index + 1] += ww * delta.1
                    sums[3 * index + 2] += ww * delta.2
                }
            }
        } }
        var values = [Float](repeating: 0, count: points * 3)
        var known = [Bool](repeating: false, count: points)
        // A lattice point is known when enough examples fall near it; the threshold keeps a few
        // stray pixels from deciding a colour on their own.
        let threshold = 1e-3 * (mass.max() ?? 0)
        for p in 0..<points where mass[p] > threshold && mass[p] > 0 {
            known[p] = true
            for c in 0..<3 { values[3 * p + c] = Float(sums[3 * p + c] / mass[p]) }
        }
        Self.fillByDiffusion(&values, known: known, size: size)
        var lattice = [Float](repeating: 0, count: points * 4)
        for p in 0..<points {
            for c in 0..<3 { lattice[4 * p + c] = values[3 * p + c] }
            lattice[4 * p + 3] = known[p] ? 1 : 0
        }
        return lattice
    }

    /// The learned delta for `image`'s colours.
    public func delta(for image: PlanarImage) -> PlanarImage {
        precondition(image.channels == 3)
        var out = PlanarImage(uninitializedChannels: 3, height: image.height, width: image.width)
        let n = image.planeSize, size = self.size
        image.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                lattice.withUnsafeBufferPointer { table in
                    let (r, g, b) = (src.baseAddress!, src.baseAddress! + n, src.baseAddress! + 2 * n)
                    let (dr, dg, db) = (dst.baseAddress!, dst.baseAddress! + n, dst.baseAddress! + 2 * n)
                    let t = table.baseAddress!
                    parallelChunks(n, minimumChunk: 4096) { range in
                        let block = 1024
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * block) { buffer in
                            let values = buffer.baseAddress!
                            for start in Swift.stride(from: range.lowerBound, to: range.upperBound, by: block) {
                                let count = min(block, range.upperBound - start)
                                Self.evaluateRow(r + start, g + start, b + start, count: count, size: size, table: t, into: values)
                                for i in 0..<count {
                                    (dr[start &+ i], dg[start &+ i], db[start &+ i]) = (values[4 &* i], values[4 &* i &+ 1], values[4 &* i &+ 2])
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// The delta at one colour and its support (the lattice's four values), from the lattice
    /// `table` (trilinear). Each pair of corners along b is one 8-float vector (a corner in each
    /// half); the four (r, g) pairs are blended in it, then its halves along b.
    @inline(__always)
    static func evaluate(_ r: Float, _ g: Float, _ b: Float, size: Int, table t: UnsafePointer<Float>) -> SIMD4<Float> {
        let last = Float(size - 1)
        let (cr, cg, cb) = (min(max(r * last, 0), last), min(max(g * last, 0), last), min(max(b * last, 0), last))
        let (r0, g0, b0) = (min(Int(cr), size &- 2), min(Int(cg), size &- 2), min(Int(cb), size &- 2))
        let (fr, fg, fb) = (cr - Float(r0), cg - Float(g0), cb - Float(b0))
        let base = UnsafeRawPointer(t + ((r0 &* size &+ g0) &* size &+ b0) &* 4)
        let gStride = size &* 16, rStride = size &* size &* 16
        let c00 = base.loadUnaligned(as: SIMD8<Float>.self)
        let c01 = base.loadUnaligned(fromByteOffset: gStride, as: SIMD8<Float>.self)
        let c10 = base.loadUnaligned(fromByteOffset: rStride, as: SIMD8<Float>.self)
        let c11 = base.loadUnaligned(fromByteOffset: rStride &+ gStride, as: SIMD8<Float>.self)
        var acc = c00 * ((1 - fr) * (1 - fg))
        acc += c01 * ((1 - fr) * fg)
        acc += c10 * (fr * (1 - fg))
        acc += c11 * (fr * fg)
        return acc.lowHalf * (1 - fb) + acc.highHalf * fb
    }

    /// `evaluate` for a row of pixels (`count` values from each of r, g, b), into `out`, four
    /// values per pixel (the delta, then the support). Eight pixels at a time: their lattice
    /// cells and weights as vectors (the same operations as `evaluate`, so the same values),
    /// then each pixel's corners read and blended as vectors and stored whole (read back lane by
    /// lane, LLVM had split the blend into 24 scalar loads and products a pixel).
    @inline(__always)
    static func evaluateRow(_ r: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                            size: Int, table t: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let last = Float(size - 1), top = SIMD8<Float>(repeating: Float(size - 2))
        let gStride = size &* 16, rStride = size &* size &* 16
        let raw = UnsafeMutableRawPointer(out)
        let s = Float(size)
        var x = 0
        while x &+ 8 <= count {
            // For each channel: the lattice cell each value falls in (from 0 to the last but
            // one point) and where in it, as `evaluate` finds them.
            let vr = UnsafeRawPointer(r + x).loadUnaligned(as: SIMD8<Float>.self) * last
            let vg = UnsafeRawPointer(g + x).loadUnaligned(as: SIMD8<Float>.self) * last
            let vb = UnsafeRawPointer(b + x).loadUnaligned(as: SIMD8<Float>.self) * last
            // (min(max(v, 0), last) as `evaluate` takes it; a NaN to 0, which keeps the reads
            // inside the table.)
            let cr = vr.replacing(with: 0, where: .!(vr .> 0)).replacing(with: last, where: vr .> last)
            let cg = vg.replacing(with: 0, where: .!(vg .> 0)).replacing(with: last, where: vg .> last)
            let cb = vb.replacing(with: 0, where: .!(vb .> 0)).replacing(with: last, where: vb .> last)
            let wr = wholePart(cr), wg = wholePart(cg), wb = wholePart(cb)
            let r0 = wr.replacing(with: top, where: wr .> top), g0 = wg.replacing(with: top, where: wg .> top)
            let b0 = wb.replacing(with: top, where: wb .> top)
            let fr = cr - r0, fg = cg - g0, fb = cb - b0
            let index = nearestWholeNumbers(((r0 * s + g0) * s + b0) * 4)
            let w00 = (1 - fr) * (1 - fg), w01 = (1 - fr) * fg, w10 = fr * (1 - fg), w11 = fr * fg, wb0 = 1 - fb
            for i in 0..<8 {
                let base = UnsafeRawPointer(t + Int(index[i]))
                var acc = base.loadUnaligned(as: SIMD8<Float>.self) * w00[i]
                acc += base.loadUnaligned(fromByteOffset: gStride, as: SIMD8<Float>.self) * w01[i]
                acc += base.loadUnaligned(fromByteOffset: rStride, as: SIMD8<Float>.self) * w10[i]
                acc += base.loadUnaligned(fromByteOffset: rStride &+ gStride, as: SIMD8<Float>.self) * w11[i]
                raw.storeBytes(of: acc.lowHalf * wb0[i] + acc.highHalf * fb[i], toByteOffset: (x &+ i) &* 16, as: SIMD4<Float>.self)
            }
            x &+= 8
        }
        while x < count {
            raw.storeBytes(of: evaluate(r[x], g[x], b[x], size: size, table: t), toByteOffset: x &* 16, as: SIMD4<Float>.self)
            x &+= 1
        }
    }

    /// The 8 lattice corners around a colour (in lattice units) and their trilinear weights.
    @inline(__always)
    static func forEachCorner(_ r: Float, _ g: Float, _ b: Float, size: Int, _ body: (Int, Float) -> Void) {
        let last = Float(size - 1)
        let (cr, cg, cb) = (min(max(r, 0), last), min(max(g, 0), last), min(max(b, 0), last))
        let (r0, g0, b0) = (min(Int(cr), size - 2), min(Int(cg), size - 2), min(Int(cb), size - 2))
        let (fr, fg, fb) = (cr - Float(r0), cg - Float(g0), cb - Float(b0))
        for corner in 0..<8 {
            let (dr, dg, db) = (corner >> 2, (corner >> 1) & 1, corner & 1)
            let w = (dr == 1 ? fr : 1 - fr) * (dg == 1 ? fg : 1 - fg) * (db == 1 ? fb : 1 - fb)
            body(((r0 + dr) * size + (g0 + dg)) * size + (b0 + db), w)
        }
    }

    /// Unknown lattice points take the nearest known value, then the mean of their neighbours,
    /// repeated until settled: the harmonic extension of the known values (smooth, and never
    /// beyond their range).
    static func fillByDiffusion(_ lattice: inout [Float], known: [Bool], size: Int) {
        guard known.contains(true), known.contains(false) else { return }
        let unknown = known.indices.filter { !known[$0] }
        // Start from the nearest known value (breadth-first), so the diffusion has little to do.
        var filled = known
        var frontier = known.indices.filter { known[$0] }
        while !frontier.isEmpty {
            var next: [Int] = []
            for p in frontier {
                let b = p % size, g = (p / size) % size, r = p / (size * size)
                for (dr, dg, db) in [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] {
                    let (nr, ng, nb) = (r + dr, g + dg, b + db)
                    guard nr >= 0, nr < size, ng >= 0, ng < size, nb >= 0, nb < size else { continue }
                    let q = (nr * size + ng) * size + nb
                    if filled[q] { continue }
                    filled[q] = true
                    for c in 0..<3 { lattice[3 * q + c] = lattice[3 * p + c] }
                    next.append(q)
                }
            }
            frontier = next
        }
        for _ in 0..<(4 * size) {
            var change: Float = 0
            for p in unknown {
                let b = p % size, g = (p / size) % size, r = p / (size * size)
                var sum = (Float(0), Float(0), Float(0)), count: Float = 0
                for (dr, dg, db) in [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)] {
                    let (nr, ng, nb) = (r + dr, g + dg, b + db)
                    guard nr >= 0, nr < size, ng >= 0, ng < size, nb >= 0, nb < size else { continue }
                    let q = (nr * size + ng) * size + nb
                    sum.0 += lattice[3 * q]; sum.1 += lattice[3 * q + 1]; sum.2 += lattice[3 * q + 2]
                    count += 1
                }
                let new = (sum.0 / count, sum.1 / count, sum.2 / count)
                change = max(change, abs(new.0 - lattice[3 * p]), abs(new.1 - lattice[3 * p + 1]), abs(new.2 - lattice[3 * p + 2]))
                (lattice[3 * p], lattice[3 * p + 1], lattice[3 * p + 2]) = new
            }
            if change < 1e-5 { break }
        }
    }
}

/// The weighted least-squares affine function of colour closest to an edit's delta, δ ≈ A c + t
/// per channel: the trend a colour lookup extends beyond the colours its examples reach. A
/// grade's delta grows with saturation and brightness; held towards the nearest example's delta
/// instead, a colour the keyframe never showed got less of the grade (the bench clip, graded on
/// its frame 0: by frame 250 a quarter of the pixels fall in 8-level colour cells the keyframe
/// has no pixel in). The slopes are held towards 0 in the directions the examples' colours
/// barely span (a ridge of 10⁻³ of their weight, about 8 levels of spread), so a keyframe of few
/// colours does not extrapolate a slope it cannot know.
struct AffineColourTrend {
    /// Per channel: the slopes on r, g, b, then the constant.
    let coefficients: [SIMD4<Float>]

    init(original: PlanarImage, edited: PlanarImage, weights: [Float]?) {
        let n = original.planeSize
        // Σ w x xᵀ (a row per component of x = (r, g, b, 1)) and Σ w δ_c x per channel.
        var moments = [SIMD4<Double>](repeating: .zero, count: 4), products = [SIMD4<Double>](repeating: .zero, count: 3)
        original.withUnsafeBufferPointer { o in edited.withUnsafeBufferPointer { e in
            for i in 0..<n {
                let w = Double(weights?[i] ?? 1)
                guard w > 0 else { continue }
                let x = SIMD4<Double>(Double(o[i]), Double(o[n &+ i]), Double(o[2 &* n &+ i]), 1), wx = w * x
                for a in 0..<4 { moments[a] += wx[a] * x }
                for c in 0..<3 { products[c] += Double(e[c &* n &+ i] - o[c &* n &+ i]) * wx }
            }
        } }
        var xx = (0..<16).map { moments[$0 / 4][$0 % 4] }
        let total = xx[15]
        guard total > 0 else {
            coefficients = [SIMD4<Float>](repeating: .zero, count: 3)
            return
        }
        for a in 0..<3 { xx[5 * a] += 1e-3 * total }
        coefficients = (0..<3).map { c in
            let solution = solveSymmetric(xx, (0..<4).map { products[c][$0] }, size: 4)
            return SIMD4<Float>(solution.map { Float($0) })
        }
    }

    /// The trend's delta at `colour` (r, g, b in [0, 1]).
    func callAsFunction(_ colour: SIMD3<Float>) -> SIMD3<Float> {
        let x = SIMD4<Float>(colour.x, colour.y, colour.z, 1)
        return SIMD3<Float>((coefficients[0] * x).sum(), (coefficients[1] * x).sum(), (coefficients[2] * x).sum())
    }

    /// `edited` less the trend at each pixel's colour in `original`: the part of the edit the
    /// trend does not explain, as an edited picture of `original`.
    func residual(original: PlanarImage, edited: PlanarImage) -> PlanarImage {
        var out = edited
        let n = original.planeSize, k = coefficients
        original.withUnsafeBufferPointer { o in out.withUnsafeMutableBufferPointer { e in
            parallelChunks(n, minimumChunk: 4096) { range in
                for i in range {
                    let x = SIMD4<Float>(o[i], o[n &+ i], o[2 &* n &+ i], 1)
                    for c in 0..<3 { e[c &* n &+ i] -= (k[c] * x).sum() }
                }
            }
        } }
        return out
    }
}

/// The four Catmull–Rom (Keys, a = −½) weights for samples at −1, 0, 1, 2 when interpolating at
/// fraction `t` ∈ [0, 1) past sample 0: exact for quadratics, C¹-smooth, a compact stand-in for
/// band-limited interpolation where a long windowed sinc costs too much (gathers at arbitrary
/// positions).
@inlinable @inline(__always)
public func catmullRomWeights(_ t: Float) -> SIMD4<Float> {
    let t2 = t * t, t3 = t2 * t
    return SIMD4(0.5 * (-t3 + 2 * t2 - t), 0.5 * (3 * t3 - 5 * t2 + 2), 0.5 * (-3 * t3 + 4 * t2 + t), 0.5 * (t3 - t2))
}

/// The four cubic B-spline weights for coefficients at −1, 0, 1, 2 at fraction `t` ∈ [0, 1) past
/// coefficient 0. On coefficients from `bSplineCoefficients`, this interpolates the samples with a
/// response much closer to the ideal band-limited one than Catmull–Rom's, at the same four taps:
/// detail carried by a sub-pixel shift keeps its contrast whatever the shift's phase.
@inlinable @inline(__always)
public func cubicBSplineWeights(_ t: Float) -> SIMD4<Float> {
    let t2 = t * t, t3 = t2 * t, u = 1 - t
    return SIMD4(u * u * u, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3) * (1 / 6 as Float)
}

/// `cubicBSplineWeights` for eight positions at once, tap by tap: the same operations lane by
/// lane, so the same values.
@inlinable @inline(__always)
public func cubicBSplineWeights8(_ t: SIMD8<Float>) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
    let t2 = t * t, t3 = t2 * t, u = 1 - t, sixth = 1 / 6 as Float
    return (u * u * u * sixth, (3 * t3 - 6 * t2 + 4) * sixth, (-3 * t3 + 3 * t2 + 3 * t + 1) * sixth, t3 * sixth)
}

/// Where coefficient `i` (from −1 to `count` + 1) lies under the prefilter's whole-sample
/// symmetric borders (c[−1] = c[1], c[n] = c[n − 2]; `mirroredIndex(_:length:padded:)` is the
/// half-sample kind the resampling filters use): a sampler that clamps instead reads other
/// coefficients than the prefilter assumed, and the first and last pixels of an image no longer
/// come back as they were.
@inlinable @inline(__always)
public func wholeSampleMirroredIndex(_ i: Int, count n: Int) -> Int {
    if i < 0 { return min(0 &- i, n &- 1) }
    if i >= n { return max(2 &* (n &- 1) &- i, 0) }
    return i
}

extension PlanarImage {
    /// The cubic B-spline coefficients that interpolate this image (Unser's recursive prefilter,
    /// along rows then columns, mirror-symmetric borders): sampling them with
    /// `cubicBSplineWeights`, the coefficients beyond the borders read through
    /// `wholeSampleMirroredIndex`, gives back every sample exactly, and smooth band-limited values
    /// between.
    public func bSplineCoefficients() -> PlanarImage {
        var out = self
        let w = width, h = height
        out.withUnsafeMutableBufferPointer { buffer in
            let p = buffer.baseAddress!
            // Rows eight at a time too, through a scratch strip holding them interleaved: one
            // row at a time, each step of the recursion waited on the one before.
            let strips = (channels * h + 7) / 8
            parallelChunks(strips, minimumChunk: 2) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 8 * w) { scratch in
                    let strip = scratch.baseAddress!
                    for index in range {
                        let first = index * 8, count = min(8, channels * h - first)
                        guard count == 8 else {
                            for row in first..<(first + count) { bSplinePrefilter(p + row * w, count: w, stride: 1) }
                            continue
                        }
                        for r in 0..<8 { let line = p + (first + r) * w; for x in 0..<w { strip[x &* 8 &+ r] = line[x] } }
                        bSplinePrefilter8(strip, count: w, stride: 8)
                        for r in 0..<8 { let line = p + (first + r) * w; for x in 0..<w { line[x] = strip[x &* 8 &+ r] } }
                    }
                }
            }
            // Columns eight at a time (`bSplinePrefilter8`): one column at a time read a float
            // from every cache line it touched, four times over.
            let blocks = (w + 7) / 8
            parallelChunks(channels * blocks, minimumChunk: 4) { range in
                for block in range {
                    let ch = block / blocks, x = (block % blocks) * 8
                    if x + 8 <= w {
                        bSplinePrefilter8(p + ch * w * h + x, count: h, stride: w)
                    } else {
                        for column in x..<w { bSplinePrefilter(p + ch * w * h + column, count: h, stride: w) }
                    }
                }
            }
        }
        return out
    }
}

/// `bSplinePrefilter` on eight adjacent lines at once (eight floats at each of `count` places
/// `stride` apart): the same operations lane by lane, so the same values.
@usableFromInline
func bSplinePrefilter8(_ c: UnsafeMutablePointer<Float>, count n: Int, stride s: Int) {
    guard n > 1 else { return }
    let z = Float(3).squareRoot() - 2
    @inline(__always) func load(_ k: Int) -> SIMD8<Float> { UnsafeRawPointer(c + k &* s).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) func store(_ v: SIMD8<Float>, _ k: Int) { UnsafeMutableRawPointer(c + k &* s).storeBytes(of: v, as: SIMD8<Float>.self) }
    for k in 0..<n { store(load(k) * 6, k) }
    var sum = SIMD8<Float>(), zk: Float = 1
    for k in 0..<min(n, 16) { sum += zk * load(k); zk *= z }
    store(sum, 0)
    for k in 1..<n { store(load(k) + z * load(k &- 1), k) }
    store((z / (z * z - 1)) * (load(n &- 1) + z * load(n &- 2)), n &- 1)
    for k in stride(from: n &- 2, through: 0, by: -1) { store(z * (load(k &+ 1) - load(k)), k) }
}

/// The cubic B-spline prefilter in place on `count` values `stride` apart: a causal and an
/// anti-causal first-order recursion with pole √3 − 2, gain 6.
@usableFromInline
func bSplinePrefilter(_ c: UnsafeMutablePointer<Float>, count n: Int, stride s: Int) {
    guard n > 1 else { return }
    let z = Float(3).squareRoot() - 2
    for k in 0..<n { c[k &* s] *= 6 }
    // Causal start: the mirrored past, truncated where z^k is below float precision.
    var sum: Float = 0, zk: Float = 1
    for k in 0..<min(n, 16) { sum += zk * c[k &* s]; zk *= z }
    c[0] = sum
    for k in 1..<n { c[k &* s] += z * c[(k &- 1) &* s] }
    c[(n &- 1) &* s] = (z / (z * z - 1)) * (c[(n &- 1) &* s] + z * c[(n &- 2) &* s])
    for k in stride(from: n &- 2, through: 0, by: -1) { c[k &* s] = z * (c[(k &+ 1) &* s] - c[k &* s]) }
}

/// The four Catmull–Rom (Keys, a = −½) weights for samples at −1, 0, 1, 2 when interpolating at
/// fraction `t` ∈ [0, 1) past sample 0: exact for quadratics, C¹-smooth, a compact stand-in for
/// band-limited interpolation where a long windowed sinc costs too much (gathers at arbitrary
/// positions).
@inlinable @inline(__always)
public func catmullRomWeights(_ t: Float) -> SIMD4<Float> {
    let t2 = t * t, t3 = t2 * t
    return SIMD4(0.5 * (-t3 + 2 * t2 - t), 0.5 * (3 * t3 - 5 * t2 + 2), 0.5 * (-3 * t3 + 4 * t2 + t), 0.5 * (t3 - t2))
}

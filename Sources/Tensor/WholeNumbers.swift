/// Whole numbers from floats eight lanes at a time, for loops that index tables and images:
/// `Int(_:)` and `rounded(_:)` on a vector are a checked conversion or a call per lane, which
/// keep such loops scalar. Both work by adding 2²³, where a float's last mantissa bit is worth 1.

/// The whole part of each lane, for 0 ≤ v < 2²³ (as `Int(v)` gives it): adding 2²³ rounds to
/// the nearest whole number, a step back where that went up.
@inlinable @inline(__always)
public func wholePart(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let magic = SIMD8<Float>(repeating: 0x1p23)
    let nearest = (v + magic) - magic
    return nearest.replacing(with: nearest - 1, where: nearest .> v)
}

/// The nearest whole number to each lane, for 0 ≤ v < 2²³ (a whole-valued lane exactly), as an
/// integer: after adding 2²³ it is the float's mantissa.
@inlinable @inline(__always)
public func nearestWholeNumbers(_ v: SIMD8<Float>) -> SIMD8<UInt32> {
    unsafeBitCast(v + SIMD8(repeating: 0x1p23), to: SIMD8<UInt32>.self) & SIMD8(repeating: 0x7F_FFFF)
}

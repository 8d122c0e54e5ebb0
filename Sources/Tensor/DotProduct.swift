/// Σ a[i]·b[i] for `count` a multiple of 8, in eight SIMD lanes. A plain loop is a strict
/// left-to-right reduction that the compiler may not reorder, so it runs one multiply at a time;
/// eight partial sums let it use whole vector registers.
@inlinable @inline(__always)
public func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    var sum = SIMD8<Float>()
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i < count {
        let x = ra.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
        let y = rb.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
        sum = x * y + sum
        i &+= 8
    }
    return sum.sum()
}

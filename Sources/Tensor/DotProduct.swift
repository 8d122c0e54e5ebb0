/// `out[j] = Σ query[i]·keys[j·length + i]` for `count` keys stored one after another, each of
/// `length` values (a multiple of 8). Four keys go at a time (then two, then one), so each piece
/// of the query is loaded once for several products, with fused multiply–adds in eight lanes per
/// key. (A plain loop is a strict left-to-right reduction that the compiler may not reorder, one
/// multiply at a time.)
@inlinable @inline(__always)
public func dotProducts(_ query: UnsafePointer<Float>, keys: UnsafePointer<Float>, length: Int, count: Int,
                        into out: UnsafeMutablePointer<Float>) {
    let q = UnsafeRawPointer(query), k = UnsafeRawPointer(keys), rowBytes = length &* 4
    var j = 0
    while j &+ 4 <= count {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        let k0 = k + j &* rowBytes, k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes
        var i = 0
        while i < rowBytes {
            let x = q.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self)
            s0.addProduct(x, k0.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            s1.addProduct(x, k1.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            s2.addProduct(x, k2.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            s3.addProduct(x, k3.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            i &+= 32
        }
        out[j] = lanesSum(s0); out[j &+ 1] = lanesSum(s1); out[j &+ 2] = lanesSum(s2); out[j &+ 3] = lanesSum(s3)
        j &+= 4
    }
    if j &+ 2 <= count {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        let k0 = k + j &* rowBytes, k1 = k0 + rowBytes
        var i = 0
        while i < rowBytes {
            let x = q.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self)
            s0.addProduct(x, k0.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            s1.addProduct(x, k1.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            i &+= 32
        }
        out[j] = lanesSum(s0); out[j &+ 1] = lanesSum(s1)
        j &+= 2
    }
    if j < count {
        var s = SIMD8<Float>()
        let kj = k + j &* rowBytes
        var i = 0
        while i < rowBytes {
            s.addProduct(q.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self), kj.loadUnaligned(fromByteOffset: i, as: SIMD8<Float>.self))
            i &+= 32
        }
        out[j] = lanesSum(s)
    }
}

/// The sum of eight lanes as a tree (halves added in whole registers): `sum()` adds them one
/// after another, eight dependent additions.
@inlinable @inline(__always)
public func lanesSum(_ v: SIMD8<Float>) -> Float {
    let four = v.lowHalf + v.highHalf, two = four.lowHalf + four.highHalf
    return two[0] + two[1]
}

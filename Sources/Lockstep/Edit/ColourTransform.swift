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
    /// The delta at each lattice point: ((r·size + g)·size + b)·3 + channel; two zeros after the
    /// last, so eight values can be read from any point's pair along b.
    var lattice: [Float]

    /// Fits the delta `edited − original` as a function of `original`'s colour, weighting each
    /// pixel by `weights` (nil: all 1).
    public init(original: PlanarImage, edited: PlanarImage, weights: [Float]? = nil, size: Int = 17) {
        precondition(original.channels == 3 && edited.channels == 3 && original.count == edited.count)
        self.size = size
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
        lattice = [Float](repeating: 0, count: points * 3)
        var known = [Bool](repeating: false, count: points)
        // A lattice point is known when enough examples fall near it; the threshold keeps a few
        // stray pixels from deciding a colour on their own.
        let threshold = 1e-3 * (mass.max() ?? 0)
        for p in 0..<points where mass[p] > threshold && mass[p] > 0 {
            known[p] = true
            for c in 0..<3 { lattice[3 * p + c] = Float(sums[3 * p + c] / mass[p]) }
        }
        Self.fillByDiffusion(&lattice, known: known, size: size)
        lattice += [0, 0]
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
                        for i in range {
                            (dr[i], dg[i], db[i]) = Self.evaluate(r[i], g[i], b[i], size: size, table: t)
                        }
                    }
                }
            }
        }
        return out
    }

    /// The delta at one colour, from the lattice `table` (trilinear). Each pair of corners along b
    /// is six adjacent values, read as one vector; the four (r, g) pairs are blended in it.
    @inline(__always)
    static func evaluate(_ r: Float, _ g: Float, _ b: Float, size: Int, table t: UnsafePointer<Float>) -> (Float, Float, Float) {
        let last = Float(size - 1)
        let (cr, cg, cb) = (min(max(r * last, 0), last), min(max(g * last, 0), last), min(max(b * last, 0), last))
        let (r0, g0, b0) = (min(Int(cr), size &- 2), min(Int(cg), size &- 2), min(Int(cb), size &- 2))
        let (fr, fg, fb) = (cr - Float(r0), cg - Float(g0), cb - Float(b0))
        let base = UnsafeRawPointer(t + ((r0 &* size &+ g0) &* size &+ b0) &* 3)
        let gStride = size &* 12, rStride = size &* size &* 12
        let c00 = base.loadUnaligned(as: SIMD8<Float>.self)
        let c01 = base.loadUnaligned(fromByteOffset: gStride, as: SIMD8<Float>.self)
        let c10 = base.loadUnaligned(fromByteOffset: rStride, as: SIMD8<Float>.self)
        let c11 = base.loadUnaligned(fromByteOffset: rStride &+ gStride, as: SIMD8<Float>.self)
        var acc = c00 * ((1 - fr) * (1 - fg))
        acc += c01 * ((1 - fr) * fg)
        acc += c10 * (fr * (1 - fg))
        acc += c11 * (fr * fg)
        let wb0 = 1 - fb
        return (wb0 * acc[0] + fb * acc[3], wb0 * acc[1] + fb * acc[4], wb0 * acc[2] + fb * acc[5])
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

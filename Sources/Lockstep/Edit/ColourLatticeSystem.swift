import Tensor

/// The least-squares problem behind `ColourTransform`: lattice values L (size³ points, three
/// channels) such that each example's trilinear interpolation Σₐ wₐ L[cₐ] over the 8 corners of
/// its colour's cell predicts its delta, minimising
///   Σᵢ ωᵢ |Σₐ wᵢₐ L[cᵢₐ] − δᵢ|²  +  μ Σ_{p~q} |L[p] − L[q]|²
/// (ωᵢ the example's weight, p ~ q neighbouring lattice points). Its normal equations couple each
/// point with the 27 points of the cells around it, so they are stored as a 27-point stencil and
/// solved by conjugate gradients.
struct LatticeSystem {
    let size: Int
    var points: Int { size * size * size }
    /// The normal matrix of the examples: point p's coefficient of point p + offset(o) at
    /// o·points + p (o = (dr + 1)·9 + (dg + 1)·3 + (db + 1)): a plane per stencil position, so
    /// that a product runs along contiguous points.
    var matrix: [Double]
    /// Σᵢ ωᵢ wᵢₐ δᵢ at each point, three channels; the fourth, Σᵢ ωᵢ wᵢₐ |δᵢ|².
    var rhs: [SIMD4<Double>]

    init(original: PlanarImage, edited: PlanarImage, weights: [Float]?, size: Int) {
        self.size = size
        let cells = (size - 1) * (size - 1) * (size - 1)
        // Per cell, Σ ω wₐ w_b (8 × 8) and Σ ω wₐ δ (8 corners × 4), in two halves of the image
        // summed in a fixed order, so the fit does not depend on the number of cores.
        let perCell = 64 + 32
        var first = [Double](repeating: 0, count: cells * perCell), second = first
        let n = original.planeSize, last = Float(size - 1), s1 = size - 1
        original.withUnsafeBufferPointer { o in edited.withUnsafeBufferPointer { e in
        first.withUnsafeMutableBufferPointer { h0 in second.withUnsafeMutableBufferPointer { h1 in
            let (r, g, b) = (o.baseAddress!, o.baseAddress! + n, o.baseAddress! + 2 * n)
            let (er, eg, eb) = (e.baseAddress!, e.baseAddress! + n, e.baseAddress! + 2 * n)
            let sums = [h0.baseAddress!, h1.baseAddress!]
            parallelChunks(2) { halves in
                for half in halves {
                    let acc = sums[half]
                    for i in (n * half / 2)..<(n * (half + 1) / 2) {
                        let omega = Double(weights?[i] ?? 1)
                        if !(omega > 0) { continue }
                        let (cr, cg, cb) = (Self.clamped(r[i] * last, last), Self.clamped(g[i] * last, last), Self.clamped(b[i] * last, last))
                        let (r0, g0, b0) = (min(Int(cr), size &- 2), min(Int(cg), size &- 2), min(Int(cb), size &- 2))
                        let (fr, fg, fb) = (Double(cr - Float(r0)), Double(cg - Float(g0)), Double(cb - Float(b0)))
                        // The corners' weights, corner a = dr·4 + dg·2 + db.
                        let wr = SIMD8<Double>(1 - fr, 1 - fr, 1 - fr, 1 - fr, fr, fr, fr, fr)
                        let wg = SIMD8<Double>(1 - fg, 1 - fg, fg, fg, 1 - fg, 1 - fg, fg, fg)
                        let wb = SIMD8<Double>(1 - fb, fb, 1 - fb, fb, 1 - fb, fb, 1 - fb, fb)
                        let w = wr * wg * wb, ww = omega * w
                        let cell = acc + ((r0 &* s1 &+ g0) &* s1 &+ b0) &* perCell
                        let raw = UnsafeMutableRawPointer(cell)
                        for a in 0..<8 {
                            let row = raw.load(fromByteOffset: a &* 64, as: SIMD8<Double>.self)
                            raw.storeBytes(of: row + ww[a] * w, toByteOffset: a &* 64, as: SIMD8<Double>.self)
                        }
                        var delta = SIMD4<Double>(Double(er[i] - r[i]), Double(eg[i] - g[i]), Double(eb[i] - b[i]), 0)
                        // |δ|² in the fourth lane: the corners' weights sum to 1, so the points'
                        // fourth values sum to Σ ω |δ|² (for σ², in `solved`).
                        delta[3] = (delta * delta).sum()
                        for a in 0..<8 {
                            let at = 512 &+ a &* 32
                            let v = raw.load(fromByteOffset: at, as: SIMD4<Double>.self)
                            raw.storeBytes(of: v + ww[a] * delta, toByteOffset: at, as: SIMD4<Double>.self)
                        }
                    }
                }
            }
        } } } }
        // Each cell's sums onto its corners' stencils.
        var matrix = [Double](repeating: 0, count: size * size * size * 27)
        var rhs = [SIMD4<Double>](repeating: .zero, count: size * size * size)
        for r0 in 0..<s1 { for g0 in 0..<s1 { for b0 in 0..<s1 {
            let c = ((r0 * s1 + g0) * s1 + b0) * perCell
            for a in 0..<8 {
                let (ar, ag, ab) = (a >> 2, (a >> 1) & 1, a & 1)
                let p = ((r0 + ar) * size + g0 + ag) * size + b0 + ab
                for bCorner in 0..<8 {
                    let (br, bg, bb) = (bCorner >> 2, (bCorner >> 1) & 1, bCorner & 1)
                    let o = (br - ar + 1) * 9 + (bg - ag + 1) * 3 + (bb - ab + 1)
                    matrix[o * size * size * size + p] += first[c + 8 * a + bCorner] + second[c + 8 * a + bCorner]
                }
                for ch in 0..<4 { rhs[p][ch] += first[c + 64 + 4 * a + ch] + second[c + 64 + 4 * a + ch] }
            }
        } } }
        self.matrix = matrix
        self.rhs = rhs
    }

    /// min(max(v, 0), last), a NaN to 0.
    @inline(__always)
    static func clamped(_ v: Float, _ last: Float) -> Float { v > 0 ? (v < last ? v : last) : 0 }

    /// The lattice values, the membrane's weight chosen from the examples themselves (empirical
    /// Bayes): a Gaussian prior on the differences between neighbouring points, of variance ρ²,
    /// and noise of variance σ² on the examples make the most probable lattice the one with
    /// μ = σ² / ρ². Both are estimated from the fit and the fit made again, until μ settles
    /// (three to five rounds). A grade, which colour explains to the 8-bit rounding, gets a
    /// membrane too weak to bend it (its fit is exact to 58 dB on the evaluation's cockatoo); a
    /// stylisation, whose strokes colour explains only on average, one about 250 times
    /// stronger, so that a colour a few strokes reach does not swing to fit them. All zero
    /// where there are no examples.
    /// `start`, a solution of a nearby problem (the same keyframe's edit, a little changed), is
    /// where the membrane's estimate and the fits begin: they then settle in fewer rounds.
    func solved(start: (values: [SIMD4<Double>], membrane: Double)? = nil) -> (values: [SIMD4<Double>], membrane: Double) {
        let n = points
        var examples: Double = 0, trace: Double = 0
        for p in 0..<n {
            trace += matrix[13 * n + p]
            for o in 0..<27 { examples += matrix[o * n + p] }
        }
        guard trace > 0, examples > 0 else { return ([SIMD4<Double>](repeating: .zero, count: n), 0) }
        let links = self.links
        // How much each link's difference says of ρ²: as much as its two ends have examples.
        let support = links.map { (matrix[13 * n + $0.p] * matrix[13 * n + $0.q]).squareRoot() }
        let supportTotal = support.reduce(0, +)
        // The membrane is never weaker than 10⁻⁴ of the examples' mean weight per point: an exact
        // fit (σ² = 0) would otherwise leave the points no example reaches undetermined.
        let weakest = 1e-4 * trace / Double(n)
        // Nor stronger than 10⁴ times it: an edit all but absent (a faint sticker on an 8-bit
        // keyframe, its deltas a fraction of a level) leaves the neighbours' differences near 0
        // and the estimate without bound, and at 10³⁴ times the examples the solve lost them.
        let strongest = 1e4 * trace / Double(n)
        var mu = min(max(start?.membrane ?? weakest, weakest), strongest)
        var x = start?.values.count == n ? start!.values : [SIMD4<Double>](repeating: .zero, count: n)
        for _ in 0..<Self.rounds {
            // The membrane need not be known closely: each round's fit to a residual of 10⁻⁵,
            // the last one's to 10⁻¹².
            x = solved(membrane: mu, from: x, links: links, tolerance: 1e-10)
            var sigma2: Double = 0, rho2: Double = 0
            let product = applied(x, membrane: 0, links: links)
            for p in 0..<n {
                let fitted = x[p] * product[p] - 2 * x[p] * rhs[p]
                sigma2 += fitted[0] + fitted[1] + fitted[2] + rhs[p][3]
            }
            sigma2 /= examples
            for (l, link) in links.enumerated() {
                let d = x[link.p] - x[link.q]
                rho2 += support[l] * (d * d).sum()
            }
            rho2 /= max(supportTotal, .leastNormalMagnitude)
            let next = min(max(sigma2 / rho2, weakest), strongest)
            guard next.isFinite else { break }
            let settled = abs(next - mu) <= 0.05 * mu
            mu = next
            if settled { break }
        }
        return (solved(membrane: mu, from: x, links: links, tolerance: 1e-24), mu)
    }

    /// How much of each point's value the examples decide rather than the membrane (with weight
    /// `mu`): the examples' weight there over it and the membrane's links together, 0 at a
    /// colour no example reaches, near 1 where many do.
    func support(membrane mu: Double) -> [Double] {
        var links = [Double](repeating: 0, count: points)
        for link in self.links { links[link.p] += 1; links[link.q] += 1 }
        return (0..<points).map { p in
            let data = matrix[13 * points + p]
            return data > 0 ? data / (data + mu * links[p]) : 0
        }
    }

    /// Rounds of `solved`'s estimate of the membrane, at most.
    static let rounds = 10

    /// Neighbouring lattice points, each pair once.
    var links: [(p: Int, q: Int)] {
        var links: [(p: Int, q: Int)] = []
        let s = size
        for r in 0..<s { for g in 0..<s { for b in 0..<s {
            let p = (r * s + g) * s + b
            for (dr, dg, db) in [(1, 0, 0), (0, 1, 0), (0, 0, 1)] where r + dr < s && g + dg < s && b + db < s {
                links.append((p, p + (dr * s + dg) * s + db))
            }
        } } }
        return links
    }

    /// (N + μ M) x, N the examples' normal matrix and M the membrane's (the graph Laplacian of
    /// the lattice: each link p ~ q adds μ(L[p] − L[q])²).
    func applied(_ x: [SIMD4<Double>], membrane mu: Double, links: [(p: Int, q: Int)]) -> [SIMD4<Double>] {
        let n = points, s = size
        var y = [SIMD4<Double>](repeating: .zero, count: n)
        matrix.withUnsafeBufferPointer { a in x.withUnsafeBufferPointer { x in y.withUnsafeMutableBufferPointer { y in
            // Stencil position by stencil position, along the points: a neighbour off the lattice
            // (or across its rows) has a zero coefficient, so only the reads past either end of
            // the points are left out. Each point's sum is made in the same order however the
            // points are split between cores.
            let source = x.baseAddress!, out = y.baseAddress!
            parallelChunks(n, minimumChunk: 1024) { points in
                for o in 0..<27 {
                    let offset = ((o / 9 - 1) * s + (o / 3 % 3 - 1)) * s + (o % 3 - 1)
                    let plane = a.baseAddress! + o &* n
                    for p in max(points.lowerBound, -offset)..<min(points.upperBound, n - offset) {
                        out[p] += plane[p] * source[p &+ offset]
                    }
                }
            }
            if mu > 0 {
                for link in links {
                    let d = mu * (x[link.p] - x[link.q])
                    y[link.p] += d; y[link.q] -= d
                }
            }
        } } }
        return y
    }

    /// The lattice values for membrane weight `mu` (see `applied`): conjugate gradients,
    /// preconditioned by the diagonal, from `start`, until the residual's square is `tolerance`
    /// of the right-hand side's in each channel (both weighed by the inverse diagonal).
    func solved(membrane mu: Double, from start: [SIMD4<Double>], links: [(p: Int, q: Int)], tolerance: Double) -> [SIMD4<Double>] {
        let n = points
        func dot(_ u: [SIMD4<Double>], _ v: [SIMD4<Double>]) -> SIMD4<Double> {
            var sum = SIMD4<Double>.zero
            for p in 0..<n { sum += u[p] * v[p] }
            return sum
        }
        var diagonal = (0..<n).map { matrix[13 * n + $0] }
        for link in links { diagonal[link.p] += mu; diagonal[link.q] += mu }
        let inverseDiagonal = diagonal.map { 1 / $0 }
        // Three channels; the fourth is kept at 0.
        var b = rhs
        for p in 0..<n { b[p][3] = 0 }
        var x = start
        for p in 0..<n { x[p][3] = 0 }
        var residual = applied(x, membrane: mu, links: links)
        for p in 0..<n { residual[p] = b[p] - residual[p] }
        var z = (0..<n).map { inverseDiagonal[$0] * residual[$0] }
        var direction = z
        var rz = dot(residual, z)
        // The residual as the preconditioner weighs it: a point no example reaches, held only
        // by the weak membrane, counts as much as one the examples pin.
        let target = dot(b, (0..<n).map { inverseDiagonal[$0] * b[$0] }) * tolerance
        for _ in 0..<2000 {
            if all(rz .<= target) { break }
            let ad = applied(direction, membrane: mu, links: links)
            let curvature = dot(direction, ad)
            let step = (rz / curvature).replacing(with: 0, where: .!(curvature .> 0))
            for p in 0..<n { x[p] += step * direction[p]; residual[p] -= step * ad[p] }
            for p in 0..<n { z[p] = inverseDiagonal[p] * residual[p] }
            let next = dot(residual, z)
            let beta = (next / rz).replacing(with: 0, where: .!(rz .> 0))
            rz = next
            for p in 0..<n { direction[p] = z[p] + beta * direction[p] }
        }
        return x
    }
}

import Foundation
import Tensor

/// The last step of the correspondence, on the images themselves. Matching on the latent's grid
/// leaves errors of a pixel or more: invisible for a colour change, but enough to blur line-art
/// and texture, and to make a carried edit swim. Here the displacement of every grid sample is
/// refined on the pictures, coarse to fine over a 2×2-pooled pyramid, as a combined local–global
/// estimate (Bruhn et al. 2005):
///   Σᵢ Σ_{p ∈ block i} cᵢ |frame(p) − reference(p + dᵢ)|²  +  λ Σ_{i~j} |dᵢ − dⱼ|²,
/// each block's Lucas–Kanade term weighted by the attention's confidence cᵢ, and a membrane
/// between grid neighbours. Where a block is textured its own term decides; where it is flat,
/// one-dimensional (the aperture problem) or unmatched, its displacement is filled in from the
/// neighbours that can tell, instead of keeping whatever the attention guessed there.
public struct ImageAlignment: Sendable {
    /// The reference, smoothed (see `smoothed`), with its edge values repeated `margin` pixels
    /// out on every side: a block whose displaced samples fall past the reference's edges reads
    /// there what clamping its positions would, with one set of bilinear weights for the whole
    /// block (`Level.withBlocks`).
    let padded: PlanarImage
    /// The reference 2×2-pooled, aligned first: its blocks see twice as far, so this level starts
    /// within its reach even where the attention is a few pixels off.
    let coarser: [ImageAlignment]
    /// Whether the membrane holds the field's edges to its overall slope (see `solve`), as a
    /// carried edit needs: its edges must sit where the frame shows them under a zoom or a turn.
    /// Off by default: the slope is one affine fit, and where the motion is not the camera's
    /// alone (people walking through a still shot) it means nothing (0.5 on `motion.mov`).
    /// `deflicker`'s analysis, which gathers tone over a frame matched to a reference often far
    /// away in time, was only moved about by it, and `flicker`'s E_warp on that shot rose by 43%.
    let followsSlope: Bool

    public init(reference: PlanarImage, levels: Int = 3, followingSlope: Bool = false) {
        let reference = Self.matched(reference)
        padded = Self.smoothed(reference).edgePadded(by: Self.margin)
        followsSlope = followingSlope
        coarser = levels > 1 && min(reference.width, reference.height) >= 64
            ? [ImageAlignment(reference: reference.averagePooled2(), levels: levels - 1, followingSlope: followingSlope)] : []
    }

    /// The grid's geometry on 2×2-pooled pictures (pooled pixel u covers pixels 2u and 2u + 1),
    /// for refining a field on pictures of half the resolution: `factor` must be even.
    public static func pooledGeometry(factor: Int, origin: Float) -> (factor: Int, origin: Float) {
        precondition(factor % 2 == 0)
        return (factor / 2, (origin - 0.5) / 2)
    }

    /// What is matched of a picture: its luma. Colour adds little to where things are, and
    /// costs three times the work.
    static func matched(_ image: PlanarImage) -> PlanarImage {
        image.channels == 3 ? luma(image) : image
    }

    /// Both pictures are matched after a binomial smoothing (σ = 1 px): it commutes with the
    /// motion, and leaves them smooth enough that bilinear sampling follows sub-pixel shifts
    /// closely. On fine texture (a lattice tower against the sky), matching the raw pictures left
    /// errors of 0.15–0.5 px; smoothed, 0.02.
    static func smoothed(_ image: PlanarImage) -> PlanarImage {
        image.binomialSmoothed().binomialSmoothed()
    }

    /// Refines `field` (reference positions per grid sample, `factor` pixels per sample, sample 0
    /// at pixel `origin`) so that `frame` around each sample matches the reference.
    ///
    /// Coarse to fine: pyramid level l matches the 2^l-pooled pictures on every 2^l-th grid
    /// sample, with blocks of the same size in its own pixels, so each level sees twice as far as
    /// the next for a quarter of the work. The coarsest level starts from the attention's answer,
    /// mended by PatchMatch's propagation (`Level.propagate`); each finer one from the coarser's.
    /// - Returns: with `measuringMatch`, each sample's match quality in [0, 1] at its refined
    ///   displacement (see `matchQuality`), and with `vouching` too, that quality as far as the
    ///   textured blocks around it vouch for it (`vouched`); otherwise empty.
    @discardableResult
    public func refine(_ field: inout CorrespondenceField, frame: PlanarImage, factor: Int, origin: Float,
                       measuringMatch: Bool = false, vouching: Bool = false) -> [Float] {
        let fw = field.width, fh = field.height, k = Float(factor)
        // The attention's answer, as displacements in pixels.
        var attention = Grid(width: fw, height: fh)
        for j in 0..<fh { for i in 0..<fw {
            attention.dx[j &* fw &+ i] = k * (field.x[j &* fw &+ i] - Float(i))
            attention.dy[j &* fw &+ i] = k * (field.y[j &* fw &+ i] - Float(j))
        } }
        var alignments = [self], frames = [Self.matched(frame)]
        for _ in 0..<startingLevel(fieldWidth: fw, fieldHeight: fh) {
            alignments.append(alignments.last!.coarser[0])
            frames.append(frames.last!.averagePooled2())
        }
        var current: Grid?
        var terms: [Float] = []
        var finest: Level?
        // The field's overall slope (`overallSlope`, for the membrane at the grid's edges): fitted
        // on each round's answer and used from the next round on, carried from each level to the
        // finer one (a slope is the same in any level's pixels). Fitted on the answers, not on the
        // attention's rough start, so that a field the pictures pin to a constant (a still
        // camera, a pan) stays exactly that.
        var slope = Slope.zero
        for l in stride(from: alignments.count - 1, through: 0, by: -1) {
            let scale = 1 << l
            // Level l's pixel u sits at full-resolution pixel 2^l·u + (2^l − 1)/2.
            let levelOrigin = (origin - Float(scale - 1) / 2) / Float(scale)
            let (start, confidence) = attention.subsampled(by: scale, confidence: field.confidence, pixelScale: 1 / Float(scale))
            let level = Level(padded: alignments[l].padded, frame: Self.smoothed(frames[l]), confidence: confidence,
                              width: start.width, height: start.height, factor: factor, origin: levelOrigin)
            var grid: Grid
            if let coarser = current {
                grid = coarser.upsampled(toWidth: start.width, height: start.height)
            } else {
                grid = start
                level.propagate(dx: &grid.dx, dy: &grid.dy)
            }
            terms = [Float](repeating: 0, count: Level.stride &* grid.count)
            var lambda: Float = 0
            let coarsest = l == alignments.count - 1
            for round in 0..<(coarsest ? Self.coarsestRounds : Self.rounds) {
                level.accumulate(into: &terms, dx: grid.dx, dy: grid.dy)
                if round == 0 {
                    var trace: Double = 0, count = 0
                    for i in 0..<grid.count { trace += Double(terms[Level.stride &* i] + terms[Level.stride &* i &+ 2]); count += 1 }
                    lambda = Self.smoothness * Float(trace / Double(max(count, 1)))
                    // No block with any strength (or too little to be a float): nothing to align.
                    guard lambda.isNormal else { break }
                }
                // Grid samples are `k` of this level's pixels apart at every level.
                Self.solve(terms, dx: &grid.dx, dy: &grid.dy, width: grid.width, height: grid.height, lambda: lambda, limit: k,
                           spacing: k, slope: slope, sweeps: coarsest ? Self.coarsestSweeps : Self.sweeps)
                if followsSlope {
                    slope = Self.overallSlope(terms, dx: grid.dx, dy: grid.dy, width: grid.width, height: grid.height, spacing: k)
                }
            }
            current = grid
            finest = level
        }
        guard let result = current, let finest else { return [] }
        for j in 0..<fh { for i in 0..<fw {
            field.x[j &* fw &+ i] = Float(i) + result.dx[j &* fw &+ i] / k
            field.y[j &* fw &+ i] = Float(j) + result.dy[j &* fw &+ i] / k
        } }
        guard measuringMatch else { return [] }
        finest.accumulate(into: &terms, dx: result.dx, dy: result.dy)
        let quality = (0..<result.count).map { Self.matchQuality(terms, $0) }
        return vouching ? Self.vouched(quality, terms: terms, width: result.width, height: result.height) : quality
    }

    /// Each sample's match quality as far as the blocks that can tell where they are vouch for
    /// it. A block whose texture stands no higher than the pictures' noise (a wall, a cheek, the
    /// sky) matches any content of about its level equally well: its own quality says that its
    /// level is right, not that it is where it points. Where it points is what the membrane
    /// carried to it from its textured neighbours (`solve`), and so is how far that is right: the
    /// qualities interpolated by a membrane, each block holding its own as far as its texture
    /// (Σ |∇|² over its pixels) stands above the noise (σ = `matchNoise` per pixel) that one
    /// link weighs, min(own, interpolated). A plain surface among content that matches keeps
    /// its quality; plain content among content that does not (a close-up after a turn of the
    /// view, whose cheek matches the keyframe's white wall as well as its own chest would) loses
    /// it, and a label painted on the keyframe's wall is not carried there. (Measured on the
    /// bench clip: after frame 100, pixels taking the label's red went from 121 393 to 32 over
    /// 180 frames; the evaluation's cases changed by at most 0.05 dB.)
    static func vouched(_ quality: [Float], terms: [Float], width fw: Int, height fh: Int) -> [Float] {
        let n = fw &* fh, stride = Level.stride
        var texture = [Float](repeating: 0, count: n), pixels: Double = 0
        for i in 0..<n {
            texture[i] = terms[stride &* i &+ 6]
            pixels += Double(terms[stride &* i &+ 7])
        }
        let link = Float(pixels / Double(max(n, 1))) * matchNoise * matchNoise
        guard link > 0 else { return quality }
        let interpolated = membrane(quality, weights: texture, width: fw, height: fh, link: link)
        return (0..<n).map { min(quality[$0], max(interpolated[$0], 0)) }
    }

    /// Minimises Σᵢ wᵢ(tᵢ − vᵢ)² + `link` Σ_{i~j} (tᵢ − tⱼ)² over a 4-neighbour grid, coarse to
    /// fine: the problem 2×2-pooled (weights summed, values their weighted mean; a membrane's
    /// energy is the same on a grid of any spacing, so the link's weight stays) is solved first
    /// and, spread back, starts a few Jacobi sweeps here. Plain regions tens of samples wide take
    /// their values from their borders in a handful of sweeps, not hundreds. (Within 0.08 of the
    /// exact solution on the bench clip's frames, 0.014 on average.)
    static func membrane(_ values: [Float], weights: [Float], width fw: Int, height fh: Int, link: Float) -> [Float] {
        let n = fw &* fh
        var start: [Float], sweeps: Int
        if fw >= 8 && fh >= 8 {
            let cw = (fw &+ 1) / 2, ch = (fh &+ 1) / 2
            var pooledWeights = [Float](repeating: 0, count: cw &* ch), pooledValues = pooledWeights
            for y in 0..<fh { for x in 0..<fw {
                let i = y &* fw &+ x, c = (y / 2) &* cw &+ x / 2
                pooledWeights[c] += weights[i]
                pooledValues[c] += weights[i] * values[i]
            } }
            for c in pooledValues.indices where pooledWeights[c] > 0 { pooledValues[c] /= pooledWeights[c] }
            let coarse = membrane(pooledValues, weights: pooledWeights, width: cw, height: ch, link: link)
            start = [Float](repeating: 0, count: n)
            for y in 0..<fh { for x in 0..<fw { start[y &* fw &+ x] = coarse[(y / 2) &* cw &+ x / 2] } }
            sweeps = Self.membraneSweeps
        } else {
            start = values
            sweeps = Self.membraneCoarsestSweeps
        }
        // On a grid padded by one sample, each sample's missing neighbours being itself: the
        // same solution as leaving their links out (tᵢ(wᵢ + link · links) = wᵢvᵢ + link · Σ
        // neighbours either way), and a sweep without a branch. Each sample's relaxed value is
        // dᵢ + kᵢ · Σ of its four neighbours, d and k computed once.
        let pw = fw &+ 2, ph = fh &+ 2
        var data = [Float](repeating: 0, count: n), scale = data
        for i in 0..<n {
            let inverse = 1 / (weights[i] + 4 * link)
            data[i] = weights[i] * values[i] * inverse
            scale[i] = link * inverse
        }
        var current = [Float](repeating: 0, count: pw &* ph), next = current
        for y in 0..<fh { for x in 0..<fw { current[(y &+ 1) &* pw &+ x &+ 1] = start[y &* fw &+ x] } }
        for _ in 0..<sweeps {
            current.withUnsafeMutableBufferPointer { cb in next.withUnsafeMutableBufferPointer { nb in
            data.withUnsafeBufferPointer { db in scale.withUnsafeBufferPointer { sb in
                let t = cb.baseAddress!, u = nb.baseAddress!, d = db.baseAddress!, k = sb.baseAddress!
                for y in 1...fh { t[y &* pw] = t[y &* pw &+ 1]; t[y &* pw &+ fw &+ 1] = t[y &* pw &+ fw] }
                for x in 0..<pw { t[x] = t[pw &+ x]; t[(fh &+ 1) &* pw &+ x] = t[fh &* pw &+ x] }
                for y in 0..<fh {
                    let row = t + ((y &+ 1) &* pw &+ 1), out = u + ((y &+ 1) &* pw &+ 1), dr = d + y &* fw, kr = k + y &* fw
                    for x in 0..<fw {
                        out[x] = dr[x] + kr[x] * (row[x &- 1] + row[x &+ 1] + row[x &- pw] + row[x &+ pw])
                    }
                }
            } } } }
            swap(&current, &next)
        }
        var out = [Float](repeating: 0, count: n)
        for y in 0..<fh { for x in 0..<fw { out[y &* fw &+ x] = current[(y &+ 1) &* pw &+ x &+ 1] } }
        return out
    }

    /// The pyramid level `refine` starts at for a field of `fw` × `fh` samples: the coarsest
    /// whose grid (every 2^l-th sample) still has three samples a side. It starts from the field
    /// there as the confidence-weighted mean of the samples nearest each 2^l-th one, so the
    /// field's finer detail is not used.
    public func startingLevel(fieldWidth fw: Int, fieldHeight fh: Int) -> Int {
        var level = 0, alignment = self
        while let next = alignment.coarser.first, (fw - 1) >> (level + 1) >= 2, (fh - 1) >> (level + 1) >= 2 {
            alignment = next
            level += 1
        }
        return level
    }

    /// Displacements (in a level's pixels) on a level's grid.
    struct Grid {
        let width: Int, height: Int
        var dx: [Float], dy: [Float]
        var count: Int { width * height }

        init(width: Int, height: Int) {
            self.width = width
            self.height = height
            dx = [Float](repeating: 0, count: width * height)
            dy = dx
        }

        /// Every `step`-th sample each way, each the confidence-weighted mean of the samples
        /// nearest it, displacements times `pixelScale`; with the mean confidence there.
        func subsampled(by step: Int, confidence: [Float], pixelScale: Float) -> (Grid, [Float]) {
            if step == 1 { return (self, confidence) }
            var out = Grid(width: (width - 1) / step + 1, height: (height - 1) / step + 1)
            var outConfidence = [Float](repeating: 0, count: out.count)
            let half = step / 2
            for jj in 0..<out.height { for ii in 0..<out.width {
                var sx: Float = 0, sy: Float = 0, mass: Float = 0, plain = (x: Float(0), y: Float(0), n: Float(0))
                for j in max(jj * step - half, 0)...min(jj * step + half, height - 1) {
                    for i in max(ii * step - half, 0)...min(ii * step + half, width - 1) {
                        let c = confidence[j * width + i]
                        sx += c * dx[j * width + i]; sy += c * dy[j * width + i]; mass += c
                        plain.x += dx[j * width + i]; plain.y += dy[j * width + i]; plain.n += 1
                    }
                }
                let o = jj * out.width + ii
                out.dx[o] = pixelScale * (mass > 1e-6 ? sx / mass : plain.x / plain.n)
                out.dy[o] = pixelScale * (mass > 1e-6 ? sy / mass : plain.y / plain.n)
                outConfidence[o] = mass / plain.n
            } }
            return (out, outConfidence)
        }

        /// This coarser level's grid (every other sample of the next, pixels twice the size)
        /// interpolated bilinearly onto the next level's `width` × `height` grid.
        func upsampled(toWidth w: Int, height h: Int) -> Grid {
            var out = Grid(width: w, height: h)
            for j in 0..<h { for i in 0..<w {
                let gx = Float(i) / 2, gy = Float(j) / 2
                let x0 = min(Int(gx), width - 1), y0 = min(Int(gy), height - 1)
                let x1 = min(x0 + 1, width - 1), y1 = min(y0 + 1, height - 1)
                let ax = gx - Float(x0), ay = gy - Float(y0)
                func at(_ v: [Float]) -> Float {
                    (1 - ay) * ((1 - ax) * v[y0 * width + x0] + ax * v[y0 * width + x1])
                        + ay * ((1 - ax) * v[y1 * width + x0] + ax * v[y1 * width + x1])
                }
                out.dx[j * w + i] = 2 * at(dx)
                out.dy[j * w + i] = 2 * at(dy)
            } }
            return out
        }
    }

    /// How far `padded` extends the reference: wider than a block and its samples' right and
    /// lower neighbours (2 × radius + 2 pixels; a level's radius is its grid spacing, 8 pixels at
    /// k = 8), for grid spacings up to 16, so that any block past the reference's edges can be
    /// read within the margin (`Level.withBlocks`).
    static let margin = 34

    /// λ of the membrane, as a fraction of the mean block strength (trace of its normal matrix):
    /// a textured block outweighs its four neighbour links, a flat one is outweighed by them.
    static let smoothness: Float = 1
    /// Gauss–Newton rounds per level, and relaxation sweeps per round. The coarsest level starts
    /// from the attention's answer and has the most to fix, on the smallest grid; the finer ones
    /// start from the coarser answer.
    static let rounds = 2, coarsestRounds = 4
    static let sweeps = 5, coarsestSweeps = 30
    /// Jacobi sweeps per level of `membrane` after the coarser level's answer, and on its
    /// coarsest level (under 8 samples a side), which starts from the values themselves.
    static let membraneSweeps = 10, membraneCoarsestSweeps = 30
    /// See `matchQuality`: σ of the pictures' noise, and the misalignment of texture allowed (px).
    static let matchNoise: Float = 0.02, matchSlack: Float = 0.5

    /// How well a block matches where it points: its mean squared residual against what noise
    /// (σ = `matchNoise`) and a misalignment of `matchSlack` px of its texture would leave,
    /// exp(−½ · residual / allowance). 1 for a perfect match; 0 for a block that sees other content.
    static func matchQuality(_ terms: [Float], _ i: Int) -> Float {
        let e = terms[Level.stride &* i &+ 5], g = terms[Level.stride &* i &+ 6], count = terms[Level.stride &* i &+ 7]
        guard count > 0 else { return 0 }
        return exp(-0.5 * e / (count * matchNoise * matchNoise + matchSlack * matchSlack * g))
    }

    /// Minimises Σᵢ [uᵢ − dᵢ]ᵀHᵢ[uᵢ − dᵢ] − 2bᵢᵀ[uᵢ − dᵢ] + λ Σ_{i~j} |uᵢ − uⱼ − J(xᵢ − xⱼ)|² over the new
    /// displacements u (4-neighbour grid, samples `spacing` pixels apart) by successive
    /// over-relaxation, warm-started at d; each sample then moves at most `limit` pixels, as far
    /// as its linearisation holds. (Relaxed in red-black order, so that no update waits on the one
    /// before, the solve took a third less time, but five sweeps from the warm start converged a
    /// little less: a still texture's E_warp 0.25% higher, one pan's shift consistency −0.18 dB.)
    static func solve(_ e: [Float], dx: inout [Float], dy: inout [Float], width fw: Int, height fh: Int, lambda: Float,
                      limit: Float, spacing: Float, slope: Slope, sweeps: Int) {
        let n = fw &* fh, omega: Float = 1.8, stride = Level.stride
        // The equations are solved divided by λ (the blocks' terms times 1/λ, each link 1): the
        // same answer, but a system whose every term is tiny (blocks whose confidence has all but
        // vanished: terms of 10⁻²³) no longer underflows. In single precision its 2×2
        // determinants fell below the smallest float, their inverses came out near 10²³, and the
        // field was thrown millions of pixels away.
        let toLinks = 1 / lambda
        // Right-hand side r = b + H d, fixed during the sweeps.
        var rx = [Float](repeating: 0, count: n), ry = rx
        for i in 0..<n {
            let b = stride &* i
            rx[i] = toLinks * (e[b &+ 3] + e[b] * dx[i] + e[b &+ 1] * dy[i])
            ry[i] = toLinks * (e[b &+ 4] + e[b &+ 1] * dx[i] + e[b &+ 2] * dy[i])
        }
        // The membrane holds neighbours' differences to the field's overall `slope` rather than
        // to zero. Inside the grid the two are the same (a sample's links in opposite directions
        // cancel the slope); at the edges, where a sample lacks a link, a plain membrane pulls it
        // to its inner neighbour's displacement, and a zoom's or a turn's field, which keeps
        // changing out to the frame's edges, was held there: edge samples 8 px off at a 1.19× zoom.
        for j in 0..<fh { for i in 0..<fw {
            let ex = spacing * Float((i &+ 1 == fw ? 1 : 0) - (i == 0 ? 1 : 0))
            let ey = spacing * Float((j &+ 1 == fh ? 1 : 0) - (j == 0 ? 1 : 0))
            if ex == 0 && ey == 0 { continue }
            rx[j &* fw &+ i] += slope.xx * ex + slope.xy * ey
            ry[j &* fw &+ i] += slope.yx * ex + slope.yy * ey
        } }
        // Each sample's 2×2 system (its block's H plus λ per link) is the same in every sweep:
        // its inverse is taken once, so that a sweep multiplies where it divided (the divisions,
        // one sample waiting on the one before, were most of the sweep's time). A sample whose
        // system is singular keeps its value (relaxation 0).
        var inverse = [Float](repeating: 0, count: 4 &* n)
        for j in 0..<fh { for i in 0..<fw {
            let index = j &* fw &+ i, b = stride &* index
            let links = Float((i > 0 ? 1 : 0) + (i &+ 1 < fw ? 1 : 0) + (j > 0 ? 1 : 0) + (j &+ 1 < fh ? 1 : 0))
            let a = toLinks * e[b] + links, c = toLinks * e[b &+ 1], d = toLinks * e[b &+ 2] + links
            let det = a * d - c * c
            guard det > 0, det.isFinite else { continue }
            inverse[4 &* index] = d / det
            inverse[4 &* index &+ 1] = -c / det
            inverse[4 &* index &+ 2] = a / det
            inverse[4 &* index &+ 3] = omega
        } }
        var ux = dx, uy = dy
        relax(&ux, &uy, inverse: inverse, rx: rx, ry: ry, width: fw, height: fh, lambda: 1, sweeps: sweeps)
        for i in 0..<n {
            // A step beyond the block's reach is trusted only where the membrane, not the
            // block's own linearisation, decides it.
            let b = stride &* i, own = toLinks * (e[b] + e[b &+ 2])
            let reach = own > 4 ? limit : .infinity
            dx[i] += min(max(ux[i] - dx[i], -reach), reach)
            dy[i] += min(max(uy[i] - dy[i], -reach), reach)
        }
    }

    /// `solve`'s sweeps of successive over-relaxation, in place on (ux, uy): sample i's 2×2
    /// inverse and relaxation factor in `inverse[4i ..< 4i + 4]` (m₀₀, m₀₁, m₁₁, ω), its
    /// right-hand side (rx, ry), and λ per link to each of its four neighbours. Each sweep relaxes
    /// the samples row by row, each after its left neighbour.
    public static func relax(_ ux: inout [Float], _ uy: inout [Float], inverse: [Float], rx: [Float], ry: [Float],
                             width fw: Int, height fh: Int, lambda: Float, sweeps: Int) {
        let n = fw &* fh
        precondition(ux.count == n && uy.count == n && inverse.count == 4 &* n && rx.count == n && ry.count == n)
        ux.withUnsafeMutableBufferPointer { uxb in uy.withUnsafeMutableBufferPointer { uyb in
        inverse.withUnsafeBufferPointer { ib in rx.withUnsafeBufferPointer { rxb in ry.withUnsafeBufferPointer { ryb in
            let ux = uxb.baseAddress!, uy = uyb.baseAddress!, m = ib.baseAddress!, rx = rxb.baseAddress!, ry = ryb.baseAddress!
            @inline(__always) func one(_ i: Int, _ j: Int) {
                let index = j &* fw &+ i
                var sx: Float = 0, sy: Float = 0
                if i > 0 { sx += ux[index &- 1]; sy += uy[index &- 1] }
                if i &+ 1 < fw { sx += ux[index &+ 1]; sy += uy[index &+ 1] }
                if j > 0 { sx += ux[index &- fw]; sy += uy[index &- fw] }
                if j &+ 1 < fh { sx += ux[index &+ fw]; sy += uy[index &+ fw] }
                let px = rx[index] + lambda * sx, py = ry[index] + lambda * sy
                let k = 4 &* index
                let nx = m[k] * px + m[k &+ 1] * py, ny = m[k &+ 1] * px + m[k &+ 2] * py
                ux[index] += m[k &+ 3] * (nx - ux[index])
                uy[index] += m[k &+ 3] * (ny - uy[index])
            }
            // Row by row, each sample after its left neighbour, as one chain of dependent
            // arithmetic a sample. Four rows go at once, each a sample behind the row above:
            // sample (i, j + 1) needs (i, j) and (i − 1, j + 1) relaxed and (i + 1, j + 1) not
            // yet, which holds, so the order, and every value, is the row-by-row one; the four
            // chains overlap in the processor instead of waiting on each other.
            for _ in 0..<sweeps {
                var j = 0
                while j &+ 4 <= fh {
                    for s in 0..<(fw &+ 3) {
                        if s < fw { one(s, j) }
                        if s >= 1 && s &- 1 < fw { one(s &- 1, j &+ 1) }
                        if s >= 2 && s &- 2 < fw { one(s &- 2, j &+ 2) }
                        if s >= 3 { one(s &- 3, j &+ 3) }
                    }
                    j &+= 4
                }
                while j < fh {
                    for i in 0..<fw { one(i, j) }
                    j &+= 1
                }
            }
        } } } } }
    }

    /// The displacement field's slope (∂dx/∂x, ∂dx/∂y, ∂dy/∂x, ∂dy/∂y, per pixel) as one affine
    /// fit over the grid (samples `spacing` pixels apart), each sample weighted by its block's
    /// strength (the trace of its normal matrix in `e`); zero where the fit is not determined.
    static func overallSlope(_ e: [Float], dx: [Float], dy: [Float], width fw: Int, height fh: Int,
                             spacing: Float) -> Slope {
        // Weighted normal equations of [1 X Y] against dx and dy, positions centred for conditioning.
        var a = [Double](repeating: 0, count: 9), bx = [Double](repeating: 0, count: 3), by = bx
        let cx = Double(fw - 1) / 2, cy = Double(fh - 1) / 2
        for j in 0..<fh { for i in 0..<fw {
            let index = j &* fw &+ i, w = Double(e[Level.stride &* index] + e[Level.stride &* index &+ 2])
            guard w > 0 else { continue }
            let v = SIMD3<Double>(1, (Double(i) - cx) * Double(spacing), (Double(j) - cy) * Double(spacing))
            for r in 0..<3 {
                for c in 0..<3 { a[3 * r + c] += w * v[r] * v[c] }
                bx[r] += w * v[r] * Double(dx[index]); by[r] += w * v[r] * Double(dy[index])
            }
        } }
        guard let sx = solve3(a, bx), let sy = solve3(a, by) else { return .zero }
        return Slope(xx: Float(sx[1]), xy: Float(sx[2]), yx: Float(sy[1]), yy: Float(sy[2]))
    }

    /// x with a x = b for a symmetric 3 × 3 `a` (row-major), by Cramer's rule; nil where `a` is
    /// near singular (a grid one sample wide, or no textured block).
    static func solve3(_ a: [Double], _ b: [Double]) -> [Double]? {
        func det(_ m: [Double]) -> Double {
            m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6])
        }
        let d = det(a), scale = a[0] * a[4] * a[8]
        guard scale > 0, abs(d) > 1e-9 * scale else { return nil }
        return (0..<3).map { column in
            var m = a
            for r in 0..<3 { m[3 * r + column] = b[r] }
            return det(m) / d
        }
    }

    /// Central differences (one-sided at the borders), per channel.
    static func gradients(_ image: PlanarImage) -> (PlanarImage, PlanarImage) {
        let w = image.width, h = image.height, c = image.channels
        var gx = PlanarImage(uninitializedChannels: c, height: h, width: w)
        var gy = PlanarImage(uninitializedChannels: c, height: h, width: w)
        image.withUnsafeBufferPointer { src in gx.withUnsafeMutableBufferPointer { ox in gy.withUnsafeMutableBufferPointer { oy in
            let s = src.baseAddress!, px = ox.baseAddress!, py = oy.baseAddress!
            parallelChunks(c &* h, minimumChunk: 16) { rows in
                for row in rows {
                    let ch = row / h, y = row % h
                    let line = s + (ch &* h &+ y) &* w
                    let up = s + (ch &* h &+ max(y - 1, 0)) &* w, down = s + (ch &* h &+ min(y + 1, h - 1)) &* w
                    let outX = px + (ch &* h &+ y) &* w, outY = py + (ch &* h &+ y) &* w
                    let ny: Float = (y == 0 || y == h - 1) ? 1 : 0.5
                    for x in 0..<w { outY[x] = (down[x] - up[x]) * ny }
                    // Across: the ends apart (one-sided), so that the inside vectorises.
                    outX[0] = line[min(1, w - 1)] - line[0]
                    if w > 1 {
                        for x in 1..<(w - 1) { outX[x] = (line[x + 1] - line[x - 1]) * 0.5 }
                        outX[w - 1] = line[w - 1] - line[w - 2]
                    }
                }
            }
        } } }
        return (gx, gy)
    }
}

extension ImageAlignment {
    /// One pyramid level's matching problem: the smoothed frame and its gradients against the
    /// level's reference, with the grid's geometry at this level.
    struct Level {
        /// The level's reference, padded (`ImageAlignment.padded`).
        let padded: PlanarImage
        let frame: PlanarImage
        let gradientX: PlanarImage, gradientY: PlanarImage
        let confidence: [Float]
        let fw: Int, fh: Int
        let k: Float, origin: Float
        /// Block half-size, and the spacing of the pixels summed in it: about six a side, which
        /// align as well as every other pixel did, for less than half the work.
        let radius: Int, step: Int

        /// Per sample in `accumulate`'s output: hxx, hxy, hyy, bx, by (weighted by confidence), then
        /// Σ residual², Σ |∇|², and the number of terms (unweighted).
        static let stride = 8

        init(padded: PlanarImage, frame: PlanarImage, confidence: [Float], width: Int, height: Int, factor: Int,
             origin: Float) {
            // Pictures are matched by their luma (`matched`); the block sums rely on it.
            precondition(padded.channels == 1 && frame.channels == 1)
            self.padded = padded
            self.frame = frame
            (gradientX, gradientY) = ImageAlignment.gradients(frame)
            self.confidence = confidence
            fw = width
            fh = height
            k = Float(factor)
            self.origin = origin
            radius = factor
            precondition(2 * radius + 2 <= ImageAlignment.margin, "a block wider than the reference's padding")
            step = (radius + 2) / 3
        }

        /// Each sample's Lucas–Kanade normal equations at its displacement (dx, dy) in
        /// pixels, over its block, into `terms` (see `stride`): H = Σ ∇f ∇fᵀ and
        /// b = Σ ∇f · (frame(p) − reference(p + d)), with the frame's own gradients (the inverse
        /// formulation: at the match the two pictures' gradients agree, and the frame's need no
        /// interpolation) and the reference sampled bilinearly.
        func accumulate(into terms: inout [Float], dx: [Float], dy: [Float]) {
            withBlocks { block in
                terms.withUnsafeMutableBufferPointer { tb in confidence.withUnsafeBufferPointer { cb in
                dx.withUnsafeBufferPointer { dxb in dy.withUnsafeBufferPointer { dyb in
                    let out = tb.baseAddress!
                    parallelChunks(fh, minimumChunk: 1) { rows in
                        for j in rows {
                            for i in 0..<fw {
                                let index = j &* fw &+ i
                                let sums = block(index, dxb[index], dyb[index])
                                let weight = cb[index], o = out + Self.stride &* index
                                o[0] = weight * sums[0]; o[1] = weight * sums[1]; o[2] = weight * sums[2]
                                o[3] = weight * sums[3]; o[4] = weight * sums[4]
                                o[5] = sums[5]; o[6] = sums[0] + sums[2]; o[7] = sums[6]
                            }
                        }
                    }
                } } } }
            }
        }

        /// Calls `body` with a function that gives grid sample `index`'s block sums at
        /// displacement (dx, dy) (`blockSums`): over the block's pixels within the frame (a block
        /// at the frame's edge sums the part inside, on the same every-`step`-th pixels), against
        /// the padded reference. The whole-pixel part of d is held where the block's samples and
        /// their right and lower neighbours stay within the padding: a block further out reads
        /// nothing but repeated edge values either way (the margin is wider than a block), as
        /// clamping each sample's position would.
        func withBlocks<R>(_ body: (_ block: (Int, Float, Float) -> SIMD8<Float>) -> R) -> R {
            let w = frame.width, h = frame.height
            let margin = ImageAlignment.margin, pw = padded.width
            let rw = pw &- 2 &* margin, rh = padded.height &- 2 &* margin
            let radius = radius, step = step, k = k, origin = origin, fw = fw
            return frame.withUnsafeBufferPointer { fb in padded.withUnsafeBufferPointer { pb in
            gradientX.withUnsafeBufferPointer { gxb in gradientY.withUnsafeBufferPointer { gyb in
                let f = fb.baseAddress!, gxp = gxb.baseAddress!, gyp = gyb.baseAddress!
                // Padded sample (margin, margin) is the reference's (0, 0).
                let p0 = pb.baseAddress! + (margin &* pw &+ margin)
                return body { index, dx, dy in
                    let cx = Int(origin + k * Float(index % fw)), cy = Int(origin + k * Float(index / fw))
                    let xLo = max(cx &- radius, 0), xHi = min(cx &+ radius, w &- 1)
                    let yLo = max(cy &- radius, 0), yHi = min(cy &+ radius, h &- 1)
                    let fdx = min(max(dx.rounded(.down), Float(-margin &- xLo)), Float(rw &- 2 &+ margin &- xHi))
                    let fdy = min(max(dy.rounded(.down), Float(-margin &- yLo)), Float(rh &- 2 &+ margin &- yHi))
                    return Self.blockSums(reference: p0 + (Int(fdy) &* pw &+ Int(fdx)), referenceWidth: pw, frame: f,
                                          gradientX: gxp, gradientY: gyp, width: w, x: xLo, y: yLo, xEnd: xHi, yEnd: yHi,
                                          step: step, ax: dx - dx.rounded(.down), ay: dy - dy.rounded(.down))
                }
            } } } }
        }

        /// `accumulate`'s sums over one block (one channel): the reference (padded), already moved
        /// by the whole-pixel part of d, sampled bilinearly with the same weights (ax, ay) at every
        /// pixel. Kept apart so that its loop has registers to itself.
        /// Returns hxx, hxy, hyy, bx, by, Σ residual², the number of terms.
        @inline(never)
        static func blockSums(reference r: UnsafePointer<Float>, referenceWidth rw: Int, frame f: UnsafePointer<Float>,
                              gradientX gx: UnsafePointer<Float>, gradientY gy: UnsafePointer<Float>, width w: Int,
                              x xLo: Int, y yLo: Int, xEnd xHi: Int, yEnd yHi: Int, step: Int,
                              ax: Float, ay: Float) -> SIMD8<Float> {
            let w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay
            var hxx: Float = 0, hxy: Float = 0, hyy: Float = 0, bx: Float = 0, by: Float = 0, rr: Float = 0, count: Float = 0
            var py = yLo
            while py <= yHi {
                let top = r + py &* rw, bottom = top + rw, line = py &* w
                var px = xLo
                while px <= xHi {
                    let residual = (w00 * top[px] + w01 * top[px &+ 1]) + (w10 * bottom[px] + w11 * bottom[px &+ 1]) - f[line &+ px]
                    let u = gx[line &+ px], v = gy[line &+ px]
                    hxx += u * u; hxy += u * v; hyy += v * v
                    bx -= u * residual; by -= v * residual
                    rr += residual * residual
                    count += 1
                    px &+= step
                }
                py &+= step
            }
            return SIMD8(hxx, hxy, hyy, bx, by, rr, count, 0)
        }

        /// PatchMatch's propagation: each sample tries the displacements of the neighbours already
        /// visited in this pass and keeps whichever matches its block best, scanning down-right,
        /// then up-left. A region the attention matched to the wrong place, next to one it matched
        /// right, is taken over by the right answer wherever the pictures can tell them apart.
        func propagate(dx: inout [Float], dy: inout [Float]) {
            let n = fw &* fh
            withBlocks { block in
                // The mean squared difference over the block (`accumulate`'s pixels, read as it reads them).
                func cost(_ index: Int, _ x: Float, _ y: Float) -> Float {
                    let sums = block(index, x, y)
                    return sums[6] > 0 ? sums[5] / sums[6] : .infinity
                }
                var costs = (0..<n).map { cost($0, dx[$0], dy[$0]) }
                for pass in 0..<2 {
                    let forward = pass == 0
                    for step in 0..<n {
                        let index = forward ? step : n &- 1 &- step
                        let i = index % fw, j = index / fw
                        let left = forward ? (i > 0 ? index &- 1 : -1) : (i &+ 1 < fw ? index &+ 1 : -1)
                        let up = forward ? (j > 0 ? index &- fw : -1) : (j &+ 1 < fh ? index &+ fw : -1)
                        for other in [left, up] where other >= 0 {
                            let ox = dx[other], oy = dy[other]
                            if abs(ox - dx[index]) + abs(oy - dy[index]) < 0.5 { continue }
                            let c = cost(index, ox, oy)
                            if c < costs[index] { costs[index] = c; dx[index] = ox; dy[index] = oy }
                        }
                    }
                }
            }
        }
    }

    /// How a displacement field changes across the picture, per pixel: ∂dx/∂x, ∂dx/∂y, ∂dy/∂x,
    /// ∂dy/∂y (zero for a pan, −0.16 on both diagonals for a 1.19× zoom in).
    struct Slope {
        let xx: Float, xy: Float, yx: Float, yy: Float
        static let zero = Slope(xx: 0, xy: 0, yx: 0, yy: 0)
    }
}

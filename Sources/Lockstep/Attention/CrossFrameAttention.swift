import Foundation
import Tensor

/// Where each position of a frame comes from in the reference: a sub-pixel position per query
/// position (in reference feature-grid samples), and how much to trust it, in [0, 1].
public struct CorrespondenceField: Sendable {
    public let width: Int
    public let height: Int
    public var x: [Float]
    public var y: [Float]
    public var confidence: [Float]

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
        x = [Float](repeating: 0, count: width * height)
        y = x
        confidence = x
    }

    public init(width: Int, height: Int, x: [Float], y: [Float], confidence: [Float]) {
        precondition(x.count == width * height && y.count == x.count && confidence.count == x.count)
        self.width = width
        self.height = height
        self.x = x
        self.y = y
        self.confidence = confidence
    }

    /// This field, found on pyramid level `level`, on the level-0 grid of `width` × `height`
    /// samples: sample X of level l sits at 2^l·X + (2^l − 1)/2 on level 0 (`FeaturePyramid`), and
    /// the displacement and confidence are interpolated bilinearly between level-l samples.
    public func expanded(from level: Int, toWidth width: Int, height: Int) -> CorrespondenceField {
        if level == 0 { return self }
        let scale = Float(1 << level), offset = (scale - 1) / 2
        var out = CorrespondenceField(width: width, height: height)
        var displacement = self
        for i in 0..<x.count {
            displacement.x[i] = x[i] - Float(i % self.width)
            displacement.y[i] = y[i] - Float(i / self.width)
        }
        for j in 0..<height {
            let v = (Float(j) - offset) / scale
            for i in 0..<width {
                let u = (Float(i) - offset) / scale
                let d = displacement.sample(u, v)
                let o = j * width + i
                out.x[o] = Float(i) + scale * d.x
                out.y[o] = Float(j) + scale * d.y
                out.confidence[o] = displacement.sampleConfidence(u, v)
            }
        }
        return out
    }

    /// The field at a fractional query position (bilinear; clamped at the borders).
    func sample(_ px: Float, _ py: Float) -> (x: Float, y: Float) {
        (Self.bilinear(x, width: width, height: height, px, py), Self.bilinear(y, width: width, height: height, px, py))
    }

    /// Where a query at a fractional position lands: inside the grid, `sample` (bilinear is exact
    /// on positions, so this is the position plus the displacement there); past the grid's last
    /// samples, the query's own position plus the displacement at the nearest edge, which a
    /// clamped position would put up to the query's distance inwards.
    func landing(_ px: Float, _ py: Float) -> (x: Float, y: Float) {
        let at = sample(px, py)
        return (at.x + px - min(max(px, 0), Float(width - 1)), at.y + py - min(max(py, 0), Float(height - 1)))
    }

    /// The confidence at a fractional query position, likewise.
    func sampleConfidence(_ px: Float, _ py: Float) -> Float {
        Self.bilinear(confidence, width: width, height: height, px, py)
    }

    @inline(__always)
    static func bilinear(_ v: [Float], width: Int, height: Int, _ px: Float, _ py: Float) -> Float {
        let fx = min(max(px, 0), Float(width - 1)), fy = min(max(py, 0), Float(height - 1))
        let x0 = Int(fx), y0 = Int(fy)
        let x1 = min(x0 + 1, width - 1), y1 = min(y0 + 1, height - 1)
        let ax = fx - Float(x0), ay = fy - Float(y0)
        let top = v[y0 * width + x0] * (1 - ax) + v[y0 * width + x1] * ax
        let bottom = v[y1 * width + x0] * (1 - ax) + v[y1 * width + x1] * ax
        return top * (1 - ay) + bottom * ay
    }
}

/// Cross-frame attention with a fixed reference (AF-LDM): queries from the current frame's
/// features, keys from the reference's, computed once and cached. The values are the reference
/// positions, so the attention output is a correspondence:
///
///   out(p) = Σ_q softmax_q(⟨Q(p), K(q)⟩ / τ) · q
///
/// Exact attention over all positions is O(N²); it runs coarse to fine instead. At the coarsest
/// level every query attends to every key (a matrix product through BLAS); the peak's
/// neighbourhood gives the position, and the whole softmax's peak weight says how unique the
/// match is. Each finer level attends within a (2r+1)² window around the coarser answer, so large
/// motions are found globally and refined locally; at the finest level, Gauss–Newton steps on
/// the features take the answer below the grid. Queries and keys are unit-length 3×3
/// neighbourhood descriptors, so ⟨Q, K⟩ is a correlation in [−1, 1] and τ sets how sharply it selects.
public struct CrossFrameAttention: Sendable {
    public struct Configuration: Sendable {
        /// Pyramid levels, finest included.
        public var levels = 4
        /// Window radius of the refinement levels, in samples of each level.
        public var windowRadius = 3
        /// Softmax temperature on correlations.
        public var temperature: Float = 0.02
        /// λ of the motion prior: score penalty per squared sample of distance from the expected
        /// place (the same place at the coarsest level, the coarser answer below).
        public var motionPrior: Float = 1e-3
        /// Forward–backward disagreement (feature-grid samples) at which confidence falls to e^-½.
        public var consistencyScale: Float = 0.75
        /// Gauss–Newton steps under the finest level's grid. A caller that refines the answer on
        /// the pictures anyway (`ImageAlignment`) can do without them.
        public var subsampleSteps = true
        /// The pyramid level the search stops at (0: the features' own grid); the answer is then
        /// interpolated onto the finest grid. A caller that refines it on the pictures from the
        /// answer pooled 2^l × 2^l (`ImageAlignment.startingLevel`) need not search much finer:
        /// level 0 alone is three quarters of the search's work.
        public var finestLevel = 0

        public init() {}
    }

    public let configuration: Configuration
    /// The reference's features at every level: the cached keys.
    public let reference: FeaturePyramid

    public init(reference features: PlanarImage, configuration: Configuration = Configuration()) {
        self.init(reference: FeaturePyramid(features, levels: configuration.levels, from: configuration.finestLevel), configuration: configuration)
    }

    /// With the reference's pyramid built beforehand (of `configuration.levels` levels).
    public init(reference pyramid: FeaturePyramid, configuration: Configuration = Configuration()) {
        self.configuration = configuration
        reference = pyramid
    }

    /// Where each position of the frame with `features` comes from in the reference, with a
    /// confidence that combines the match's uniqueness and a forward–backward check.
    public func correspondence(for features: PlanarImage) -> CorrespondenceField {
        correspondence(for: FeaturePyramid(features, levels: configuration.levels, from: configuration.finestLevel))
    }

    /// The same from the frame's pyramid, built beforehand (of `configuration.levels` levels).
    public func correspondence(for frame: FeaturePyramid) -> CorrespondenceField {
        var forward = Self.search(queries: frame, keys: reference, configuration)
        let backward = Self.search(queries: reference, keys: frame, configuration)
        // Agreement in samples of the level the search stopped at, where the answer was decided.
        let scale = 2 * configuration.consistencyScale * configuration.consistencyScale
        for i in 0..<forward.field.x.count {
            let px = Float(i % forward.field.width), py = Float(i / forward.field.width)
            let back = backward.field.sample(forward.field.x[i], forward.field.y[i])
            let dx = back.x - px, dy = back.y - py
            forward.field.confidence[i] *= exp(-(dx * dx + dy * dy) / scale)
        }
        return forward.field.expanded(from: forward.level, toWidth: frame.width, height: frame.height)
    }

    /// The correspondence with confidence from uniqueness alone (no backward search).
    public func correspondenceWithoutConsistencyCheck(for features: PlanarImage) -> CorrespondenceField {
        let (field, level) = Self.search(queries: FeaturePyramid(features, levels: configuration.levels, from: configuration.finestLevel),
                                         keys: reference, configuration)
        return field.expanded(from: level, toWidth: features.width, height: features.height)
    }

    /// Coarse-to-fine attention from `queries` into `keys`, down to `configuration.finestLevel`
    /// (or the coarsest level both pyramids have); the field on that level's grid, and the level.
    /// Confidence is the uniqueness alone.
    static func search(queries: FeaturePyramid, keys: FeaturePyramid, _ configuration: Configuration) -> (field: CorrespondenceField, level: Int) {
        let depth = min(queries.depth, keys.depth)
        let finest = min(max(configuration.finestLevel, 0), depth - 1)
        var field = globalLevel(queries[depth - 1], keys[depth - 1], configuration)
        var level = depth - 2
        while level >= finest {
            // Sub-sample accuracy matters only for the finest level's answer.
            field = refine(queries[level], keys[level], coarse: field, configuration, refineSubpixel: level == finest && configuration.subsampleSteps)
            level -= 1
        }
        return (field, finest)
    }

    // MARK: Global attention at the coarsest level

    static func globalLevel(_ q: FeatureLevel, _ k: FeatureLevel, _ configuration: Configuration) -> CorrespondenceField {
        var field = CorrespondenceField(width: q.width, height: q.height)
        let nq = q.count, nk = k.count, c = q.descriptorLength
        let inverseTau = 1 / configuration.temperature, prior = configuration.motionPrior
        let q0Width = q.width
        let scaleX = Float(k.width) / Float(q.width), scaleY = Float(k.height) / Float(q.height)
        let block = 256
        var scores = [Float](repeating: 0, count: block * nk)
        q.positionMajor.withUnsafeBufferPointer { qp in
            k.positionMajor.withUnsafeBufferPointer { kp in
                scores.withUnsafeMutableBufferPointer { sp in
                    var start = 0
                    while start < nq {
                        let m = min(block, nq - start)
                        // scores[i, j] = ⟨Q(start + i), K(j)⟩
                        gemm(m: m, n: nk, k: c, alpha: 1, a: qp.baseAddress! + start &* c, lda: c, transposeA: false,
                             b: kp.baseAddress!, ldb: c, transposeB: true, beta: 0, c: sp.baseAddress!, ldc: nk)
                        let s = sp.baseAddress!
                        let fieldStart = start
                        field.x.withUnsafeMutableBufferPointer { fx in
                        field.y.withUnsafeMutableBufferPointer { fy in
                        field.confidence.withUnsafeMutableBufferPointer { fc in
                            parallelChunks(m, minimumChunk: 16) { rows in
                                for i in rows {
                                    let row = s + i &* nk
                                    // Motion prior: a score costs λ·d² for the distance d from the
                                    // same place, so among equally good matches (flat or repeating
                                    // content) the nearest wins, and an image matched with itself
                                    // gives the identity. Distinct matches differ by far more.
                                    let q = fieldStart &+ i
                                    let qx = Float(q % q0Width) * scaleX, qy = Float(q / q0Width) * scaleY
                                    for j in 0..<nk {
                                        let dx = Float(j % k.width) - qx, dy = Float(j / k.width) - qy
                                        row[j] -= prior * (dx * dx + dy * dy)
                                    }
                                    var best = 0
                                    var peak = row[0]
                                    for j in 1..<nk where row[j] > peak { peak = row[j]; best = j }
                                    var total: Float = 0
                                    for j in 0..<nk { total += exp((row[j] - peak) * inverseTau) }
                                    let (x, y, _) = softArgmax(row, width: k.width, height: k.height, center: best,
                                                               radius: 1, peak: peak, inverseTau: inverseTau, symmetric: true)
                                    let (_, _, near) = softArgmax(row, width: k.width, height: k.height, center: best,
                                                                  radius: 2, peak: peak, inverseTau: inverseTau, symmetric: false)
                                    fx[fieldStart &+ i] = x
                                    fy[fieldStart &+ i] = y
                                    // Uniqueness: the share of the whole softmax that falls within two
                                    // samples of the peak (smooth features make neighbours alike).
                                    fc[fieldStart &+ i] = near / total
                                }
                            }
                        } } }
                        start += m
                    }
                }
            }
        }
        return field
    }

    /// The softmax-weighted mean position over the (2r+1)² keys around `center`, from a full
    /// row of scores (key j at x = j mod width, y = j / width), and the unnormalised weight there.
    @inline(__always)
    static func softArgmax(_ row: UnsafePointer<Float>, width: Int, height: Int, center: Int, radius: Int,
                           peak: Float, inverseTau: Float, symmetric: Bool) -> (Float, Float, Float) {
        let cx = center % width, cy = center / width
        // For the mean, a neighbourhood cut by the grid's edge on one side is cut on the other too,
        // so it stays symmetric; for the mass, it is simply clipped.
        let rx = symmetric ? min(radius, cx, width - 1 - cx) : radius
        let ry = symmetric ? min(radius, cy, height - 1 - cy) : radius
        var sw: Float = 0, sx: Float = 0, sy: Float = 0
        for y in max(cy - ry, 0)...min(cy + ry, height - 1) {
            for x in max(cx - rx, 0)...min(cx + rx, width - 1) {
                let w = exp((row[y &* width &+ x] - peak) * inverseTau)
                sw += w; sx += w * Float(x); sy += w * Float(y)
            }
        }
        return (sx / sw, sy / sw, sw)
    }

    // MARK: Sub-sample refinement

    /// Gauss–Newton steps on Σ_c (Q_c − K_c(x, y))², with K and its gradient from the same
    /// Catmull–Rom interpolation (the interpolant's exact derivative, from the same 4×4 taps).
    /// The softmax's weighted mean is biased towards grid points unless the score surface is
    /// exactly Gaussian around its peak; for band-limited features these steps converge to the
    /// true sub-sample match.
    @inline(__always)
    static func lucasKanade(query: UnsafePointer<Float>, keys: UnsafePointer<Float>, width: Int, height: Int, channels c: Int,
                            x startX: Float, y startY: Float, scratch: inout [Float]) -> (Float, Float) {
        var x = startX, y = startY
        let limitX = Float(width - 2), limitY = Float(height - 2)
        return scratch.withUnsafeMutableBufferPointer { buffer in
            let value = buffer.baseAddress!, gradX = value + c, gradY = gradX + c
            for _ in 0..<3 {
                guard x > 1, x < limitX, y > 1, y < limitY else { break }
                sampleCubicWithGradient(keys, width: width, channels: c, x: x, y: y, value: value, gradX: gradX, gradY: gradY)
                var axx: Float = 0, axy: Float = 0, ayy: Float = 0, bx: Float = 0, by: Float = 0
                for ch in 0..<c {
                    let gx = gradX[ch], gy = gradY[ch]
                    let residual = query[ch] - value[ch]
                    axx += gx * gx; axy += gx * gy; ayy += gy * gy
                    bx += gx * residual; by += gy * residual
                }
                let det = axx * ayy - axy * axy
                guard det > 1e-12 * max(axx * ayy, 1e-30) else { break }
                let dx = (ayy * bx - axy * by) / det, dy = (axx * by - axy * bx) / det
                // A step longer than a sample means the linearisation does not hold here.
                guard abs(dx) <= 1, abs(dy) <= 1 else { break }
                x += dx; y += dy
                if dx * dx + dy * dy < 1e-6 { break }
            }
            // Never leave the cell the attention chose by more than a sample.
            return (min(max(x, startX - 1), startX + 1), min(max(y, startY - 1), startY + 1))
        }
    }

    /// The derivative of `catmullRomWeights(t)` with respect to t.
    @inline(__always)
    static func catmullRomDerivativeWeights(_ t: Float) -> SIMD4<Float> {
        let t2 = t * t
        return SIMD4(0.5 * (-3 * t2 + 4 * t - 1), 0.5 * (9 * t2 - 10 * t), 0.5 * (-9 * t2 + 8 * t + 1), 0.5 * (3 * t2 - 2 * t))
    }

    /// Catmull–Rom interpolation of position-major features at (x, y), and its x and y
    /// derivatives; needs 1 ≤ x ≤ width − 3 (and likewise y).
    @inline(__always)
    static func sampleCubicWithGradient(_ keys: UnsafePointer<Float>, width: Int, channels c: Int, x: Float, y: Float,
                                        value: UnsafeMutablePointer<Float>, gradX: UnsafeMutablePointer<Float>,
                                        gradY: UnsafeMutablePointer<Float>) {
        let ix = Int(x.rounded(.down)), iy = Int(y.rounded(.down))
        let fx = x - Float(ix), fy = y - Float(iy)
        let wx = catmullRomWeights(fx), wy = catmullRomWeights(fy)
        let dwx = catmullRomDerivativeWeights(fx), dwy = catmullRomDerivativeWeights(fy)
        for ch in 0..<c { value[ch] = 0; gradX[ch] = 0; gradY[ch] = 0 }
        for j in 0..<4 {
            let row = keys + ((iy &- 1 &+ j) &* width &+ ix &- 1) &* c
            let a = wy[j], da = dwy[j]
            for ch in 0..<c {
                let t0 = row[ch], t1 = row[c &+ ch], t2 = row[2 &* c &+ ch], t3 = row[3 &* c &+ ch]
                let h = wx[0] * t0 + wx[1] * t1 + wx[2] * t2 + wx[3] * t3
                let hd = dwx[0] * t0 + dwx[1] * t1 + dwx[2] * t2 + dwx[3] * t3
                value[ch] += a * h
                gradX[ch] += a * hd
                gradY[ch] += da * h
            }
        }
    }

    // MARK: Windowed refinement

    static func refine(_ q: FeatureLevel, _ k: FeatureLevel, coarse: CorrespondenceField,
                       _ configuration: Configuration, refineSubpixel: Bool = false) -> CorrespondenceField {
        var field = CorrespondenceField(width: q.width, height: q.height)
        let c = q.descriptorLength, pointChannels = q.channels, r = configuration.windowRadius, side = 2 * r + 1
        let inverseTau = 1 / configuration.temperature, prior = configuration.motionPrior
        let kw = k.width, kh = k.height, qw = q.width
        q.positionMajor.withUnsafeBufferPointer { qp in
        k.positionMajor.withUnsafeBufferPointer { kp in
        q.pointFeatures.withUnsafeBufferPointer { qPoints in
        k.pointFeatures.withUnsafeBufferPointer { kPoints in
        field.x.withUnsafeMutableBufferPointer { fx in
        field.y.withUnsafeMutableBufferPointer { fy in
        field.confidence.withUnsafeMutableBufferPointer { fc in
            parallelChunks(q.height, minimumChunk: 2) { rows in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: side * side)
                defer { scores.deallocate() }
                var scratch = [Float](repeating: 0, count: 3 * pointChannels)
                for py in rows {
                    for px in 0..<qw {
                        let i = py &* qw &+ px
                        // This query sits at ((px − ½)/2, (py − ½)/2) on the coarse grid; the coarse
                        // answer maps back as 2X + ½. Past the coarse grid's last sample (a level
                        // whose side is odd loses its last row or column to the pooling) the coarse
                        // displacement is carried out to the query (`landing`): a clamped position
                        // put the guess up to 1.5 samples inwards, and the motion prior pulled the
                        // border's matches in after it, further at every level.
                        let guess = coarse.landing((Float(px) - 0.5) / 2, (Float(py) - 0.5) / 2)
                        let gx = 2 * guess.x + 0.5, gy = 2 * guess.y + 0.5
                        // Window centred on the coarse answer (clamped into the grid); keys outside
                        // the grid score −∞ rather than the window sliding inwards, which would pull
                        // the weighted mean off-centre along the borders.
                        let cx = min(max(Int(gx.rounded()), 0), kw - 1)
                        let cy = min(max(Int(gy.rounded()), 0), kh - 1)
                        let query = qp.baseAddress! + i &* c
                        var peak = -Float.infinity
                        // The window's keys in the grid: each row's run of them is contiguous.
                        let x0 = max(cx - r, 0), x1 = min(cx + r, kw - 1)
                        for wy in (cy - r)...(cy + r) {
                            let row = scores + (wy - cy + r) &* side
                            guard wy >= 0 && wy < kh else {
                                for n in 0..<side { row[n] = -.infinity }
                                continue
                            }
                            for wx in (cx - r)..<x0 { row[wx - cx + r] = -.infinity }
                            for wx in (x1 + 1)..<(cx + r + 1) { row[wx - cx + r] = -.infinity }
                            dotProducts(query, keys: kp.baseAddress! + (wy &* kw &+ x0) &* c, length: c, count: x1 - x0 + 1,
                                        into: row + (x0 - cx + r))
                            let oy = Float(wy) - gy
                            for wx in x0...x1 {
                                let ox = Float(wx) - gx, n = wx &- cx &+ r
                                let score = row[n] - prior * (ox * ox + oy * oy)  // the motion prior, around the coarse answer
                                row[n] = score
                                if score > peak { peak = score }
                            }
                        }
                        // The attention output: the softmax-weighted mean position over the best
                        // key's 3×3 neighbourhood. (Over the whole window, a broad softmax in flat
                        // content would drift towards the window's centre of mass.)
                        var best = 0
                        for j in 1..<(side &* side) where scores[j] > scores[best] { best = j }
                        let bx = best % side, by = best / side
                        // A neighbourhood cut by the grid's edge is cut on both sides, so it stays
                        // symmetric and the mean is not pulled inwards.
                        let keyX = cx - r + bx, keyY = cy - r + by
                        let spanX = bx > 0 && bx < side - 1 && keyX > 0 && keyX < kw - 1 ? 1 : 0
                        let spanY = by > 0 && by < side - 1 && keyY > 0 && keyY < kh - 1 ? 1 : 0
                        var sw: Float = 0, sx: Float = 0, sy: Float = 0
                        for oy in (by - spanY)...(by + spanY) {
                            for ox in (bx - spanX)...(bx + spanX) {
                                let score = scores[oy &* side &+ ox]
                                guard score > -.infinity else { continue }
                                let weight = exp((score - peak) * inverseTau)
                                sw += weight; sx += weight * Float(cx - r + ox); sy += weight * Float(cy - r + oy)
                            }
                        }
                        var x = sx / sw, y = sy / sw
                        if refineSubpixel {
                            (x, y) = lucasKanade(query: qPoints.baseAddress! + i &* pointChannels, keys: kPoints.baseAddress!,
                                                 width: kw, height: kh, channels: pointChannels, x: x, y: y, scratch: &scratch)
                        }
                        fx[i] = x
                        fy[i] = y
                        // Uniqueness carries down from the global level.
                        let coarseIndex = min(max((py - 1) / 2, 0), coarse.height - 1) * coarse.width
                            + min(max((px - 1) / 2, 0), coarse.width - 1)
                        fc[i] = coarse.confidence[coarseIndex]
                    }
                }
            }
        } } } } } } }
        return field
    }
}

import Foundation
import Tensor

/// What of a keyframe's edit its colour part leaves (a stylisation's strokes and outlines, a
/// pencil sketch's hatching), predicted from a picture's local detail: a linear function, fitted
/// on the keyframe, of its luma's band-pass detail at four scales and of that detail's size
/// (image analogies at their simplest: an edit that the keyframe's filter made of its edges and
/// texture is made again of each frame's own). It is what content that neither the transport
/// nor the synthesis reaches gets beside the colour part, so a frame whose match to the
/// keyframe has failed still looks stylised, and it moves with the frame's own content, so it
/// cannot flicker or seam. Kept only where it predicts the part of the keyframe it was not
/// fitted on (`init`): a painted label or a grade's rounding is no function of the detail.
struct DetailPrediction: Sendable {
    /// Band-pass levels: luma less its 2×2-pooled version spread back, at 1, 2, 4 and 8 px.
    static let levels = 4
    /// Per pixel: the luma's detail at each level, its absolute value, its square; the finest
    /// level's detail of the two colour differences (red − luma, blue − luma) and their absolute
    /// values; the luma's gradient magnitude at full and half resolution and their squares; and
    /// 1. A stroke's darkness is an even function of the detail it is drawn on (an outline
    /// darkens either side of an edge) that saturates, which |d| and d² take to second order;
    /// and a stroke lies on an edge of colour as well as one of brightness. The band-pass detail
    /// is a second difference, which crosses zero on an edge's line; the gradient's size peaks
    /// there, whatever the edge's direction, and that is where outlines and strokes are drawn.
    /// (Measured in Python first, a linear model of the truth fitted on frame 0 and read on
    /// frames 8–47 of six stylised and pencil cases: 23.35 → 26.40 dB with the gradient's size
    /// at 1, 2 and 4 px, 26.36 at 1 and 2 px, 25.92 at 2 px alone.) Not kept: the detail times
    /// the pixel's luma, as a stroke's darkness might depend on what it is drawn over (0.02 dB
    /// on the evaluation's cases, 0.04 on mine, for twice the prediction's work); the gradient's
    /// size times it (+0.1 to +0.2 dB, but half a sticker's outline drawn on a lookalike: in
    /// docs/edit.md).
    static let features = 3 * levels + 2 * colourDifferences + 2 * gradientScales + 1
    /// The scales of the gradient's size: full resolution and the 2×2 pooling.
    static let gradientScales = 2
    /// The colour differences whose finest detail is a feature.
    static let colourDifferences = 2
    /// Where each group of features starts: the colour differences' details, then their sizes,
    /// then the gradient's sizes and their squares, then the constant.
    static let colourDetailAt = 3 * levels, gradientAt = colourDetailAt + 2 * colourDifferences, constantAt = features - 1
    /// Per channel, one weight per feature.
    let weights: [Float]

    /// The luma pyramid of a picture: `pooled[l]` is its 2^(l+1) × 2^(l+1) average pooling, for
    /// the `levels` levels below full resolution, and its colour differences' first level,
    /// read back at full resolution row by row (`features(row:red:blue:luma:into:)`).
    struct Pyramid {
        let width: Int, height: Int
        let pooled: [PlanarImage]
        /// The colour differences (red − luma, blue − luma) 2×2-pooled, two planes; nil where the
        /// picture is too small to pool.
        let pooledColour: PlanarImage?
        /// The luma's gradient magnitude (`gradientMagnitude`) at full resolution, of the luma
        /// smoothed once by [1 2 1]/4 (a pixel's own noise weighs less in it, an edge as much),
        /// and at the 2×2 pooling (nil where the picture is too small to pool).
        let gradient: PlanarImage, pooledGradient: PlanarImage?
        /// Per level, per full-resolution column: the level's column at or before it, and the
        /// next one's weight.
        let columns: [(index: [Int32], weight: [Float])]

        init(_ picture: PlanarImage) {
            width = picture.width
            height = picture.height
            var levels: [PlanarImage] = []
            var current = luma(picture)
            pooledColour = picture.width >= 2 && picture.height >= 2 ? Self.colourDifferencePlanes(picture, luma: current).averagePooled2() : nil
            gradient = Self.gradientMagnitude(current.binomialSmoothed())
            for _ in 0..<DetailPrediction.levels {
                guard current.width >= 2, current.height >= 2 else { break }
                current = current.averagePooled2()
                levels.append(current)
            }
            pooled = levels
            pooledGradient = levels.first.map(Self.gradientMagnitude)
            columns = levels.enumerated().map { l, level in
                let s = Float(1 << (l + 1)), offset = (s - 1) / 2, lw = level.width
                var index = [Int32](repeating: 0, count: picture.width), weight = [Float](repeating: 0, count: picture.width)
                for x in 0..<picture.width {
                    let g = min(max((Float(x) - offset) / s, 0), Float(lw - 1))
                    let x0 = min(Int(g), lw - 2)
                    index[x] = Int32(max(x0, 0))
                    weight[x] = lw > 1 ? g - Float(max(x0, 0)) : 0
                }
                return (index, weight)
            }
        }

        /// Row `y`'s detail at each scale l, given to `body` as the row it is the difference of
        /// (`body(l, finer, coarser)`, detail = finer − coarser), from the row's luma; `scratch`
        /// holds two rows. A pooling by s puts its pixel u at full-resolution pixel s·u + (s − 1)/2;
        /// each pooled level is read back bilinearly (clamped at the edges), and the detail at
        /// scale l is the difference between the picture pooled by 2^l and by 2^(l+1), so read (the
        /// luma itself for 2⁰).
        @inline(__always)
        func forEachDetail(row y: Int, luma: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                           _ body: (Int, UnsafePointer<Float>, UnsafePointer<Float>) -> Void) {
            let w = width
            var previous = luma, smooth = scratch, other = scratch + w
            for l in 0..<DetailPrediction.levels {
                if l < pooled.count {
                    upsampledRow(l, y: y, into: smooth)
                } else {
                    smooth.update(from: previous, count: w)
                }
                body(l, previous, UnsafePointer(smooth))
                previous = UnsafePointer(smooth)
                swap(&smooth, &other)
            }
        }

        /// The size of a plane's gradient by Sobel's 3 × 3 differences, edges repeated:
        /// √(gx² + gy²), one plane.
        static func gradientMagnitude(_ plane: PlanarImage) -> PlanarImage {
            let w = plane.width, h = plane.height
            var out = PlanarImage(uninitializedChannels: 1, height: h, width: w)
            plane.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { o in
                let src = p.baseAddress!, dst = o.baseAddress!
                parallelChunks(h, minimumChunk: 16) { rows in
                    for y in rows {
                        let up = src + max(y &- 1, 0) &* w, mid = src + y &* w, down = src + min(y &+ 1, h &- 1) &* w
                        let row = dst + y &* w
                        for x in 0..<w {
                            let l = max(x &- 1, 0), r = min(x &+ 1, w &- 1)
                            let gx = (up[r] - up[l]) + 2 * (mid[r] - mid[l]) + (down[r] - down[l])
                            let gy = (down[l] - up[l]) + 2 * (down[x] - up[x]) + (down[r] - up[r])
                            row[x] = (gx * gx + gy * gy).squareRoot()
                        }
                    }
                }
            } }
            return out
        }

        /// Row `y` of the gradient's size at both scales into `out` (two rows of `width`): at full
        /// resolution as it is, the pooled one read back as the pooled levels are (0 where the
        /// picture is too small to pool).
        func gradientRows(_ y: Int, into out: UnsafeMutablePointer<Float>) {
            gradient.withUnsafeBufferPointer { g in out.update(from: g.baseAddress! + y &* width, count: width) }
            if let pooledGradient {
                upsampledRow(pooledGradient, channel: 0, columns: columns[0], scale: 2, y: y, into: out + width)
            } else {
                (out + width).initialize(repeating: 0, count: width)
            }
        }

        /// Red − luma and blue − luma, two planes.
        static func colourDifferencePlanes(_ picture: PlanarImage, luma: PlanarImage) -> PlanarImage {
            let n = picture.planeSize
            var out = PlanarImage(uninitializedChannels: 2, height: picture.height, width: picture.width)
            picture.withUnsafeBufferPointer { p in luma.withUnsafeBufferPointer { l in out.withUnsafeMutableBufferPointer { o in
                for i in 0..<n {
                    o[i] = p[i] - l[i]
                    o[n &+ i] = p[2 &* n &+ i] - l[i]
                }
            } } }
            return out
        }

        /// Row `y`'s detail of the colour differences at the finest level (each less its 2×2
        /// pooling read back, as the luma's), into `out` (two rows of `width`), from the row's
        /// colours and luma; 0 where the picture is too small to pool.
        func colourDetail(row y: Int, red: UnsafePointer<Float>, blue: UnsafePointer<Float>, luma: UnsafePointer<Float>,
                          into out: UnsafeMutablePointer<Float>) {
            let w = width
            guard let pooledColour else {
                out.initialize(repeating: 0, count: DetailPrediction.colourDifferences * w)
                return
            }
            for c in 0..<DetailPrediction.colourDifferences {
                let row = out + c &* w, colour = c == 0 ? red : blue
                upsampledRow(pooledColour, channel: c, columns: columns[0], scale: 2, y: y, into: row)
                for x in 0..<w { row[x] = colour[x] - luma[x] - row[x] }
            }
        }

        /// Row `y`'s features into `out` (`features` planes of `width`), from the row's colours
        /// and luma: the luma's detail at each scale (`forEachDetail`), its absolute value, its
        /// square, the colour differences' finest detail (`colourDetail`) and its absolute value,
        /// the gradient's size at both scales (`gradientRows`) and its square, and 1.
        func features(row y: Int, red: UnsafePointer<Float>, blue: UnsafePointer<Float>, luma: UnsafePointer<Float>,
                      into out: UnsafeMutablePointer<Float>) {
            let w = width, count = DetailPrediction.levels
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * w) { scratch in
                forEachDetail(row: y, luma: luma, scratch: scratch.baseAddress!) { l, finer, coarser in
                    let detail = out + l &* w, size = out + (count &+ l) &* w, square = out + (2 &* count &+ l) &* w
                    for x in 0..<w {
                        let d = finer[x] - coarser[x]
                        detail[x] = d
                        size[x] = abs(d)
                        square[x] = d * d
                    }
                }
            }
            let colour = out + DetailPrediction.colourDetailAt &* w, sizes = colour + DetailPrediction.colourDifferences &* w
            colourDetail(row: y, red: red, blue: blue, luma: luma, into: colour)
            for i in 0..<(DetailPrediction.colourDifferences &* w) { sizes[i] = abs(colour[i]) }
            let scales = DetailPrediction.gradientScales, gradients = out + DetailPrediction.gradientAt &* w
            gradientRows(y, into: gradients)
            for i in 0..<(scales &* w) { gradients[scales &* w &+ i] = gradients[i] * gradients[i] }
            let one = out + DetailPrediction.constantAt &* w
            for x in 0..<w { one[x] = 1 }
        }

        /// Full-resolution row `y` of `pooled[l]`, bilinearly: the level's two rows blended
        /// first (at the level's width), then read across.
        func upsampledRow(_ l: Int, y: Int, into out: UnsafeMutablePointer<Float>) {
            upsampledRow(pooled[l], channel: 0, columns: columns[l], scale: Float(1 << (l + 1)), y: y, into: out)
        }

        /// Full-resolution row `y` of channel `channel` of `level`, a pooling by `scale` read
        /// back through `columns` (the level's, as `columns` holds them).
        func upsampledRow(_ level: PlanarImage, channel: Int, columns: (index: [Int32], weight: [Float]), scale s: Float, y: Int,
                          into out: UnsafeMutablePointer<Float>) {
            let lw = level.width, lh = level.height, offset = (s - 1) / 2
            let gy = min(max((Float(y) - offset) / s, 0), Float(lh - 1))
            let y0 = min(Int(gy), lh - 1), y1 = min(y0 + 1, lh - 1), b = gy - Float(y0)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: lw + 1) { rowBuffer in
                let row = rowBuffer.baseAddress!
                level.withUnsafeBufferPointer { p in
                    let plane = p.baseAddress! + channel &* lw &* lh
                    let top = plane + y0 &* lw, bottom = plane + y1 &* lw
                    for x in 0..<lw { row[x] = top[x] + b * (bottom[x] - top[x]) }
                }
                row[lw] = row[lw - 1]
                columns.index.withUnsafeBufferPointer { ib in columns.weight.withUnsafeBufferPointer { wb in
                    for x in 0..<width {
                        let i = Int(ib[x]), a = wb[x]
                        out[x] = row[i] + a * (row[i &+ 1] - row[i])
                    }
                } }
            }
        }
    }

    /// The least-squares weights predicting `unexplained` (three planes: the keyframe's edit less
    /// its colour part) from `original`'s features, each channel's scaled by how far its
    /// prediction holds where it was not fitted, or nil where it predicts too little to be worth
    /// a frame's time. Fitted on half the keyframe's 32-pixel cells (a checkerboard) and read on
    /// the other half, both ways, for the scale; then on the whole keyframe.
    /// `pyramid`: `original`'s, where the caller has it already (made here otherwise).
    init?(original: PlanarImage, unexplained: PlanarImage, pyramid: Pyramid? = nil) {
        let w = original.width, h = original.height, k = Self.features
        guard w >= 16, h >= 16 else { return nil }
        let pyramid = pyramid ?? Pyramid(original)
        let grayscale = luma(original)
        // Normal equations per half of the checkerboard: XᵀX (k × k) and XᵀY (k × 3), Σ y². Every
        // other row and column: enough samples for seventeen weights, a quarter of the work. The
        // rows in a fixed number of bands, each summed on its own (a batch of samples at a time,
        // by BLAS) and the bands added in order, so the sums do not depend on the number of cores.
        let rows = Array(stride(from: 0, to: h, by: 2)), bands = min(16, rows.count)
        var bandSums = [[Double]](repeating: [], count: bands)
        grayscale.withUnsafeBufferPointer { l in unexplained.withUnsafeBufferPointer { u in original.withUnsafeBufferPointer { o in
        bandSums.withUnsafeMutableBufferPointer { out in
            let luma = l.baseAddress!, target = u.baseAddress!, colours = o.baseAddress!
            parallelChunks(bands) { range in
                for band in range {
                    out[band] = Self.normalEquations(rows: rows[(rows.count * band / bands)..<(rows.count * (band + 1) / bands)],
                                                     pyramid: pyramid, colours: colours, luma: luma, target: target)
                }
            }
        } } } }
        // Per half: gram (k·k), then cross (k·3), then energy (1).
        let layout = k * k + k * 3 + 1
        var gram = [[Double]](repeating: [Double](repeating: 0, count: k * k), count: 2)
        var cross = [[Double]](repeating: [Double](repeating: 0, count: k * 3), count: 2)
        var energy = [Double](repeating: 0, count: 2)
        for sums in bandSums {
            for half in 0..<2 {
                let base = half * layout
                for i in 0..<(k * k) { gram[half][i] += sums[base + i] }
                for i in 0..<(k * 3) { cross[half][i] += sums[base + k * k + i] }
                energy[half] += sums[base + k * k + k * 3]
            }
        }
        /// The weights, k per channel at [i · 3 + c], from one set of sums.
        func solved(_ g: [Double], _ b: [Double]) -> [Double] {
            var a = g
            for i in 0..<k { for j in 0..<i { a[i * k + j] = a[j * k + i] } }
            // A ridge of 10⁻⁶ of the mean diagonal: only to keep a flat keyframe's system solvable.
            var trace = 0.0
            for i in 0..<k { trace += a[i * k + i] }
            for i in 0..<k { a[i * k + i] += 1e-6 * trace / Double(k) + 1e-12 }
            var x = [Double](repeating: 0, count: k * 3)
            for c in 0..<3 {
                let channel = solveSymmetric(a, (0..<k).map { b[$0 * 3 + c] }, size: k)
                for i in 0..<k { x[i * 3 + c] = channel[i] }
            }
            return x
        }
        // Each half's fit read on the other half: per channel, Σ y·p and Σ p² there (p = Xw),
        // from that half's sums, so that the least-squares scale of the prediction on pixels it
        // was not fitted on is (Σ y·p) / (Σ p²).
        let first = solved(gram[0], cross[0]), second = solved(gram[1], cross[1])
        var agreement = [Double](repeating: 0, count: 3), power = agreement
        for (fit, other) in [(first, 1), (second, 0)] {
            for c in 0..<3 {
                for i in 0..<k {
                    agreement[c] += fit[i * 3 + c] * cross[other][i * 3 + c]
                    for j in 0..<k {
                        let gij = i <= j ? gram[other][i * k + j] : gram[other][j * k + i]
                        power[c] += fit[i * 3 + c] * gij * fit[j * 3 + c]
                    }
                }
            }
        }
        // The prediction scaled by that (within [0, 1]): as far as it holds where it was not
        // fitted. What it then takes away of the edit there, 2s·Σ y·p − s²·Σ p², must be 1% of
        // the edit or more for a frame to spend time on it (a graded keyframe with a painted
        // label: 0.07%; stylisations and pencil sketches of the evaluation: 28–30%).
        let scale = (0..<3).map { c in power[c] > 0 ? min(max(agreement[c] / power[c], 0), 1) : 0 }
        var removed = 0.0
        for c in 0..<3 { removed += scale[c] * (2 * agreement[c] - scale[c] * power[c]) }
        guard removed >= 0.01 * (energy[0] + energy[1]) else { return nil }
        var all = gram[0], both = cross[0]
        for i in all.indices { all[i] += gram[1][i] }
        for i in both.indices { both[i] += cross[1][i] }
        let fitted = solved(all, both)
        guard fitted.allSatisfy({ $0.isFinite }) else { return nil }
        weights = (0..<3).flatMap { c in (0..<k).map { i in Float(fitted[i * 3 + c] * scale[c]) } }
    }

    /// The normal equations' sums over `rows` (every other pixel of each), for each half of the
    /// checkerboard of 32-pixel cells: XᵀX (k × k, [i · k + j]), XᵀY (k × 3, [i · 3 + c]) and
    /// Σ y², one half after the other. Samples are gathered a batch at a time and their products
    /// taken by BLAS in single precision, each batch's added in double.
    static func normalEquations(rows: ArraySlice<Int>, pyramid: Pyramid, colours: UnsafePointer<Float>,
                                luma: UnsafePointer<Float>, target: UnsafePointer<Float>) -> [Double] {
        let w = pyramid.width, n = w * pyramid.height, k = Self.features, layout = k * k + k * 3 + 1
        var sums = [Double](repeating: 0, count: 2 * layout)
        let batch = 2048
        let row = UnsafeMutablePointer<Float>.allocate(capacity: k * w)
        let samples = UnsafeMutablePointer<Float>.allocate(capacity: 2 * (k + 3) * batch)
        let products = UnsafeMutablePointer<Float>.allocate(capacity: k * k + k * 3)
        defer { row.deallocate(); samples.deallocate(); products.deallocate() }
        var counts = [0, 0]
        // Half h's batch: k feature rows, then 3 target rows, each `batch` long.
        func buffer(_ half: Int) -> UnsafeMutablePointer<Float> { samples + half * (k + 3) * batch }
        func flush(_ half: Int) {
            let count = counts[half]
            guard count > 0 else { return }
            let a = buffer(half), y = a + k * batch
            gemm(m: k, n: k, k: count, a: a, lda: batch, b: a, ldb: batch, transposeB: true, c: products, ldc: k)
            gemm(m: k, n: 3, k: count, a: a, lda: batch, b: y, ldb: batch, transposeB: true, c: products + k * k, ldc: 3)
            let base = half * layout
            for i in 0..<(k * k + k * 3) { sums[base + i] += Double(products[i]) }
            var energy = 0.0
            for c in 0..<3 { for j in 0..<count { energy += Double(y[c * batch + j]) * Double(y[c * batch + j]) } }
            sums[base + k * k + k * 3] += energy
            counts[half] = 0
        }
        for y in rows {
            pyramid.features(row: y, red: colours + y * w, blue: colours + (2 * n + y * w), luma: luma + y * w, into: row)
            for x in stride(from: 0, to: w, by: 2) {
                let half = ((x / 32) + (y / 32)) % 2, a = buffer(half), j = counts[half]
                for i in 0..<k { a[i * batch + j] = row[i * w + x] }
                for c in 0..<3 { a[(k + c) * batch + j] = target[c * n + y * w + x] }
                counts[half] = j + 1
                if j + 1 == batch { flush(half) }
            }
        }
        flush(0); flush(1)
        return sums
    }

    /// Row `y`'s prediction into `out` (three planes of the row's width), from the row's colours
    /// and the frame's pyramid; `scratch` holds `scratchRows` rows. The features as
    /// `Pyramid.features` makes them, each scale's detail taken into the three channels as it is
    /// made (no feature planes written and read back).
    func predictRow(_ y: Int, red: UnsafePointer<Float>, green: UnsafePointer<Float>, blue: UnsafePointer<Float>,
                    pyramid: Pyramid, into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let w = pyramid.width, k = Self.features, count = Self.levels
        let grey = scratch
        for x in 0..<w { grey[x] = 0.2126 * red[x] + 0.7152 * green[x] + 0.0722 * blue[x] }
        weights.withUnsafeBufferPointer { wb in
            let ro = out, go = out + w, bo = out + 2 &* w
            let one = Self.constantAt
            let (r, g, b) = (wb[one], wb[k &+ one], wb[2 &* k &+ one])
            for x in 0..<w { ro[x] = r; go[x] = g; bo[x] = b }
            pyramid.forEachDetail(row: y, luma: grey, scratch: scratch + w) { l, finer, coarser in
                let (r0, r1, r2) = (wb[l], wb[count &+ l], wb[2 &* count &+ l])
                let (g0, g1, g2) = (wb[k &+ l], wb[k &+ count &+ l], wb[k &+ 2 &* count &+ l])
                let (b0, b1, b2) = (wb[2 &* k &+ l], wb[2 &* k &+ count &+ l], wb[2 &* k &+ 2 &* count &+ l])
                for x in 0..<w {
                    let d = finer[x] - coarser[x], a = abs(d), q = d * d
                    ro[x] += r0 * d + r1 * a + r2 * q
                    go[x] += g0 * d + g1 * a + g2 * q
                    bo[x] += b0 * d + b1 * a + b2 * q
                }
            }
            // The colour differences' finest detail, each into the three channels.
            let colour = scratch + 3 &* w
            pyramid.colourDetail(row: y, red: red, blue: blue, luma: grey, into: colour)
            for c in 0..<Self.colourDifferences {
                let detail = colour + c &* w, at = Self.colourDetailAt &+ c, size = at &+ Self.colourDifferences
                let (r0, r1) = (wb[at], wb[size]), (g0, g1) = (wb[k &+ at], wb[k &+ size]), (b0, b1) = (wb[2 &* k &+ at], wb[2 &* k &+ size])
                for x in 0..<w {
                    let d = detail[x], a = abs(d)
                    ro[x] += r0 * d + r1 * a
                    go[x] += g0 * d + g1 * a
                    bo[x] += b0 * d + b1 * a
                }
            }
            // The gradient's sizes and their squares (in the rows the details are done with).
            let gradients = scratch + w
            pyramid.gradientRows(y, into: gradients)
            for s in 0..<Self.gradientScales {
                let size = gradients + s &* w, at = Self.gradientAt &+ s, square = at &+ Self.gradientScales
                let (r0, r1) = (wb[at], wb[square]), (g0, g1) = (wb[k &+ at], wb[k &+ square]), (b0, b1) = (wb[2 &* k &+ at], wb[2 &* k &+ square])
                for x in 0..<w {
                    let a = size[x], q = a * a
                    ro[x] += r0 * a + r1 * q
                    go[x] += g0 * a + g1 * q
                    bo[x] += b0 * a + b1 * q
                }
            }
        }
    }

    /// The prediction for a whole picture, three planes; `pyramid` its pyramid, where the caller
    /// has it already.
    func predicted(_ picture: PlanarImage, pyramid: Pyramid? = nil) -> PlanarImage {
        let w = picture.width, h = picture.height, n = w * h
        let pyramid = pyramid ?? Pyramid(picture)
        var out = PlanarImage(uninitializedChannels: 3, height: h, width: w)
        picture.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { o in
            let src = p.baseAddress!, dst = o.baseAddress!
            parallelChunks(h, minimumChunk: 8) { rows in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: (3 + Self.scratchRows) * w) { buffer in
                    let row = buffer.baseAddress!
                    for y in rows {
                        predictRow(y, red: src + y &* w, green: src + (n &+ y &* w), blue: src + (2 &* n &+ y &* w),
                                   pyramid: pyramid, into: row, scratch: row + 3 &* w)
                        for c in 0..<3 { (dst + (c &* n &+ y &* w)).update(from: row + c &* w, count: w) }
                    }
                }
            }
        } }
        return out
    }

    /// Rows of scratch `predictRow` needs.
    static let scratchRows = 5
}

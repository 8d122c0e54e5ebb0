import Foundation
import Tensor

/// Carries a full-resolution image (an edit) along a correspondence found on a coarser feature
/// grid: out(X) = image(X + D(X)), where D is the field's displacement scaled to pixels and
/// interpolated to every pixel. The image is sampled by cubic B-spline interpolation on its
/// prefiltered coefficients: sub-pixel motion stays smooth where nearest or bilinear sampling
/// would shimmer or blur, and fine detail keeps its contrast at every phase of the shift, where
/// Catmull–Rom softens it (to 0.78 of its amplitude at 0.3 cycles/px, half-way between samples).
public enum Transport {
    /// - Parameters:
    ///   - image: what to carry, at full resolution (C × H × W), in reference coordinates.
    ///   - field: for each feature-grid position of the current frame, its reference position.
    ///   - factor: pixels per feature-grid sample.
    ///   - origin: the pixel position of feature sample 0 (the grid's phase, e.g. (k − 1)/2).
    /// - Returns: the carried image and the field's confidence at every pixel (1 × H × W).
    public static func carry(_ image: PlanarImage, along field: CorrespondenceField, factor: Int,
                             origin: Float) -> (image: PlanarImage, confidence: PlanarImage) {
        let h = image.height, w = image.width, c = image.channels
        var out = PlanarImage(uninitializedChannels: c, height: h, width: w)
        var confidence = PlanarImage(uninitializedChannels: 1, height: h, width: w)
        let rows = RowCarrier(field: field, width: w, height: h, factor: factor, origin: origin)
        let coefficients = image.bSplineCoefficients()
        // Four channels (an edit and its colour share) go interleaved, as `KeyframeEdit` carries them.
        let interleaved = c == 4 ? paddedInterleaved4(coefficients) : coefficients.values
        interleaved.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
        confidence.withUnsafeMutableBufferPointer { conf in
            let s = src.baseAddress!, d = dst.baseAddress!, cp = conf.baseAddress!
            parallelChunks(h, minimumChunk: 8) { chunk in
                rows.withScratch { scratch in
                    for y in chunk {
                        if c == 4 {
                            rows.carry4(row: y, of: s, width: w, height: h, into: d + y &* w,
                                        channelStride: h &* w, confidence: cp + y &* w, skipBelow: -1, scratch: scratch)
                        } else {
                            rows.carry(row: y, of: s, width: w, height: h, channels: c, into: d + y &* w,
                                       channelStride: h &* w, confidence: cp + y &* w, skipBelow: -1, scratch: scratch)
                        }
                    }
                }
            }
        } } }
        return (out, confidence)
    }

    /// `carry` one pixel row at a time, so a caller can fuse it with what it does next. Holds the
    /// field and the per-column interpolation weights, which every row shares. `width` × `height`
    /// is the frame the field belongs to; the image carried may be another size (several
    /// references side by side).
    struct RowCarrier {
        let field: CorrespondenceField
        let width: Int, height: Int
        let k: Float, origin: Float
        /// Per pixel column: the left feature-grid column and the weight of the right one.
        let column0: [Int]
        let columnWeight: [Float]
        /// Per feature-grid column i: the first pixel column whose left grid column is i (the
        /// pixels up to the next one's are interpolated between the same two grid columns).
        let segmentStart: [Int]

        init(field: CorrespondenceField, width: Int, height: Int, factor: Int, origin: Float) {
            self.field = field
            self.width = width
            self.height = height
            k = Float(factor)
            self.origin = origin
            let fw = field.width
            var column0 = [Int](repeating: 0, count: width), columnWeight = [Float](repeating: 0, count: width)
            for x in 0..<width {
                let gx = min(max((Float(x) - origin) / k, 0), Float(fw - 1))
                column0[x] = min(Int(gx), fw - 1)
                columnWeight[x] = gx - Float(column0[x])
            }
            self.column0 = column0
            self.columnWeight = columnWeight
            var segmentStart = [Int](repeating: width, count: fw + 1)
            for x in stride(from: width - 1, through: 0, by: -1) { segmentStart[column0[x]] = x }
            for i in stride(from: fw - 1, through: 0, by: -1) { segmentStart[i] = min(segmentStart[i], segmentStart[i + 1]) }
            self.segmentStart = segmentStart
        }

        /// Room in `withScratch`'s buffer for `carry4`'s eight pixels' weights and taps.
        static let laneScratch = 72

        /// Scratch for one worker: the field interpolated to a pixel row, per feature-grid column,
        /// then per pixel.
        func withScratch<R>(_ body: (UnsafeMutablePointer<Float>) -> R) -> R {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * field.width + 2 * width + Self.laneScratch) { body($0.baseAddress!) }
        }

        /// Pixel row `y` of `image(X + D(X))` (`s`: the image's B-spline coefficients, `channels`
        /// planes of `sourceWidth` × `sourceHeight`) into `out[ch · channelStride + x]`, and the
        /// field's confidence into `confidence[x]`, for x < `width`. Where the confidence is below
        /// `skipBelow`, the image is not sampled and 0 is written instead (for callers that weight
        /// by the confidence).
        @inline(__always)
        func carry(row y: Int, of s: UnsafePointer<Float>, width sw: Int, height sh: Int, channels c: Int,
                   into out: UnsafeMutablePointer<Float>, channelStride: Int, confidence cp: UnsafeMutablePointer<Float>,
                   skipBelow: Float, scratch: UnsafeMutablePointer<Float>) {
            let plane = sw &* sh
            forEachPixel(ofRow: y, confidence: cp, skipBelow: skipBelow, scratch: scratch) { x, sx, sy in
                sampleBSpline(s, width: sw, height: sh, channels: c, plane: plane, x: sx, y: sy,
                              into: out + x, channelStride: channelStride)
            } skipped: { x in
                for ch in 0..<c { out[ch &* channelStride &+ x] = 0 }
            }
        }

        /// `carry` from four channels interleaved and padded (`Transport.paddedInterleaved4`,
        /// `sw` × `sh` the image's own size): one pixel's taps are sixteen adjacent values a row,
        /// so a sample reads four short runs instead of sixteen from four planes, and needs no
        /// horizontal sums. Eight pixels at a time, their taps' positions and weights as vectors
        /// (the same operations as `sampleBSpline4`, so the same values); the padding holds the
        /// mirrored coefficients a position clamped to the image reaches past its edges, so
        /// pixels whose source lies at or beyond the keyframe's edges (content that has left its
        /// view) take the same path as the rest. (They went pixel by pixel, with the mirroring
        /// worked out per tap: 5% of a 720p edit's CPU on the bench clip.)
        @inline(__always)
        func carry4(row y: Int, of s: UnsafePointer<Float>, width sw: Int, height sh: Int,
                    into out: UnsafeMutablePointer<Float>, channelStride: Int, confidence cp: UnsafeMutablePointer<Float>,
                    skipBelow: Float, scratch: UnsafeMutablePointer<Float>) {
            let w = width
            let px = scratch + 3 &* field.width, py = px + w
            sourcePositions(ofRow: y, confidence: cp, x: px, y: py, scratch: scratch)
            @inline(__always) func store(_ v: SIMD4<Float>, _ x: Int) {
                out[x] = v[0]
                out[channelStride &+ x] = v[1]
                out[2 &* channelStride &+ x] = v[2]
                out[3 &* channelStride &+ x] = v[3]
            }
            @inline(__always) func one(_ x: Int) {
                if cp[x] < skipBelow {
                    store(SIMD4(), x)
                } else {
                    store(sampleBSpline4(padded: s, width: sw, height: sh, x: px[x], y: py[x]), x)
                }
            }
            // min(max(v, low), high) lane by lane, as `sampleBSpline4` clamps (pointwiseMin is
            // a call per vector, and not as `min` treats NaN).
            @inline(__always) func clamped(_ v: SIMD8<Float>, _ low: SIMD8<Float>, _ high: SIMD8<Float>) -> SIMD8<Float> {
                let above = v.replacing(with: low, where: v .< low)
                return above.replacing(with: high, where: high .< above)
            }
            @inline(__always) func load(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
                UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
            }
            let lanes = UnsafeMutableRawPointer(py + w)
            // The taps' indices are taken in 32 bits (as the positions' whole parts come): room
            // for 2³⁰ padded samples, past FFmpeg's largest picture (16 384 a side).
            precondition((sh &+ Transport.padding) &* (sw &+ Transport.padding) < 1 << 30, "a picture too large to carry")
            let zero = SIMD8<Float>(), lastX = SIMD8(repeating: Float(sw - 1)), lastY = SIMD8(repeating: Float(sh - 1))
            let paddedWidth = sw &+ Transport.padding, rowStride = paddedWidth &* 16
            var x = 0
            while x &+ 8 <= w {
                let sx = load(px + x), sy = load(py + x)
                let cx = clamped(sx, zero, lastX), cy = clamped(sy, zero, lastY)
                let fx = wholePart(cx), fy = wholePart(cy)
                let wanted = load(cp + x) .>= SIMD8(repeating: skipBelow)
                if !any(wanted) {
                    for i in x..<(x &+ 8) { store(SIMD4(), i) }
                    x &+= 8
                    continue
                }
                // Lanes not wanted are sampled too (harmless) and written as 0. The eight pixels'
                // weights and first taps are computed as vectors and stored, then read lane by
                // lane: left to itself, LLVM took each lane's weights apart in scalar arithmetic,
                // pixel by pixel.
                let wx = cubicBSplineWeights8(cx - fx), wy = cubicBSplineWeights8(cy - fy)
                let ix = nearestWholeNumbers(fx), iy = nearestWholeNumbers(fy)
                // Tap (ix − 1, iy − 1) is padded sample (ix, iy): its index, four values a sample.
                let first = (iy &* UInt32(truncatingIfNeeded: paddedWidth) &+ ix) &* 4
                lanes.storeBytes(of: wx.0, toByteOffset: 0, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wx.1, toByteOffset: 32, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wx.2, toByteOffset: 64, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wx.3, toByteOffset: 96, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wy.0, toByteOffset: 128, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wy.1, toByteOffset: 160, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wy.2, toByteOffset: 192, as: SIMD8<Float>.self)
                lanes.storeBytes(of: wy.3, toByteOffset: 224, as: SIMD8<Float>.self)
                lanes.storeBytes(of: first, toByteOffset: 256, as: SIMD8<UInt32>.self)
                let weight = UnsafePointer<Float>(lanes.assumingMemoryBound(to: Float.self))
                for i in 0..<8 {
                    let left = SIMD8(lowHalf: SIMD4(repeating: weight[i]), highHalf: SIMD4(repeating: weight[8 &+ i]))
                    let right = SIMD8(lowHalf: SIMD4(repeating: weight[16 &+ i]), highHalf: SIMD4(repeating: weight[24 &+ i]))
                    var p = UnsafeRawPointer(s + Int(lanes.load(fromByteOffset: 256 &+ 4 &* i, as: UInt32.self)))
                    var sum = SIMD8<Float>()
                    for j in 0..<4 {
                        let a = p.loadUnaligned(as: SIMD8<Float>.self), b = p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                        sum += (a * left + b * right) * weight[32 &+ 8 &* j &+ i]
                        p += rowStride
                    }
                    store(wanted[i] ? sum.lowHalf + sum.highHalf : SIMD4(), x &+ i)
                }
                x &+= 8
            }
            while x < w {
                one(x)
                x &+= 1
            }
        }

        /// For each pixel x of row `y`: the field's confidence into `confidence[x]`, and the
        /// position it is read from into `sourceX[x]`, `sourceY[x]`.
        @inline(__always)
        private func sourcePositions(ofRow y: Int, confidence cp: UnsafeMutablePointer<Float>, x sourceX: UnsafeMutablePointer<Float>,
                                     y sourceY: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
            let fw = field.width, fh = field.height, k = self.k
            // Feature-grid row of this pixel row, and its bilinear weights.
            let gy = min(max((Float(y) - origin) / k, 0), Float(fh - 1))
            let y0 = min(Int(gy), fh - 1), y1 = min(y0 + 1, fh - 1), ay = gy - Float(y0)
            // The field between grid rows y0 and y1, per grid column: displacement (pixels) and confidence.
            let rowX = scratch, rowY = scratch + fw, rowC = scratch + 2 &* fw
            field.x.withUnsafeBufferPointer { fx in field.y.withUnsafeBufferPointer { fy in
            field.confidence.withUnsafeBufferPointer { fc in
                let top = y0 &* fw, bottom = y1 &* fw
                for i in 0..<fw {
                    let dx0 = fx[top &+ i] - Float(i), dx1 = fx[bottom &+ i] - Float(i)
                    let dy0 = fy[top &+ i] - Float(y0), dy1 = fy[bottom &+ i] - Float(y1)
                    rowX[i] = k * ((1 - ay) * dx0 + ay * dx1)
                    rowY[i] = k * ((1 - ay) * dy0 + ay * dy1)
                    rowC[i] = (1 - ay) * fc[top &+ i] + ay * fc[bottom &+ i]
                }
            } } }
            // Grid column by grid column: its pixels share their two grid columns, so eight of
            // them at a time are the same operations as one, in vector lanes.
            columnWeight.withUnsafeBufferPointer { cw in segmentStart.withUnsafeBufferPointer { starts in
                let steps = SIMD8<Float>(0, 1, 2, 3, 4, 5, 6, 7), row = Float(y)
                for x0 in 0..<fw {
                    let x1 = min(x0 &+ 1, fw &- 1), end = starts[x0 &+ 1]
                    let c0 = rowC[x0], c1 = rowC[x1], dx0 = rowX[x0], dx1 = rowX[x1], dy0 = rowY[x0], dy1 = rowY[x1]
                    var x = starts[x0]
                    while x &+ 8 <= end {
                        let ax = UnsafeRawPointer(cw.baseAddress! + x).loadUnaligned(as: SIMD8<Float>.self), bx = 1 - ax
                        UnsafeMutableRawPointer(cp + x).storeBytes(of: bx * c0 + ax * c1, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(sourceX + x).storeBytes(of: (SIMD8(repeating: Float(x)) + steps) + (bx * dx0 + ax * dx1),
                                                                        as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(sourceY + x).storeBytes(of: row + (bx * dy0 + ax * dy1), as: SIMD8<Float>.self)
                        x &+= 8
                    }
                    while x < end {
                        let ax = cw[x]
                        cp[x] = (1 - ax) * c0 + ax * c1
                        sourceX[x] = Float(x) + ((1 - ax) * dx0 + ax * dx1)
                        sourceY[x] = row + ((1 - ax) * dy0 + ax * dy1)
                        x &+= 1
                    }
                }
            } }
        }

        /// For each pixel x of row `y`: the field's confidence into `confidence[x]`, then, unless
        /// it is below `skipBelow`, `sample(x, sx, sy)` with the source position, else `skipped(x)`.
        @inline(__always)
        private func forEachPixel(ofRow y: Int, confidence cp: UnsafeMutablePointer<Float>, skipBelow: Float,
                                  scratch: UnsafeMutablePointer<Float>, _ sample: (Int, Float, Float) -> Void,
                                  skipped: (Int) -> Void) {
            let px = scratch + 3 &* field.width, py = px + width
            sourcePositions(ofRow: y, confidence: cp, x: px, y: py, scratch: scratch)
            for x in 0..<width {
                if cp[x] < skipBelow {
                    skipped(x)
                } else {
                    sample(x, px[x], py[x])
                }
            }
        }
    }

    /// Columns and rows `paddedInterleaved4` adds: one before the image, two after.
    static let padding = 3

    /// A four-channel image's coefficients pixel-major for `carry4`, with the ones a clamped
    /// position's taps reach past the edges (from −1 to width + 1, and likewise down) filled in
    /// as the prefilter's whole-sample mirror assumes them (`wholeSampleMirroredIndex`):
    /// coefficient (x, y) of channel ch at ((y + 1)·(width + 3) + x + 1)·4 + ch.
    static func paddedInterleaved4(_ image: PlanarImage) -> [Float] {
        precondition(image.channels == 4)
        let w = image.width, h = image.height, n = image.planeSize, pw = w + padding, ph = h + padding
        return [Float](unsafeUninitializedCapacity: 4 * pw * ph) { out, count in
            image.withUnsafeBufferPointer { src in
                for py in 0..<ph {
                    let y = wholeSampleMirroredIndex(py &- 1, count: h)
                    for px in 0..<pw {
                        let i = y &* w &+ wholeSampleMirroredIndex(px &- 1, count: w), o = (py &* pw &+ px) &* 4
                        for ch in 0..<4 { out[o &+ ch] = src[ch &* n &+ i] }
                    }
                }
            }
            count = 4 * pw * ph
        }
    }

    /// A four-channel image's values pixel-major, (y·width + x)·4 + channel, in half precision;
    /// less `share[ch]` times `prediction`'s channel ch, for the first three, where given.
    static func interleavedHalf4(_ image: PlanarImage, less prediction: PlanarImage? = nil, times share: [Float] = [0, 0, 0]) -> [Float16] {
        precondition(image.channels == 4 && share.count == 3)
        precondition(prediction.map { $0.channels == 3 && $0.planeSize == image.planeSize } ?? true)
        let n = image.planeSize
        return [Float16](unsafeUninitializedCapacity: 4 * n) { out, count in
            image.withUnsafeBufferPointer { src in
                if let prediction {
                    let (s0, s1, s2) = (share[0], share[1], share[2])
                    prediction.withUnsafeBufferPointer { p in
                        for i in 0..<n {
                            out[4 &* i] = Float16(src[i] - s0 * p[i])
                            out[4 &* i &+ 1] = Float16(src[n &+ i] - s1 * p[n &+ i])
                            out[4 &* i &+ 2] = Float16(src[2 &* n &+ i] - s2 * p[2 &* n &+ i])
                            out[4 &* i &+ 3] = Float16(src[3 &* n &+ i])
                        }
                    }
                } else {
                    for i in 0..<n { for ch in 0..<4 { out[4 &* i &+ ch] = Float16(src[ch &* n &+ i]) } }
                }
            }
            count = 4 * n
        }
    }

    /// Cubic B-spline sample of four channels at (x, y), clamped to the image, from its padded
    /// coefficients (`paddedInterleaved4`; `w` × `h` the image's own size).
    @inline(__always)
    static func sampleBSpline4(padded s: UnsafePointer<Float>, width w: Int, height h: Int, x: Float, y: Float) -> SIMD4<Float> {
        let cx = min(max(x, 0), Float(w - 1)), cy = min(max(y, 0), Float(h - 1))
        let ix = Int(cx), iy = Int(cy)
        let wx = cubicBSplineWeights(cx - Float(ix)), wy = cubicBSplineWeights(cy - Float(iy))
        // Each pair of taps along x weighted as one SIMD8: channels 0–3 of the left, then the right.
        let left = SIMD8(lowHalf: SIMD4(repeating: wx[0]), highHalf: SIMD4(repeating: wx[1]))
        let right = SIMD8(lowHalf: SIMD4(repeating: wx[2]), highHalf: SIMD4(repeating: wx[3]))
        let paddedWidth = w &+ padding
        var sum = SIMD8<Float>()
        var p = UnsafeRawPointer(s + (iy &* paddedWidth &+ ix) &* 4)
        for j in 0..<4 {
            let a = p.loadUnaligned(as: SIMD8<Float>.self), b = p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
            sum += (a * left + b * right) * wy[j]
            p += paddedWidth &* 16
        }
        return sum.lowHalf + sum.highHalf
    }

    /// Cubic B-spline sample of every channel at (x, y) from coefficients `s`, clamped to the
    /// image, its coefficients beyond the edges mirrored;
    /// writes out[ch · channelStride].
    @inline(__always)
    static func sampleBSpline(_ s: UnsafePointer<Float>, width w: Int, height h: Int, channels c: Int, plane: Int,
                            x: Float, y: Float, into out: UnsafeMutablePointer<Float>, channelStride: Int) {
        let cx = min(max(x, 0), Float(w - 1)), cy = min(max(y, 0), Float(h - 1))
        let ix = Int(cx), iy = Int(cy)
        let wx = cubicBSplineWeights(cx - Float(ix)), wy = cubicBSplineWeights(cy - Float(iy))
        if ix >= 1 && ix &+ 2 < w && iy >= 1 && iy &+ 2 < h {
            // All 4×4 taps inside: rows of four neighbours, combined vertically first, so each
            // channel needs one horizontal sum.
            var p = UnsafeRawPointer(s + ((iy &- 1) &* w &+ ix &- 1))
            let stride = w &* 4
            for ch in 0..<c {
                let r0 = p.loadUnaligned(as: SIMD4<Float>.self)
                let r1 = p.loadUnaligned(fromByteOffset: stride, as: SIMD4<Float>.self)
                let r2 = p.loadUnaligned(fromByteOffset: 2 &* stride, as: SIMD4<Float>.self)
                let r3 = p.loadUnaligned(fromByteOffset: 3 &* stride, as: SIMD4<Float>.self)
                var v = r0 * wy[0]
                v += r1 * wy[1]
                v += r2 * wy[2]
                v += r3 * wy[3]
                let t = v * wx
                out[ch &* channelStride] = (t[0] + t[1]) + (t[2] + t[3])
                p += plane &* 4
            }
            return
        }
        let x0 = wholeSampleMirroredIndex(ix &- 1, count: w), x1 = ix
        let x2 = wholeSampleMirroredIndex(ix &+ 1, count: w), x3 = wholeSampleMirroredIndex(ix &+ 2, count: w)
        let r0 = wholeSampleMirroredIndex(iy &- 1, count: h) &* w, r1 = iy &* w
        let r2 = wholeSampleMirroredIndex(iy &+ 1, count: h) &* w, r3 = wholeSampleMirroredIndex(iy &+ 2, count: h) &* w
        var p = s
        for ch in 0..<c {
            let a = wx[0] * p[r0 &+ x0] + wx[1] * p[r0 &+ x1] + wx[2] * p[r0 &+ x2] + wx[3] * p[r0 &+ x3]
            let b = wx[0] * p[r1 &+ x0] + wx[1] * p[r1 &+ x1] + wx[2] * p[r1 &+ x2] + wx[3] * p[r1 &+ x3]
            let d = wx[0] * p[r2 &+ x0] + wx[1] * p[r2 &+ x1] + wx[2] * p[r2 &+ x2] + wx[3] * p[r2 &+ x3]
            let e = wx[0] * p[r3 &+ x0] + wx[1] * p[r3 &+ x1] + wx[2] * p[r3 &+ x2] + wx[3] * p[r3 &+ x3]
            out[ch &* channelStride] = wy[0] * a + wy[1] * b + wy[2] * d + wy[3] * e
            p += plane
        }
    }
}

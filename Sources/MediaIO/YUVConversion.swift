import CFFmpeg
import Tensor

/// Direct conversion between 8-bit planar YUV (4:2:0 and 4:4:4, the formats nearly all video
/// uses) and planar float RGB, in one pass each way. It replaces swscale plus an integer-to-float
/// pass on the hot path: half the memory traffic, and no 8-bit rounding of the RGB in between.
///
/// Matrices (ITU-R BT.601, BT.709, BT.2020 non-constant luminance) with Kr, Kb:
///   R = Y + 2(1−Kr)·Cr,  B = Y + 2(1−Kb)·Cb,  G = (Y − Kr·R − Kb·B) / Kg
/// on Y in [0, 1] and Cb, Cr in [−½, ½], scaled from limited (16–235, 16–240) or full range.
/// 4:2:0 chroma is sited as in MPEG-2/H.264 (left, co-sited horizontally; centred vertically):
/// upsampling is linear at those sites, and downsampling undoes it exactly (see `fromFloat`).
struct YUVConversion {
    let kr: Float, kb: Float
    let lumaOffset: Float, lumaScale: Float      // code = offset + scale · Y
    let chromaScale: Float                       // code = 128 + scale · C
    let subsampled: Bool

    /// The conversion for `format` and `color`, or nil when another path must handle it.
    init?(format: AVPixelFormat, color: ColorInfo) {
        switch format {
        case AV_PIX_FMT_YUV420P, AV_PIX_FMT_YUVJ420P: subsampled = true
        case AV_PIX_FMT_YUV444P, AV_PIX_FMT_YUVJ444P: subsampled = false
        default: return nil
        }
        switch UInt32(bitPattern: color.matrix) {
        case AVCOL_SPC_BT709.rawValue: (kr, kb) = (0.2126, 0.0722)
        case AVCOL_SPC_BT2020_NCL.rawValue: (kr, kb) = (0.2627, 0.0593)
        case AVCOL_SPC_BT470BG.rawValue, AVCOL_SPC_SMPTE170M.rawValue, AVCOL_SPC_UNSPECIFIED.rawValue: (kr, kb) = (0.299, 0.114)
        default: return nil
        }
        let full = color.range == Int32(AVCOL_RANGE_JPEG.rawValue) || PixelConverter.isJPEGFormat(format)
        (lumaOffset, lumaScale, chromaScale) = full ? (0, 255, 255) : (16, 219, 224)
    }

    // MARK: YUV → RGB

    func toFloat(_ frame: UnsafePointer<AVFrame>, into image: inout PlanarImage) {
        let w = image.width, h = image.height
        image.withUnsafeMutableBufferPointer { buffer in
            let r = buffer.baseAddress!, g = r + w &* h, b = g + w &* h
            parallelChunks(h, minimumChunk: 16) { rows in
                let converter = RowConverter(self, frame: frame, width: w, height: h)
                defer { converter.deallocate() }
                for y in rows { converter.convert(row: y, r: r + y &* w, g: g + y &* w, b: b + y &* w) }
            }
        }
    }

    /// `toFloat` followed by `PlanarImage.averagePooled(factor)`, the same values bit for bit,
    /// without the full-size picture in between: `factor` rows are converted into a small
    /// buffer and pooled at once (`pooled` is 3 × (height / factor) × (width / factor)). An
    /// analysis that only reads the pooled picture (deflicker's first pass) then writes and reads
    /// a ninth of the memory at 1080p.
    func toFloatPooled(_ frame: UnsafePointer<AVFrame>, width w: Int, height h: Int, factor: Int, into pooled: inout PlanarImage) {
        precondition(factor >= 2 && pooled.width == w / factor && pooled.height == h / factor && pooled.channels == 3)
        let pw = pooled.width, ph = pooled.height, scale = 1 / Float(factor * factor)
        pooled.withUnsafeMutableBufferPointer { buffer in
            let out = buffer.baseAddress!
            parallelChunks(ph, minimumChunk: 4) { rows in
                let converter = RowConverter(self, frame: frame, width: w, height: h)
                // `factor` converted rows per channel, then the column sums (as `averagePooled`).
                let lines = UnsafeMutablePointer<Float>.allocate(capacity: 3 &* factor &* w)
                let sums = UnsafeMutablePointer<Float>.allocate(capacity: pw &* factor)
                defer { converter.deallocate(); lines.deallocate(); sums.deallocate() }
                for py in rows {
                    for dy in 0..<factor {
                        converter.convert(row: py &* factor &+ dy, r: lines + dy &* w, g: lines + (factor &+ dy) &* w,
                                          b: lines + (2 &* factor &+ dy) &* w)
                    }
                    for c in 0..<3 {
                        let first = lines + c &* factor &* w, o = out + (c &* ph &+ py) &* pw
                        if factor == 2 {
                            // `averagePooled2`'s sum, in its order.
                            let bottom = first + w
                            for x in 0..<pw {
                                let x2 = x &* 2
                                o[x] = 0.25 * (first[x2] + first[x2 &+ 1] + bottom[x2] + bottom[x2 &+ 1])
                            }
                        } else {
                            for x in 0..<(pw &* factor) { sums[x] = first[x] }
                            for dy in 1..<factor {
                                let line = first + dy &* w
                                for x in 0..<(pw &* factor) { sums[x] += line[x] }
                            }
                            for x in 0..<pw {
                                var total: Float = 0
                                for dx in 0..<factor { total += sums[x &* factor &+ dx] }
                                o[x] = total * scale
                            }
                        }
                    }
                }
            }
        }
    }

    /// One row of the picture at a time, as floats: its constants and its chroma's scratch rows
    /// (one converter per thread).
    private struct RowConverter {
        let yPlane: UnsafeMutablePointer<UInt8>, uPlane: UnsafeMutablePointer<UInt8>, vPlane: UnsafeMutablePointer<UInt8>
        let yStride: Int, uStride: Int, vStride: Int
        let w: Int, cw: Int, ch: Int, subsampled: Bool
        let crToR: Float, cbToB: Float, crToG: Float, cbToG: Float
        let yMul: Float, yAdd: Float, cMul: Float, cAdd: Float
        let cb: UnsafeMutablePointer<Float>, cr: UnsafeMutablePointer<Float>
        let cbHalf: UnsafeMutablePointer<Float>, crHalf: UnsafeMutablePointer<Float>

        init(_ conversion: YUVConversion, frame: UnsafePointer<AVFrame>, width w: Int, height h: Int) {
            let f = frame.pointee
            yPlane = f.data.0!; uPlane = f.data.1!; vPlane = f.data.2!
            yStride = Int(f.linesize.0); uStride = Int(f.linesize.1); vStride = Int(f.linesize.2)
            subsampled = conversion.subsampled
            self.w = w
            cw = subsampled ? (w + 1) / 2 : w; ch = subsampled ? (h + 1) / 2 : h
            let kr = conversion.kr, kb = conversion.kb, kg = 1 - kr - kb
            crToR = 2 * (1 - kr); cbToB = 2 * (1 - kb)
            crToG = -2 * kr * (1 - kr) / kg; cbToG = -2 * kb * (1 - kb) / kg
            yMul = 1 / conversion.lumaScale; yAdd = -conversion.lumaOffset / conversion.lumaScale
            cMul = 1 / conversion.chromaScale; cAdd = -128 / conversion.chromaScale
            cb = .allocate(capacity: w); cr = .allocate(capacity: w)
            cbHalf = .allocate(capacity: cw); crHalf = .allocate(capacity: cw)
        }

        func deallocate() { cb.deallocate(); cr.deallocate(); cbHalf.deallocate(); crHalf.deallocate() }

        /// Row `y` into `ro`, `go`, `bo` (`w` values each).
        @inline(__always)
        func convert(row y: Int, r ro: UnsafeMutablePointer<Float>, g go: UnsafeMutablePointer<Float>, b bo: UnsafeMutablePointer<Float>) {
            if subsampled {
                // Vertical: luma row y sits at chroma row (y − ½)/2.
                let j = y >> 1
                let other = y & 1 == 0 ? max(j - 1, 0) : min(j + 1, ch - 1)
                let u0 = uPlane + j &* uStride, u1 = uPlane + other &* uStride
                let v0 = vPlane + j &* vStride, v1 = vPlane + other &* vStride
                for i in 0..<cw {
                    cbHalf[i] = (0.75 * Float(u0[i]) + 0.25 * Float(u1[i])) * cMul + cAdd
                    crHalf[i] = (0.75 * Float(v0[i]) + 0.25 * Float(v1[i])) * cMul + cAdd
                }
                // Horizontal: chroma i sits on luma column 2i.
                for x in 0..<w {
                    let i = x >> 1
                    if x & 1 == 0 {
                        cb[x] = cbHalf[i]; cr[x] = crHalf[i]
                    } else {
                        let k = min(i + 1, cw - 1)
                        cb[x] = 0.5 * (cbHalf[i] + cbHalf[k]); cr[x] = 0.5 * (crHalf[i] + crHalf[k])
                    }
                }
            } else {
                let u = uPlane + y &* uStride, v = vPlane + y &* vStride
                for x in 0..<w { cb[x] = Float(u[x]) * cMul + cAdd; cr[x] = Float(v[x]) * cMul + cAdd }
            }
            let luma = yPlane + y &* yStride
            for x in 0..<w {
                let yy = Float(luma[x]) * yMul + yAdd
                let rr = yy + crToR * cr[x]
                let gg = yy + cbToG * cb[x] + crToG * cr[x]
                let bb = yy + cbToB * cb[x]
                ro[x] = clamp01(rr)
                go[x] = clamp01(gg)
                bo[x] = clamp01(bb)
            }
        }
    }

    // MARK: RGB → YUV

    /// How closely (in B − Y or R − Y, RGB units) the rows on either side must imply the same
    /// chroma value for `fromFloat` to take them as upsampled: a quarter of an 8-bit level.
    static let agreement: Float = 0.25 / 255

    func fromFloat(_ image: PlanarImage, into frame: UnsafeMutablePointer<AVFrame>) {
        let w = image.width, h = image.height
        let f = frame.pointee
        let yPlane = f.data.0!, uPlane = f.data.1!, vPlane = f.data.2!
        let yStride = Int(f.linesize.0), uStride = Int(f.linesize.1), vStride = Int(f.linesize.2)
        let kg = 1 - kr - kb
        let cbScale = chromaScale * 0.5 / (1 - kb), crScale = chromaScale * 0.5 / (1 - kr)
        let lumaOffset = self.lumaOffset + 0.5, lumaScale = self.lumaScale  // +0.5: round on truncation
        let subsampled = self.subsampled
        let cw = subsampled ? (w + 1) / 2 : w, ch = subsampled ? (h + 1) / 2 : h
        let kr = self.kr, kb = self.kb
        image.withUnsafeBufferPointer { buffer in
            let r = buffer.baseAddress!, g = r + w &* h, b = g + w &* h
            // Luma: one value per pixel.
            parallelChunks(h, minimumChunk: 16) { rows in
                for y in rows {
                    let ri = r + y &* w, gi = g + y &* w, bi = b + y &* w
                    let out = yPlane + y &* yStride
                    // Eight at a time: the same operations as below, lane by lane.
                    var x = 0
                    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
                        clamp01(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self))
                    }
                    while x &+ 8 <= w {
                        let yy = kr * load(ri + x) + kg * load(gi + x) + kb * load(bi + x)
                        UnsafeMutableRawPointer(out + x).storeBytes(of: code8(lumaOffset + lumaScale * yy), as: SIMD8<UInt8>.self)
                        x &+= 8
                    }
                    while x < w {
                        let yy = kr * clamp01(ri[x]) + kg * clamp01(gi[x]) + kb * clamp01(bi[x])
                        out[x] = code8(lumaOffset + lumaScale * yy)
                        x &+= 1
                    }
                }
            }
            // Chroma: Cb = (B − Y)/(2(1−Kb)), Cr = (R − Y)/(2(1−Kr)), filtered to the chroma sites.
            // 4:2:0 takes the filters whose pair is `toFloat`'s linear upsampling (LeGall 5/3 across,
            // [−1 3 3 −1]/4 down): downsampling what was upsampled gives the chroma back exactly,
            // so a frame read and written unchanged keeps its chroma (the [1 2 1]/4 × [1 1]/2
            // filters before blurred it by [1 6 1]/8 each way on every pass: 35 dB on sharp colour).
            // Those filters ring where the chroma was never upsampled (RGB sources, painted or
            // stylised edges: a saturated edge's far side pulled 60 levels past it), so each
            // value is held within the range of the values it is filtered from, widened to the
            // value the rows imply where they were upsampled (see below): a frame passed through
            // keeps its chroma, its lone extrema too.
            parallelChunks(ch, minimumChunk: 8) { rows in
                // Cb and Cr (a row's width apart) of the luma rows a chroma row is filtered from,
                // 2j − 1 … 2j + 2, the first two kept from the chroma row before; their sum in `cbRow`,
                // their least and greatest in `low` and `high`.
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 14 * w)
                defer { buffer.deallocate() }
                var lines = (0..<4).map { buffer + 2 &* $0 &* w }
                let cbRow = buffer + 8 &* w, crRow = cbRow + w, low = cbRow + 2 &* w, high = cbRow + 4 &* w
                func fill(_ line: UnsafeMutablePointer<Float>, luma y: Int) {
                    let y = min(max(y, 0), h - 1), ri = r + y &* w, gi = g + y &* w, bi = b + y &* w
                    // Eight at a time: the same operations as below, lane by lane.
                    var x = 0
                    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
                        clamp01(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self))
                    }
                    while x &+ 8 <= w {
                        let rr = load(ri + x), gg = load(gi + x), bb = load(bi + x)
                        let l = kr * rr + kg * gg + kb * bb
                        UnsafeMutableRawPointer(line + x).storeBytes(of: bb - l, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(line + (w &+ x)).storeBytes(of: rr - l, as: SIMD8<Float>.self)
                        x &+= 8
                    }
                    while x < w {
                        let rr = clamp01(ri[x]), gg = clamp01(gi[x]), bb = clamp01(bi[x])
                        let l = kr * rr + kg * gg + kb * bb
                        line[x] = bb - l
                        line[w &+ x] = rr - l
                        x &+= 1
                    }
                }
                for j in rows {
                    if subsampled {
                        if j == rows.lowerBound {
                            fill(lines[0], luma: 2 * j - 1); fill(lines[1], luma: 2 * j)
                        } else {
                            lines.swapAt(0, 2); lines.swapAt(1, 3)
                        }
                        fill(lines[2], luma: 2 * j + 1); fill(lines[3], luma: 2 * j + 2)
                        let (a, b, c, d) = (lines[0], lines[1], lines[2], lines[3])
                        // Eight at a time (the same operations as below, lane by lane), the rest one by one.
                        var x = 0
                        @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
                            UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
                        }
                        @inline(__always) func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
                            UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
                        }
                        while x &+ 8 <= 2 &* w {
                            let av = load(a + x), bv = load(b + x), cv = load(c + x), dv = load(d + x)
                            let above = 1.5 * bv - 0.5 * av, below = 1.5 * cv - 0.5 * dv
                            let value = 0.5 * (above + below)
                            store(value, cbRow + x)
                            let apart = above - below  // |apart| ≤ agreement, as two comparisons
                            let upsampled = (apart .<= Self.agreement) .& (apart .>= -Self.agreement)
                            let lowest = lesser(lesser(av, bv), lesser(cv, dv))
                            let highest = greater(greater(av, bv), greater(cv, dv))
                            store(lesser(lowest, SIMD8(repeating: .infinity).replacing(with: value, where: upsampled)), low + x)
                            store(greater(highest, SIMD8(repeating: -.infinity).replacing(with: value, where: upsampled)), high + x)
                            x &+= 8
                        }
                        for x in x..<(2 &* w) {
                            // The chroma row's value as each pair of rows on either side implies it
                            // (linear upsampling put rows 2j and 2j + 1 a quarter of the way to the
                            // rows beside); the filter takes their mean. Where the two agree, the
                            // rows were upsampled, and that value is kept even beyond their range.
                            let above = 1.5 * b[x] - 0.5 * a[x], below = 1.5 * c[x] - 0.5 * d[x]
                            let value = 0.5 * (above + below)
                            cbRow[x] = value
                            let upsampled = abs(above - below) <= Self.agreement
                            low[x] = min(min(min(a[x], b[x]), min(c[x], d[x])), upsampled ? value : .infinity)
                            high[x] = max(max(max(a[x], b[x]), max(c[x], d[x])), upsampled ? value : -.infinity)
                        }
                    } else {
                        fill(cbRow, luma: j)
                    }
                    let uo = uPlane + j &* uStride, vo = vPlane + j &* vStride
                    // Eight chroma samples at a time where all their taps lie inside the row (the
                    // same operations as below, lane by lane): the taps at 2i − 2 … 2i + 2 are the
                    // even and odd halves of three 16-value loads.
                    var vectorised = 0..<0
                    if subsampled && w >= 20 {
                        vectorised = 1..<(1 &+ (w &- 18) / 2 / 8 * 8)
                        @inline(__always) func taps(_ row: UnsafePointer<Float>, _ i: Int)
                            -> (l2: SIMD8<Float>, l1: SIMD8<Float>, x: SIMD8<Float>, r1: SIMD8<Float>, r2: SIMD8<Float>) {
                            let left = UnsafeRawPointer(row + (2 &* i &- 2)).loadUnaligned(as: SIMD16<Float>.self)
                            let centre = UnsafeRawPointer(row + 2 &* i).loadUnaligned(as: SIMD16<Float>.self)
                            let right = UnsafeRawPointer(row + (2 &* i &+ 2)).loadUnaligned(as: SIMD16<Float>.self)
                            return (left.evenHalf, left.oddHalf, centre.evenHalf, centre.oddHalf, right.evenHalf)
                        }
                        @inline(__always) func chroma(_ values: UnsafePointer<Float>, _ lows: UnsafePointer<Float>,
                                                      _ highs: UnsafePointer<Float>, _ i: Int, _ scale: Float) -> SIMD8<UInt8> {
                            let v = taps(values, i), lo = taps(lows, i), hi = taps(highs, i)
                            let least = lesser(lesser(lesser(lo.l2, lo.l1), lesser(lo.x, lo.r1)), lo.r2)
                            let most = greater(greater(greater(hi.l2, hi.l1), greater(hi.x, hi.r1)), hi.r2)
                            let filtered = 0.75 * v.x + 0.25 * (v.l1 + v.r1) - 0.125 * (v.l2 + v.r2)
                            let held = lesser(greater(filtered, least), most)
                            return code8(lesser(greater(128.5 + scale * held, SIMD8(repeating: 0)), SIMD8(repeating: 255)))
                        }
                        for i in Swift.stride(from: vectorised.lowerBound, to: vectorised.upperBound, by: 8) {
                            UnsafeMutableRawPointer(uo + i).storeBytes(of: chroma(cbRow, low, high, i, cbScale), as: SIMD8<UInt8>.self)
                            UnsafeMutableRawPointer(vo + i).storeBytes(of: chroma(crRow, low + w, high + w, i, crScale), as: SIMD8<UInt8>.self)
                        }
                    } else if !subsampled {
                        // 4:4:4: each value as it is, eight at a time.
                        vectorised = 0..<(cw / 8 * 8)
                        @inline(__always) func code(_ values: UnsafePointer<Float>, _ i: Int, _ scale: Float) -> SIMD8<UInt8> {
                            let v = UnsafeRawPointer(values + i).loadUnaligned(as: SIMD8<Float>.self)
                            return code8(lesser(greater(128.5 + scale * v, SIMD8(repeating: 0)), SIMD8(repeating: 255)))
                        }
                        for i in Swift.stride(from: 0, to: vectorised.upperBound, by: 8) {
                            UnsafeMutableRawPointer(uo + i).storeBytes(of: code(cbRow, i, cbScale), as: SIMD8<UInt8>.self)
                            UnsafeMutableRawPointer(vo + i).storeBytes(of: code(crRow, i, crScale), as: SIMD8<UInt8>.self)
                        }
                    }
                    // The rest one by one: the row's ends.
                    @inline(__always) func one(_ i: Int) {
                        let cb: Float, cr: Float
                        if subsampled {
                            let x = 2 * i, l1 = max(x - 1, 0), l2 = max(x - 2, 0), r1 = min(x + 1, w - 1), r2 = min(x + 2, w - 1)
                            let cbLow = min(min(min(low[l2], low[l1]), min(low[x], low[r1])), low[r2])
                            let cbHigh = max(max(max(high[l2], high[l1]), max(high[x], high[r1])), high[r2])
                            let crLow = min(min(min(low[w &+ l2], low[w &+ l1]), min(low[w &+ x], low[w &+ r1])), low[w &+ r2])
                            let crHigh = max(max(max(high[w &+ l2], high[w &+ l1]), max(high[w &+ x], high[w &+ r1])), high[w &+ r2])
                            let cbFiltered = 0.75 * cbRow[x] + 0.25 * (cbRow[l1] + cbRow[r1]) - 0.125 * (cbRow[l2] + cbRow[r2])
                            let crFiltered = 0.75 * crRow[x] + 0.25 * (crRow[l1] + crRow[r1]) - 0.125 * (crRow[l2] + crRow[r2])
                            cb = min(max(cbFiltered, cbLow), cbHigh)
                            cr = min(max(crFiltered, crLow), crHigh)
                        } else {
                            cb = cbRow[i]; cr = crRow[i]
                        }
                        uo[i] = code8(min(max(128.5 + cbScale * cb, 0), 255))
                        vo[i] = code8(min(max(128.5 + crScale * cr, 0), 255))
                    }
                    for i in 0..<vectorised.lowerBound { one(i) }
                    for i in vectorised.upperBound..<cw { one(i) }
                }
            }
        }
    }
}

/// [0, 1], with NaN taken as 0.
@inline(__always) private func clamp01(_ v: Float) -> Float { v > 0 ? (v < 1 ? v : 1) : 0 }

/// `clamp01` lane by lane.
@inline(__always) private func clamp01(_ v: SIMD8<Float>) -> SIMD8<Float> {
    v.replacing(with: 1, where: v .>= 1).replacing(with: 0, where: .!(v .> 0))
}

/// `Swift.min` and `Swift.max` lane by lane, as vector blends: the standard library's
/// `pointwiseMin` and `pointwiseMax` were called, not inlined, a lane at a time.
@inline(__always) private func lesser(_ x: SIMD8<Float>, _ y: SIMD8<Float>) -> SIMD8<Float> { x.replacing(with: y, where: y .< x) }
@inline(__always) private func greater(_ x: SIMD8<Float>, _ y: SIMD8<Float>) -> SIMD8<Float> { x.replacing(with: y, where: y .>= x) }

/// The 8-bit code of a value in [0, 256), truncated (the callers add ½ to round). Without
/// `Int32(_:)`'s checks for values out of range, which kept the loops scalar.
@inline(__always) private func code8(_ v: SIMD8<Float>) -> SIMD8<UInt8> {
    SIMD8<UInt8>(truncatingIfNeeded: nearestWholeNumbers(wholePart(v)))
}

/// `code8` of one value.
@inline(__always) private func code8(_ v: Float) -> UInt8 { code8(SIMD8(repeating: v))[0] }

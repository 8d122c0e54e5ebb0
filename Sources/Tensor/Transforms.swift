extension PlanarImage {
    /// The image turned clockwise by `quarterTurns` × 90°, exactly (a permutation of samples).
    public func rotatedClockwise(quarterTurns: Int) -> PlanarImage {
        let turns = ((quarterTurns % 4) + 4) % 4
        if turns == 0 { return self }
        let (outH, outW) = turns == 2 ? (height, width) : (width, height)
        var out = PlanarImage(uninitializedChannels: channels, height: outH, width: outW)
        let h = height, w = width
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                for c in 0..<channels {
                    let sp = s + c &* h &* w, dp = d + c &* h &* w
                    for y in 0..<h {
                        let row = sp + y &* w
                        for x in 0..<w {
                            let index: Int
                            switch turns {
                            case 1: index = x &* outW &+ (h &- 1 &- y)          // (y, x) → (x, h-1-y)
                            case 2: index = (h &- 1 &- y) &* outW &+ (w &- 1 &- x)
                            default: index = (w &- 1 &- x) &* outW &+ y          // (y, x) → (w-1-x, y)
                            }
                            dp[index] = row[x]
                        }
                    }
                }
            }
        }
        return out
    }

    /// Mirrored left to right.
    public func mirroredHorizontally() -> PlanarImage {
        var out = PlanarImage(uninitializedChannels: channels, height: height, width: width)
        let w = width
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for row in 0..<(channels &* height) {
                    let s = src.baseAddress! + row &* w, d = dst.baseAddress! + row &* w
                    for x in 0..<w { d[x] = s[w &- 1 &- x] }
                }
            }
        }
        return out
    }
}

extension PlanarImage {
    /// 2×2 average pooling; an odd last row or column is dropped. Output sample X averages input
    /// samples 2X and 2X+1, so it sits at 2X + ½ in input coordinates.
    public func averagePooled2() -> PlanarImage {
        let h = height / 2, w = width / 2, sw = width, sh = height
        var out = PlanarImage(uninitializedChannels: channels, height: h, width: w)
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                parallelChunks(channels &* h, minimumChunk: 64) { rows in
                    for row in rows {
                        let c = row / h, y = row % h
                        let top = s + (c &* sh &+ 2 &* y) &* sw, bottom = top + sw
                        let o = d + (c &* h &+ y) &* w
                        for x in 0..<w {
                            let x2 = x &* 2
                            o[x] = 0.25 * (top[x2] + top[x2 &+ 1] + bottom[x2] + bottom[x2 &+ 1])
                        }
                    }
                }
            }
        }
        return out
    }

    /// `factor`×`factor` average pooling (box downscaling by a whole factor); a last partial row
    /// or column of blocks is dropped. Output sample X averages input samples factor·X …
    /// factor·X + factor − 1, so it sits at factor·X + (factor − 1)/2 in input coordinates.
    public func averagePooled(_ factor: Int) -> PlanarImage {
        precondition(factor >= 1)
        if factor == 1 { return self }
        if factor == 2 { return averagePooled2() }
        let h = height / factor, w = width / factor, sw = width, sh = height
        var out = PlanarImage(uninitializedChannels: channels, height: h, width: w)
        let scale = 1 / Float(factor * factor)
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                parallelChunks(channels &* h, minimumChunk: 32) { rows in
                    // The block's rows summed across first (contiguous), then each block's columns.
                    let sums = UnsafeMutablePointer<Float>.allocate(capacity: w &* factor)
                    defer { sums.deallocate() }
                    for row in rows {
                        let c = row / h, y = row % h
                        let first = s + (c &* sh &+ factor &* y) &* sw
                        for x in 0..<(w &* factor) { sums[x] = first[x] }
                        for dy in 1..<factor {
                            let line = first + dy &* sw
                            for x in 0..<(w &* factor) { sums[x] += line[x] }
                        }
                        let o = d + (c &* h &+ y) &* w
                        for x in 0..<w {
                            var total: Float = 0
                            for dx in 0..<factor { total += sums[x &* factor &+ dx] }
                            o[x] = total * scale
                        }
                    }
                }
            }
        }
        return out
    }
}

extension PlanarImage {
    /// The image scaled to `height` × `width` with a triangle (linear) filter, widened by the scale
    /// factor when shrinking so that every input sample contributes (no aliasing from skipped
    /// samples). Pixel centres map to pixel centres.
    public func resized(height outHeight: Int, width outWidth: Int) -> PlanarImage {
        if outHeight == height && outWidth == width { return self }
        let columns = Self.linearTaps(from: width, to: outWidth), rows = Self.linearTaps(from: height, to: outHeight)
        var temp = PlanarImage(uninitializedChannels: channels, height: height, width: outWidth)
        var out = PlanarImage(uninitializedChannels: channels, height: outHeight, width: outWidth)
        let (h, w) = (height, width)
        withUnsafeBufferPointer { src in temp.withUnsafeMutableBufferPointer { mid in
            parallelChunks(channels * h, minimumChunk: 16) { range in
                for row in range {
                    let s = src.baseAddress! + row * w, d = mid.baseAddress! + row * outWidth
                    for x in 0..<outWidth {
                        var v: Float = 0
                        for (i, t) in columns[x] { v += t * s[i] }
                        d[x] = v
                    }
                }
            }
        } }
        temp.withUnsafeBufferPointer { mid in out.withUnsafeMutableBufferPointer { dst in
            parallelChunks(channels * outHeight, minimumChunk: 16) { range in
                for row in range {
                    let c = row / outHeight, y = row % outHeight
                    let d = dst.baseAddress! + row * outWidth
                    for x in 0..<outWidth { d[x] = 0 }
                    for (i, t) in rows[y] {
                        let s = mid.baseAddress! + (c * h + i) * outWidth
                        for x in 0..<outWidth { d[x] += t * s[x] }
                    }
                }
            }
        } }
        return out
    }

    /// For each output sample, the input samples and weights of a triangle filter (edges clamped).
    static func linearTaps(from n: Int, to m: Int) -> [[(Int, Float)]] {
        let scale = Double(n) / Double(m), support = max(scale, 1)
        return (0..<m).map { j in
            let centre = (Double(j) + 0.5) * scale - 0.5
            let lo = Int((centre - support).rounded(.up)), hi = Int((centre + support).rounded(.down))
            var taps: [(Int, Float)] = []
            var total: Float = 0
            for i in lo...max(lo, hi) {
                let weight = Float(max(0, 1 - abs(Double(i) - centre) / support))
                guard weight > 0 else { continue }
                taps.append((min(max(i, 0), n - 1), weight))
                total += weight
            }
            if taps.isEmpty { return [(min(max(Int(centre.rounded()), 0), n - 1), 1)] }
            return taps.map { ($0.0, $0.1 / total) }
        }
    }
}

extension PlanarImage {
    /// The image smoothed by the binomial kernel [1 2 1]/4 along rows and columns (σ ≈ 0.7 px),
    /// borders repeated. It commutes with any shift, and leaves content that linear interpolation
    /// follows closely.
    public func binomialSmoothed() -> PlanarImage {
        let w = width, h = height
        var out = PlanarImage(uninitializedChannels: channels, height: h, width: w)
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let s = src.baseAddress!, d = dst.baseAddress!
                parallelChunks(channels &* h, minimumChunk: 16) { rows in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: w) { line in
                        let l = line.baseAddress!
                        for row in rows {
                            let c = row / h, y = row % h
                            let plane = s + c &* h &* w
                            let up = plane + max(y &- 1, 0) &* w, mid = plane + y &* w, down = plane + min(y &+ 1, h &- 1) &* w
                            for x in 0..<w { l[x] = 0.25 * (up[x] + down[x]) + 0.5 * mid[x] }
                            let o = d + row &* w
                            // The ends apart, so that the inside has no clamped index and vectorises.
                            o[0] = 0.25 * (l[0] + l[min(1, w &- 1)]) + 0.5 * l[0]
                            if w > 1 {
                                for x in 1..<(w &- 1) { o[x] = 0.25 * (l[x &- 1] + l[x &+ 1]) + 0.5 * l[x] }
                                o[w &- 1] = 0.25 * (l[w &- 2] + l[w &- 1]) + 0.5 * l[w &- 1]
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

extension PlanarImage {
    /// `f` applied to each value of this image and the same position of `other` (of the same
    /// shape), without copying either.
    public func combined(with other: PlanarImage, _ f: (Float, Float) -> Float) -> PlanarImage {
        precondition(channels == other.channels && height == other.height && width == other.width)
        var out = PlanarImage(uninitializedChannels: channels, height: height, width: width)
        withUnsafeBufferPointer { a in other.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { o in
            for i in 0..<o.count { o[i] = f(a[i], b[i]) }
        } } }
        return out
    }

    /// `f` applied to each value of this image and the same position of `b` and `c`.
    public func combined(with b: PlanarImage, _ c: PlanarImage, _ f: (Float, Float, Float) -> Float) -> PlanarImage {
        precondition(channels == b.channels && height == b.height && width == b.width)
        precondition(channels == c.channels && height == c.height && width == c.width)
        var out = PlanarImage(uninitializedChannels: channels, height: height, width: width)
        withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in c.withUnsafeBufferPointer { z in
            out.withUnsafeMutableBufferPointer { o in
                for i in 0..<o.count { o[i] = f(x[i], y[i], z[i]) }
            }
        } } }
        return out
    }

    /// The root mean square of the differences between this image and `other` (of the same shape).
    public func rmsDifference(from other: PlanarImage) -> Float {
        precondition(channels == other.channels && height == other.height && width == other.width)
        var sum = 0.0
        withUnsafeBufferPointer { a in other.withUnsafeBufferPointer { b in
            for i in 0..<a.count { let d = Double(a[i] - b[i]); sum += d * d }
        } }
        return Float((sum / Double(max(count, 1))).squareRoot())
    }
}

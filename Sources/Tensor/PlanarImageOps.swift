extension PlanarImage {
    /// The planes in `range`, copied.
    public func channels(_ range: Range<Int>) -> PlanarImage {
        precondition(range.lowerBound >= 0 && range.upperBound <= channels && !range.isEmpty)
        if range.count == channels { return self }
        var out = PlanarImage(uninitializedChannels: range.count, height: height, width: width)
        let n = planeSize
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                dst.baseAddress!.update(from: src.baseAddress! + range.lowerBound * n, count: range.count * n)
            }
        }
        return out
    }

    /// The planes of `images` one after another; all must have the same height and width.
    public init(stacking images: [PlanarImage]) {
        precondition(!images.isEmpty)
        let h = images[0].height, w = images[0].width
        precondition(images.allSatisfy { $0.height == h && $0.width == w }, "stacked images must have one size")
        self.init(uninitializedChannels: images.reduce(0) { $0 + $1.channels }, height: h, width: w)
        var start = 0
        withUnsafeMutableBufferPointer { dst in
            for image in images {
                image.withUnsafeBufferPointer { src in
                    (dst.baseAddress! + start).update(from: src.baseAddress!, count: src.count)
                }
                start += image.count
            }
        }
    }

    /// The window of `height` × `width` samples whose top-left corner is (y, x), every channel.
    public func cropped(y: Int, x: Int, height outHeight: Int, width outWidth: Int) -> PlanarImage {
        precondition(y >= 0 && x >= 0 && outHeight > 0 && outWidth > 0 && y + outHeight <= height && x + outWidth <= width,
                     "crop window outside the image")
        if y == 0 && x == 0 && outHeight == height && outWidth == width { return self }
        var out = PlanarImage(uninitializedChannels: channels, height: outHeight, width: outWidth)
        let h = height, w = width
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for row in 0..<outHeight {
                        (dst.baseAddress! + (c * outHeight + row) * outWidth)
                            .update(from: src.baseAddress! + (c * h + y + row) * w + x, count: outWidth)
                    }
                }
            }
        }
        return out
    }

    /// The image with `margin` samples added on every side, each repeating the nearest edge
    /// sample: what a reader that clamps its positions to the image would see there.
    public func edgePadded(by margin: Int) -> PlanarImage {
        precondition(margin >= 0)
        let w = width, h = height, pw = w + 2 * margin, ph = h + 2 * margin
        var out = PlanarImage(uninitializedChannels: channels, height: ph, width: pw)
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<channels {
                    for row in 0..<ph {
                        let line = src.baseAddress! + (c * h + min(max(row - margin, 0), h - 1)) * w
                        let o = dst.baseAddress! + (c * ph + row) * pw
                        (o + margin).update(from: line, count: w)
                        for x in 0..<margin { o[x] = line[0]; o[margin + w + x] = line[w - 1] }
                    }
                }
            }
        }
        return out
    }

    /// Σ (self − other)², accumulated in double precision.
    public func sumOfSquaredDifferences(_ other: PlanarImage) -> Double {
        precondition(channels == other.channels && height == other.height && width == other.width, "shapes differ")
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                var total = 0.0
                var i = 0
                let n = a.count
                while i < n {
                    // Float partial sums over blocks, added in double: fast and accurate enough for PSNR.
                    let end = min(i &+ 4096, n)
                    var partial: Float = 0
                    while i < end { let d = a[i] - b[i]; partial += d * d; i &+= 1 }
                    total += Double(partial)
                }
                return total
            }
        }
    }

    /// The element-wise difference self − other.
    public static func - (lhs: PlanarImage, rhs: PlanarImage) -> PlanarImage {
        precondition(lhs.channels == rhs.channels && lhs.height == rhs.height && lhs.width == rhs.width, "shapes differ")
        var out = PlanarImage(uninitializedChannels: lhs.channels, height: lhs.height, width: lhs.width)
        lhs.withUnsafeBufferPointer { a in
            rhs.withUnsafeBufferPointer { b in
                out.withUnsafeMutableBufferPointer { d in
                    var i = 0
                    while i < d.count { d[i] = a[i] - b[i]; i &+= 1 }
                }
            }
        }
        return out
    }
}

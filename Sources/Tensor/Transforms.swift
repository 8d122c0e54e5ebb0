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
}

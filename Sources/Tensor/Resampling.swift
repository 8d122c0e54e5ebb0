/// A 1-D linear operator applied along the rows or the columns of a planar image: output sample i is
///
///     out[i] = Σ_{t < tapCount} weights[i % phases][t] · in[b(i) + t],   b(i) = (i / phases) · step + offset,
///
/// with the input extended past its ends by mirroring (see `mirroredIndex`). Decimation by m is
/// phases 1, step m; interpolation by k is phases k, step 1; filters and shifts are phases 1, step 1.
/// Only the output samples are computed (polyphase), and each weight row sums to 1, so a constant
/// stays exactly constant up to float rounding.
public struct ResamplingPlan: Sendable {
    public let phases: Int
    public let step: Int
    public let offset: Int
    public let tapCount: Int
    /// phases × tapCount weights, row by row.
    public let weights: [Float]
    /// The operator's impulse response as positions (in samples of the rate named by the maker)
    /// and weights, for frequency-response checks.
    public let response: FilterTaps

    public init(phases: Int, step: Int, offset: Int, tapCount: Int, weights: [Float], response: FilterTaps) {
        precondition(phases > 0 && step > 0 && tapCount > 0 && weights.count == phases * tapCount)
        self.phases = phases
        self.step = step
        self.offset = offset
        self.tapCount = tapCount
        self.weights = weights
        self.response = response
    }

    /// Decimation by `factor` with `filter` (designed at the input rate). Output sample j sits at input
    /// position j·factor + (factor − 1)/2, the centre of its block of `factor` input samples, so that
    /// grids nest: decimating by a then by b puts sample j at j·ab + (ab − 1)/2, as decimating by ab does.
    /// `response` is at the input rate.
    public static func decimation(by factor: Int, filter: LowPassFilter) -> ResamplingPlan {
        precondition(factor >= 1)
        let centre = Double(factor - 1) / 2
        let first = Int((centre - filter.radius).rounded(.up))
        let last = Int((centre + filter.radius).rounded(.down))
        var taps = (first...last).map { filter(Double($0) - centre) }
        let sum = taps.reduce(0, +)
        taps = taps.map { $0 / sum }
        let positions = (first...last).map { Double($0) - centre }
        return ResamplingPlan(phases: 1, step: factor, offset: first, tapCount: taps.count, weights: taps.map(Float.init),
                              response: FilterTaps(positions: positions, weights: taps))
    }

    /// Interpolation by `factor` with `filter` (designed at the output rate), on the grid of
    /// `decimation(by:)`: input sample j sits at output position j·factor + (factor − 1)/2. Each
    /// of the `factor` phases is normalised to sum 1. `response` is at the output rate, with DC gain 1.
    public static func interpolation(by factor: Int, filter: LowPassFilter) -> ResamplingPlan {
        precondition(factor >= 1)
        let centre = Double(factor - 1) / 2
        // Output q·factor + r takes input q + e at distance r − centre − e·factor.
        var lo = Int.max, hi = Int.min
        for r in 0..<factor {
            let d = Double(r) - centre
            lo = min(lo, Int(((d - filter.radius) / Double(factor)).rounded(.up)))
            hi = max(hi, Int(((d + filter.radius) / Double(factor)).rounded(.down)))
        }
        let count = hi - lo + 1
        var weights = [Float](repeating: 0, count: factor * count)
        var positions: [Double] = [], values: [Double] = []
        for r in 0..<factor {
            let row = (0..<count).map { t in filter(Double(r) - centre - Double(lo + t) * Double(factor)) }
            let sum = row.reduce(0, +)
            for t in 0..<count {
                weights[r * count + t] = Float(row[t] / sum)
                if row[t] != 0 {
                    positions.append(Double(r) - centre - Double(lo + t) * Double(factor))
                    values.append(row[t] / sum / Double(factor))
                }
            }
        }
        return ResamplingPlan(phases: factor, step: 1, offset: lo, tapCount: count, weights: weights,
                              response: FilterTaps(positions: positions, weights: values))
    }

    /// A shift by `amount` samples: out(x) = in(x − amount), band-limited through `filter` (a
    /// windowed sinc; see `BandLimitedShift`). An integer amount is an exact translation.
    public static func shift(by amount: Double, filter: LowPassFilter) -> ResamplingPlan {
        if amount == amount.rounded() {
            return ResamplingPlan(phases: 1, step: 1, offset: -Int(amount), tapCount: 1, weights: [1],
                                  response: FilterTaps(positions: [amount], weights: [1]))
        }
        // out[i] = Σ_n h(i − amount − n) in[n], with n = i + e.
        let first = Int((-amount - filter.radius).rounded(.up))
        let last = Int((-amount + filter.radius).rounded(.down))
        var taps = (first...last).map { filter(-amount - Double($0)) }
        let sum = taps.reduce(0, +)
        taps = taps.map { $0 / sum }
        return ResamplingPlan(phases: 1, step: 1, offset: first, tapCount: taps.count, weights: taps.map(Float.init),
                              response: FilterTaps(positions: (first...last).map { -Double($0) }, weights: taps))
    }

    /// Convolution with `taps`, whose centre tap is `taps[origin]` (default: the middle of an odd count).
    public static func convolution(_ taps: [Float], origin: Int? = nil) -> ResamplingPlan {
        precondition(!taps.isEmpty)
        let centre = origin ?? taps.count / 2
        // out[i] = Σ_t taps[t] · in[i + centre − t]: reverse into correlation form.
        let reversed = Array(taps.reversed())
        let offset = -(taps.count - 1 - centre)
        return ResamplingPlan(phases: 1, step: 1, offset: offset, tapCount: taps.count, weights: reversed,
                              response: FilterTaps(positions: (0..<taps.count).map { Double($0 - centre) },
                                                   weights: taps.map(Double.init)))
    }

    /// The input index (before mirroring) of output i's first tap.
    @inline(__always) func base(_ i: Int) -> Int { (i / phases) &* step &+ offset }
}

/// Half-sample symmetric extension: index `i` of a signal of length `length` extended by mirroring
/// about −½ and length − ½ (x[−1] = x[0], x[n] = x[n−1]), periodically. If `padded` > `length`, the
/// signal is first mirrored out to `padded` samples (about length − ½), and that padded signal is
/// extended the same way: how images whose size is not a multiple of the latent factor are handled.
@inline(__always)
public func mirroredIndex(_ i: Int, length: Int, padded: Int) -> Int {
    var p = reflect(i, padded)
    while p >= length { p = reflect(p, length) }
    return p
}

@inline(__always)
func reflect(_ i: Int, _ n: Int) -> Int {
    let period = 2 &* n
    var p = i % period
    if p < 0 { p &+= period }
    return p >= n ? period &- 1 &- p : p
}

extension PlanarImage {
    /// Applies `plan` down the columns: output row i combines input rows b(i)…b(i)+tapCount−1.
    /// `paddedHeight` (≥ height) is the length the input is mirrored out to before extension.
    public func resampledVertically(_ plan: ResamplingPlan, outputHeight: Int, paddedHeight: Int? = nil) -> PlanarImage {
        let h = height, w = width, c = channels, taps = plan.tapCount
        let padded = max(paddedHeight ?? h, h)
        var rows = [Int](repeating: 0, count: outputHeight * taps)
        for i in 0..<outputHeight {
            let b = plan.base(i)
            for t in 0..<taps { rows[i * taps + t] = mirroredIndex(b + t, length: h, padded: padded) }
        }
        var out = PlanarImage(uninitializedChannels: c, height: outputHeight, width: w)
        let jobs = c * outputHeight
        withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                rows.withUnsafeBufferPointer { rowTable in
                    plan.weights.withUnsafeBufferPointer { weightTable in
                        let src = source.baseAddress!, dst = target.baseAddress!
                        let rt = rowTable.baseAddress!, wt = weightTable.baseAddress!
                        parallelChunks(jobs, minimumChunk: max(1, 32768 / max(1, w * taps))) { range in
                            let pointers = UnsafeMutablePointer<UnsafePointer<Float>>.allocate(capacity: taps)
                            defer { pointers.deallocate() }
                            for job in range {
                                let channel = job / outputHeight, i = job % outputHeight
                                let plane = UnsafePointer(src + channel &* h &* w)
                                for t in 0..<taps { pointers[t] = plane + rt[i &* taps &+ t] &* w }
                                combineRows(dst + job &* w, count: w, sources: pointers, weights: wt + (i % plan.phases) &* taps, taps: taps)
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Applies `plan` along the rows: output column i combines input columns b(i)…b(i)+tapCount−1.
    /// `paddedWidth` (≥ width) is the length the input is mirrored out to before extension.
    public func resampledHorizontally(_ plan: ResamplingPlan, outputWidth: Int, paddedWidth: Int? = nil) -> PlanarImage {
        let h = height, w = width, c = channels, taps = plan.tapCount
        let padded = max(paddedWidth ?? w, w)
        let lo = plan.base(0)
        let hi = plan.base(outputWidth - 1) + taps - 1
        let extent = hi - lo + 1
        let gather = (0..<extent).map { mirroredIndex(lo + $0, length: w, padded: padded) }
        var out = PlanarImage(uninitializedChannels: c, height: h, width: outputWidth)
        let phases = plan.phases, step = plan.step
        let groups = (extent + step - 1) / step
        let scratchCount = phases > 1 ? extent + (outputWidth + phases - 1) / phases : step * groups
        withUnsafeBufferPointer { source in
            out.withUnsafeMutableBufferPointer { target in
                gather.withUnsafeBufferPointer { gatherTable in
                    plan.weights.withUnsafeBufferPointer { weightTable in
                        let src = source.baseAddress!, dst = target.baseAddress!
                        let gt = gatherTable.baseAddress!, wt = weightTable.baseAddress!
                        parallelChunks(c * h, minimumChunk: max(1, 32768 / max(1, outputWidth * taps))) { range in
                            let ext = UnsafeMutablePointer<Float>.allocate(capacity: extent)
                            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratchCount))
                            let pointers = UnsafeMutablePointer<UnsafePointer<Float>>.allocate(capacity: taps)
                            defer { ext.deallocate(); scratch.deallocate(); pointers.deallocate() }
                            for row in range {
                                let input = src + row &* w, output = dst + row &* outputWidth
                                for e in 0..<extent { ext[e] = input[gt[e]] }
                                if phases == 1 && step == 1 {
                                    for t in 0..<taps { pointers[t] = UnsafePointer(ext + t) }
                                    combineRows(output, count: outputWidth, sources: pointers, weights: wt, taps: taps)
                                } else if phases == 1 {
                                    // De-interleave into `step` polyphase rows, so every tap reads with unit stride.
                                    for r in 0..<step {
                                        let lane = scratch + r &* groups
                                        var q = 0
                                        while q < groups {
                                            let e = q &* step &+ r
                                            lane[q] = e < extent ? ext[e] : 0
                                            q &+= 1
                                        }
                                    }
                                    for t in 0..<taps {
                                        let lane: Int = (t % step) &* groups
                                        pointers[t] = UnsafePointer(scratch + (lane &+ t / step))
                                    }
                                    combineRows(output, count: outputWidth, sources: pointers, weights: wt, taps: taps)
                                } else if step == 1 {
                                    // One pass per phase into `scratch`, then interleave.
                                    for t in 0..<taps { pointers[t] = UnsafePointer(ext + t) }
                                    for r in 0..<min(phases, outputWidth) {
                                        let n = (outputWidth - r + phases - 1) / phases
                                        combineRows(scratch, count: n, sources: pointers, weights: wt + r &* taps, taps: taps)
                                        var q = 0
                                        while q < n { output[q &* phases &+ r] = scratch[q]; q &+= 1 }
                                    }
                                } else {
                                    for i in 0..<outputWidth {
                                        let b = plan.base(i) - lo, weights = wt + (i % phases) &* taps
                                        var sum: Float = 0
                                        for t in 0..<taps { sum += weights[t] * ext[b &+ t] }
                                        output[i] = sum
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// dst[x] = Σ_t weights[t] · sources[t][x] for x < count. Written as plain multiply-adds over
/// unit-stride buffers, four sources at a time, so that LLVM vectorises it.
@inline(__always)
func combineRows(_ dst: UnsafeMutablePointer<Float>, count: Int, sources: UnsafeMutablePointer<UnsafePointer<Float>>,
                 weights: UnsafePointer<Float>, taps: Int) {
    var t = 0
    switch taps {
    case 1:
        let a = sources[0], wa = weights[0]
        var x = 0
        while x < count { dst[x] = wa * a[x]; x &+= 1 }
        return
    case 2:
        let a = sources[0], b = sources[1], wa = weights[0], wb = weights[1]
        var x = 0
        while x < count { dst[x] = wa * a[x] + wb * b[x]; x &+= 1 }
        return
    default:
        let a = sources[0], b = sources[1], c = sources[2]
        let wa = weights[0], wb = weights[1], wc = weights[2]
        var x = 0
        while x < count { dst[x] = wa * a[x] + wb * b[x] + wc * c[x]; x &+= 1 }
        t = 3
    }
    while t &+ 4 <= taps {
        let a = sources[t], b = sources[t &+ 1], c = sources[t &+ 2], d = sources[t &+ 3]
        let wa = weights[t], wb = weights[t &+ 1], wc = weights[t &+ 2], wd = weights[t &+ 3]
        var x = 0
        while x < count { dst[x] = dst[x] + ((wa * a[x] + wb * b[x]) + (wc * c[x] + wd * d[x])); x &+= 1 }
        t &+= 4
    }
    while t < taps {
        let a = sources[t], wa = weights[t]
        var x = 0
        while x < count { dst[x] = dst[x] + wa * a[x]; x &+= 1 }
        t &+= 1
    }
}

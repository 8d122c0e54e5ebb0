/// Band-limited resampling of planar images: decimation, interpolation, fractional shifts and
/// separable filtering, all separable, polyphase (only output samples are computed), with mirrored
/// borders, vectorised and run on all cores.
///
/// Sample grid: decimating by k puts output sample j at input position j·k + (k − 1)/2, the centre
/// of its k×k block; interpolating by k is the inverse mapping. So a shift of Δ input samples is
/// exactly a shift of Δ/k output samples. Sizes that are not multiples of k are mirrored out to the
/// next multiple (right and bottom), processed, and cropped back: the origin does not move.

/// Band-limited decimation by an integer factor.
public struct Decimator: Sendable {
    public let factor: Int
    public let filter: LowPassFilter
    public let plan: ResamplingPlan

    /// Decimation by `factor` through `filter` (designed at the input rate); by default the standard
    /// anti-alias filter, whose stop band starts at the new Nyquist frequency.
    public init(factor: Int, filter: LowPassFilter? = nil) {
        precondition(factor >= 1, "decimation factor must be at least 1")
        self.factor = factor
        self.filter = filter ?? .decimation(by: factor)
        plan = .decimation(by: factor, filter: self.filter)
    }

    /// The number of output samples for `length` input samples: ⌈length / factor⌉.
    public func outputLength(_ length: Int) -> Int { (length + factor - 1) / factor }
}

/// Band-limited interpolation by an integer factor.
public struct Interpolator: Sendable {
    public let factor: Int
    public let filter: LowPassFilter
    public let plan: ResamplingPlan

    /// Interpolation by `factor` through `filter` (designed at the output rate); by default the
    /// standard anti-image filter, whose stop band starts at the input's Nyquist frequency.
    public init(factor: Int, filter: LowPassFilter? = nil) {
        precondition(factor >= 1, "interpolation factor must be at least 1")
        self.factor = factor
        self.filter = filter ?? .interpolation(by: factor)
        plan = .interpolation(by: factor, filter: self.filter)
    }
}

/// A band-limited (windowed-sinc) shift: T_Δ x (t) = x(t − Δ). Accurate to `accuracy` dB (the error
/// |H(f) − e^{−2πifΔ}| stays below 10^(−accuracy/20)) for frequencies up to `passEdge`; an integer shift
/// is an exact translation.
public struct BandLimitedShift: Sendable {
    public let filter: LowPassFilter
    public let passEdge: Double

    /// A shift kernel accurate up to `passEdge` cycles/sample: a sinc at the Nyquist frequency, with
    /// a Kaiser window whose transition band [passEdge, 1 − passEdge] is centred on it. Sampling folds
    /// the stop band back onto the pass band, so the ripple counts twice: the window is designed for
    /// 10 dB more than `accuracy`.
    public init(passEdge: Double = 0.4, accuracy: Double = 80) {
        precondition(passEdge > 0 && passEdge < 0.5)
        self.passEdge = passEdge
        filter = LowPassFilter(passEdge: passEdge, stopEdge: 1 - passEdge, attenuation: accuracy + 10)
    }

    public func plan(_ amount: Double) -> ResamplingPlan { .shift(by: amount, filter: filter) }

    /// How many samples past each end an output depends on for a shift by `amount`.
    public func reach(_ amount: Double) -> Int {
        let plan = self.plan(amount)
        return max(abs(plan.offset), abs(plan.offset + plan.tapCount - 1))
    }
}

extension PlanarImage {
    /// Decimated by `decimator.factor` along both axes: ⌈height/k⌉ × ⌈width/k⌉ unless given. An output
    /// size of n samples treats the input as mirrored out to n·k samples first.
    public func decimated(_ decimator: Decimator, height outputHeight: Int? = nil, width outputWidth: Int? = nil) -> PlanarImage {
        let k = decimator.factor
        let oh = outputHeight ?? decimator.outputLength(height)
        let ow = outputWidth ?? decimator.outputLength(width)
        return resampledVertically(decimator.plan, outputHeight: oh, paddedHeight: oh * k)
            .resampledHorizontally(decimator.plan, outputWidth: ow, paddedWidth: ow * k)
    }

    /// Interpolated by `interpolator.factor` along both axes, cropped to `height` × `width`
    /// (default: the full factor × size).
    public func interpolated(_ interpolator: Interpolator, height outputHeight: Int? = nil, width outputWidth: Int? = nil) -> PlanarImage {
        let k = interpolator.factor
        // Rows first: the vertical pass then runs once per output row on full-width rows.
        return resampledHorizontally(interpolator.plan, outputWidth: outputWidth ?? width * k)
            .resampledVertically(interpolator.plan, outputHeight: outputHeight ?? height * k)
    }

    /// Shifted by (dx, dy) samples, band-limited: out(x, y) = in(x − dx, y − dy). Borders mirrored.
    public func shifted(dx: Double, dy: Double, by shift: BandLimitedShift = BandLimitedShift()) -> PlanarImage {
        var out = self
        if dy != 0 { out = out.resampledVertically(shift.plan(dy), outputHeight: height) }
        if dx != 0 { out = out.resampledHorizontally(shift.plan(dx), outputWidth: width) }
        return out
    }

    /// Filtered separably, same size, mirrored borders: `rows` along each row (x), then `columns`
    /// down each column (y). Each is a convolution kernel centred on its middle tap (odd count).
    public func filtered(rows: [Float]? = nil, columns: [Float]? = nil) -> PlanarImage {
        var out = self
        if let rows { out = out.resampledHorizontally(.convolution(rows), outputWidth: width) }
        if let columns { out = out.resampledVertically(.convolution(columns), outputHeight: height) }
        return out
    }
}

extension PlanarImage {
    /// The mean over the (2r+1)² window around each sample, edges mirrored about the half sample
    /// (as `filtered` with 2r+1 equal taps gives it), by running sums: two additions and a
    /// subtraction a sample along each axis, whatever the radius.
    public func boxFiltered(radius r: Int) -> PlanarImage {
        let w = width, h = height, c = channels, scale = 1 / Float(2 * r + 1)
        // Source index of each position from −r − 1 to n + r − 1, mirrored.
        let columns = (-(r + 1)..<(w + r)).map { mirroredIndex($0, length: w, padded: w) }
        let rows = (-(r + 1)..<(h + r)).map { mirroredIndex($0, length: h, padded: h) }
        var across = PlanarImage(uninitializedChannels: c, height: h, width: w)
        var out = PlanarImage(uninitializedChannels: c, height: h, width: w)
        withUnsafeBufferPointer { sb in across.withUnsafeMutableBufferPointer { ab in columns.withUnsafeBufferPointer { xb in
            let src = sb.baseAddress!, dst = ab.baseAddress!, at = xb.baseAddress! + (r + 1)
            parallelChunks(c * h, minimumChunk: 16) { lines in
                for line in lines {
                    let s = src + line &* w, d = dst + line &* w
                    var sum: Float = 0
                    for t in -r...r { sum += s[at[t]] }
                    d[0] = sum * scale
                    for x in 1..<w {
                        sum += s[at[x &+ r]] - s[at[x &- r &- 1]]
                        d[x] = sum * scale
                    }
                }
            }
        } } }
        across.withUnsafeBufferPointer { ab in out.withUnsafeMutableBufferPointer { ob in rows.withUnsafeBufferPointer { yb in
            let src = ab.baseAddress!, dst = ob.baseAddress!, at = yb.baseAddress! + (r + 1)
            // Per plane and run of columns, a row of running sums moved down the plane.
            let block = 64, blocks = (w + block - 1) / block
            parallelChunks(c * blocks) { jobs in
                let sums = UnsafeMutablePointer<Float>.allocate(capacity: block)
                defer { sums.deallocate() }
                for job in jobs {
                    let plane = job / blocks, x0 = (job % blocks) * block, n = min(block, w - x0)
                    let s = src + (plane &* w &* h &+ x0), d = dst + (plane &* w &* h &+ x0)
                    for x in 0..<n { sums[x] = 0 }
                    for t in -r...r { let row = s + at[t] &* w; for x in 0..<n { sums[x] += row[x] } }
                    for x in 0..<n { d[x] = sums[x] * scale }
                    for y in 1..<h {
                        let add = s + at[y &+ r] &* w, remove = s + at[y &- r &- 1] &* w, o = d + y &* w
                        for x in 0..<n {
                            sums[x] += add[x] - remove[x]
                            o[x] = sums[x] * scale
                        }
                    }
                }
            }
        } } }
        return out
    }
}

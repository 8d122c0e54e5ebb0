import Foundation
import Tensor
import Testing
import TestSupport

/// An image of random values in [0, 1]: every frequency present, the hardest case for a resampler.
func noiseImage(channels: Int = 2, height: Int, width: Int, seed: UInt64) -> PlanarImage {
    var random = SeededRandom(seed)
    return PlanarImage(channels: channels, height: height, width: width,
                       values: (0..<(channels * height * width)).map { _ in Float(random.uniform()) })
}

/// A sinusoid along x (or y) of `frequency` cycles/sample and the given phase, one channel.
func sinusoid(height: Int, width: Int, frequency: Double, alongX: Bool = true, shift: Double = 0) -> PlanarImage {
    var values = [Float](repeating: 0, count: height * width)
    for y in 0..<height {
        for x in 0..<width {
            let t = Double(alongX ? x : y) - shift
            values[y * width + x] = Float(0.5 + 0.4 * cos(2 * Double.pi * frequency * t + 0.3))
        }
    }
    return PlanarImage(channels: 1, height: height, width: width, values: values)
}

/// The largest |a − b| over the window of rows `rows` and columns `columns`, every channel.
func maxDifference(_ a: PlanarImage, _ b: PlanarImage, rows: Range<Int>? = nil, columns: Range<Int>? = nil) -> Float {
    precondition(a.channels == b.channels && a.height == b.height && a.width == b.width)
    var worst: Float = 0
    for c in 0..<a.channels {
        for y in rows ?? 0..<a.height {
            for x in columns ?? 0..<a.width { worst = max(worst, abs(a[c, y, x] - b[c, y, x])) }
        }
    }
    return worst
}

@Suite struct FilterDesignTests {
    /// The standard anti-alias filters reach 80 dB from the new Nyquist frequency up, as designed.
    @Test(arguments: [2, 3, 4, 8, 16])
    func decimationStopBand(factor: Int) {
        let plan = Decimator(factor: factor).plan
        let stop = 0.5 / Double(factor)
        #expect(plan.response.peakGain(from: stop, to: 0.5) <= -80)
        // And it passes its pass band (0.6 of the new Nyquist) with little ripple.
        #expect(abs(plan.response.gain(at: 0.3 / Double(factor))) < 0.01)
    }

    /// Interpolation suppresses every spectral image of the input band by 80 dB.
    @Test(arguments: [2, 4, 8])
    func interpolationStopBand(factor: Int) {
        let plan = Interpolator(factor: factor).plan
        #expect(plan.response.peakGain(from: 0.5 / Double(factor), to: 0.5) <= -80)
        #expect(abs(plan.response.gain(at: 0.2 / Double(factor))) < 0.01)
    }

    /// Kaiser's length formula is only an estimate; every design used here meets its attenuation,
    /// including smooth roll-offs from DC (pass edge 0).
    @Test(arguments: [(0.0, 0.125), (0.0, 0.25), (0.1, 0.25), (0.05, 0.4)])
    func kaiserDesignsMeetAttenuation(passEdge: Double, stopEdge: Double) {
        let filter = LowPassFilter(passEdge: passEdge, stopEdge: stopEdge)
        let taps = ResamplingPlan.decimation(by: 1, filter: filter).response
        #expect(taps.peakGain(from: stopEdge, to: 0.5) <= -80)
        #expect(filter(filter.radius) == 0 && filter(0) > 0)
    }

    /// A fractional shift is e^{−2πifΔ} to within 80 dB over its pass band.
    @Test(arguments: [0.125, 0.375, -0.625, 2.5])
    func shiftKernelIsAccurateInItsPassBand(amount: Double) {
        for passEdge in [0.25, 0.4] {
            let response = BandLimitedShift(passEdge: passEdge).plan(amount).response
            var worst = 0.0
            for f in stride(from: 0.0, through: passEdge, by: 0.005) {
                var re = 0.0, im = 0.0
                for (p, w) in zip(response.positions, response.weights) {
                    re += w * cos(-2 * Double.pi * f * p)
                    im += w * sin(-2 * Double.pi * f * p)
                }
                let ideal = -2 * Double.pi * f * amount
                worst = max(worst, ((re - cos(ideal)) * (re - cos(ideal)) + (im - sin(ideal)) * (im - sin(ideal))).squareRoot())
            }
            #expect(worst < 1e-4, "pass edge \(passEdge): error \(worst)")
        }
    }
}

@Suite struct ResamplingTests {
    /// Every weight row sums to one: a constant stays constant through every operator.
    @Test func constantStaysConstant() {
        let constant = PlanarImage(channels: 2, height: 37, width: 53, values: [Float](repeating: 0.7, count: 2 * 37 * 53))
        let results = [
            constant.decimated(Decimator(factor: 4)),
            constant.interpolated(Interpolator(factor: 3)),
            constant.shifted(dx: 0.375, dy: -2.25),
            constant.filtered(rows: [0.25, 0.5, 0.25], columns: [0.1, 0.2, 0.4, 0.2, 0.1]),
        ]
        for image in results {
            #expect(image.values.allSatisfy { abs($0 - 0.7) < 1e-6 })
        }
        #expect(results[0].height == 10 && results[0].width == 14)
        #expect(results[1].height == 111 && results[1].width == 159)
    }

    /// Decimation samples block centres: a ramp x ↦ x comes out as j·k + (k − 1)/2 away from the
    /// borders (a symmetric filter with unit sum keeps a ramp), on both axes.
    @Test(arguments: [2, 3, 4, 8])
    func decimationSamplesBlockCentres(factor: Int) {
        let n = 320
        var ramp = PlanarImage(channels: 1, height: n, width: n)
        for y in 0..<n { for x in 0..<n { ramp[0, y, x] = Float(x + 2 * y) } }
        let decimator = Decimator(factor: factor)
        let out = ramp.decimated(decimator)
        let margin = Int(decimator.filter.radius) / factor + 2
        for j in margin..<(out.height - margin) {
            for i in margin..<(out.width - margin) {
                let expected = Float(i * factor) + 2 * Float(j * factor) + 3 * Float(factor - 1) / 2
                #expect(abs(out[0, j, i] - expected) < 2e-3)
            }
        }
    }

    /// A sinusoid well inside the pass band survives decimation then interpolation.
    @Test(arguments: [2, 4])
    func lowFrequencySurvivesDecimateThenInterpolate(factor: Int) {
        let n = 192
        let f = 0.15 / Double(factor)
        for alongX in [true, false] {
            let wave = sinusoid(height: n, width: n, frequency: f, alongX: alongX)
            let back = wave.decimated(Decimator(factor: factor)).interpolated(Interpolator(factor: factor))
            let inner = 40..<(n - 40)
            #expect(maxDifference(back, wave, rows: inner, columns: inner) < 1e-3)
        }
    }

    /// A fractional shift moves a band-limited sinusoid by exactly that much: out(x) = in(x − Δ).
    @Test(arguments: [0.125, 0.375, -0.625, 1.5])
    func fractionalShiftMovesSinusoid(amount: Double) {
        let n = 96
        for alongX in [true, false] {
            let wave = sinusoid(height: n, width: n, frequency: 0.11, alongX: alongX)
            let expected = sinusoid(height: n, width: n, frequency: 0.11, alongX: alongX, shift: amount)
            let moved = alongX ? wave.shifted(dx: amount, dy: 0) : wave.shifted(dx: 0, dy: amount)
            #expect(maxDifference(moved, expected, rows: 20..<76, columns: 20..<76) < 1e-4)
        }
    }

    /// An integer shift is an exact translation, with the mirrored border brought in.
    @Test func integerShiftIsExact() {
        let image = noiseImage(height: 20, width: 30, seed: 1)
        let moved = image.shifted(dx: 3, dy: -2)
        for c in 0..<2 { for y in 0..<18 { for x in 3..<30 { #expect(moved[c, y, x] == image[c, y + 2, x - 3]) } } }
        #expect(moved[0, 5, 0] == image[0, 7, 2])   // x − 3 = −3 mirrors to 2
        #expect(moved[0, 19, 4] == image[0, 18, 1]) // y + 2 = 21 mirrors to 18; x − 3 = 1
    }

    /// Rows and columns run different code (de-interleaved polyphase rows, vectorised columns):
    /// resampling a transposed image along the other axis gives the same numbers.
    @Test func rowsAndColumnsAgree() {
        let image = noiseImage(height: 45, width: 62, seed: 2)
        let turned = image.rotatedClockwise(quarterTurns: 1)   // (y, x) → (x, h − 1 − y)
        let plans: [(ResamplingPlan, Int)] = [
            (Decimator(factor: 3).plan, 21), (Interpolator(factor: 4).plan, 248),
            (BandLimitedShift().plan(0.3), 62), (.convolution([1, 2, 3, 4, 5].map { $0 / 15 }), 62),
        ]
        for (plan, length) in plans {
            let across = image.resampledHorizontally(plan, outputWidth: length, paddedWidth: 63)
            let down = turned.resampledVertically(plan, outputHeight: length, paddedHeight: 63)
            #expect(down.rotatedClockwise(quarterTurns: 3).isIdentical(to: across) ||
                    maxDifference(down.rotatedClockwise(quarterTurns: 3), across) < 1e-6)
        }
    }

    /// A size that is not a multiple of the factor is mirrored out to the next multiple first:
    /// the same as decimating an explicitly padded image, with no shift of the grid.
    @Test func paddingToAMultipleIsMirroring() {
        let image = noiseImage(height: 76, width: 100, seed: 3)
        var padded = PlanarImage(channels: 2, height: 80, width: 104)
        for c in 0..<2 {
            for y in 0..<80 {
                for x in 0..<104 { padded[c, y, x] = image[c, y < 76 ? y : 151 - y, x < 100 ? x : 199 - x] }
            }
        }
        let decimator = Decimator(factor: 8)
        let direct = image.decimated(decimator)
        #expect(direct.height == 10 && direct.width == 13)
        #expect(maxDifference(direct, padded.decimated(decimator)) < 1e-6)
    }

    /// Separable filtering equals the direct 2-D sum with mirrored borders.
    @Test func separableFilterMatchesDirectSum() {
        let image = noiseImage(channels: 1, height: 9, width: 11, seed: 4)
        let rows: [Float] = [0.1, 0.6, 0.3], columns: [Float] = [0.2, 0.3, 0.1, 0.25, 0.15]
        let out = image.filtered(rows: rows, columns: columns)
        func mirror(_ i: Int, _ n: Int) -> Int { i < 0 ? -1 - i : i >= n ? 2 * n - 1 - i : i }
        for y in 0..<9 {
            for x in 0..<11 {
                var sum: Float = 0
                for (a, cw) in columns.enumerated() {
                    for (b, rw) in rows.enumerated() {
                        sum += cw * rw * image[0, mirror(y + 2 - a, 9), mirror(x + 1 - b, 11)]
                    }
                }
                #expect(abs(out[0, y, x] - sum) < 1e-6)
            }
        }
    }

    /// The running-sum box filter gives what 2r+1 equal taps across and down give, edges mirrored
    /// the same way, also where the window is wider than the image (7 rows, radius 4); a sum
    /// that dropped the wrong sample, or a mirror off by one, would differ by a whole sample's share.
    @Test func boxFilterMatchesEqualTaps() {
        var random = SeededRandom(3)
        let image = PlanarImage(channels: 3, height: 7, width: 150, values: (0..<(3 * 7 * 150)).map { _ in Float(random.uniform()) })
        for r in [1, 4] {
            let taps = [Float](repeating: 1 / Float(2 * r + 1), count: 2 * r + 1)
            let direct = image.filtered(rows: taps, columns: taps), running = image.boxFiltered(radius: r)
            let worst = zip(direct.values, running.values).map { abs($0 - $1) }.max() ?? .infinity
            #expect(running.height == 7 && running.width == 150 && worst < 1e-5, "radius \(r): \(worst)")
        }
    }

    @Test func mirroredIndexIsHalfSampleSymmetric() {
        #expect((-3..<8).map { mirroredIndex($0, length: 4, padded: 4) } == [2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0])
        // Mirrored out to 6 first (4 → 3, 5 → 2), then about 5.5.
        #expect((4..<9).map { mirroredIndex($0, length: 4, padded: 6) } == [3, 2, 2, 3, 3])
        #expect(mirroredIndex(-1, length: 1, padded: 1) == 0 && mirroredIndex(5, length: 1, padded: 3) == 0)
    }
}

@Suite struct MatrixTests {
    /// OpenBLAS's product equals the textbook triple loop, for every transpose combination.
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func productMatchesNaive(transposeA: Bool, transposeB: Bool) {
        var random = SeededRandom(5)
        let (m, k, n) = (7, 13, 5)
        let a = Matrix(rows: transposeA ? k : m, columns: transposeA ? m : k, values: (0..<(m * k)).map { _ in Float(random.uniform() - 0.5) })
        let b = Matrix(rows: transposeB ? n : k, columns: transposeB ? k : n, values: (0..<(k * n)).map { _ in Float(random.uniform() - 0.5) })
        let c = Matrix.product(a, b, transposeA: transposeA, transposeB: transposeB)
        #expect(c.rows == m && c.columns == n)
        for i in 0..<m {
            for j in 0..<n {
                var sum: Double = 0
                for t in 0..<k {
                    sum += Double(transposeA ? a[t, i] : a[i, t]) * Double(transposeB ? b[j, t] : b[t, j])
                }
                #expect(abs(Double(c[i, j]) - sum) < 1e-5)
            }
        }
    }
}

@Suite struct BSplineTests {
    /// A row of samples, its B-spline coefficients sampled with `cubicBSplineWeights` at
    /// position x (the coefficients beyond the borders mirrored, as the prefilter assumes).
    static func interpolate(_ coefficients: PlanarImage, at x: Float) -> Float {
        let i = Int(x.rounded(.down)), weights = cubicBSplineWeights(x - Float(i))
        var v: Float = 0
        for k in 0..<4 { v += weights[k] * coefficients[0, 0, wholeSampleMirroredIndex(i - 1 + k, count: coefficients.width)] }
        return v
    }

    /// Sampled at the samples, the interpolation gives them back exactly (to float precision),
    /// borders included: the prefilter is the B-spline's inverse, not a smoothing.
    @Test func interpolatesTheSamples() {
        var random = SeededRandom(11)
        let row = PlanarImage(channels: 1, height: 1, width: 40, values: (0..<40).map { _ in Float(random.uniform()) })
        let coefficients = row.bSplineCoefficients()
        for x in 0..<40 { #expect(abs(Self.interpolate(coefficients, at: Float(x)) - row[0, 0, x]) < 1e-5, "at \(x)") }
    }

    /// The same in two dimensions, on a picture whose rows and columns are filtered eight at a
    /// time with some left over (3 channels of 29 × 37): each pixel comes back from its 4 × 4
    /// coefficients. A lane of the eight-line filters out of step, or a strip or column block
    /// written back to the wrong line, breaks it.
    @Test func interpolatesEveryPixelOfAPicture() {
        var random = SeededRandom(12)
        let (w, h) = (37, 29)
        let image = PlanarImage(channels: 3, height: h, width: w, values: (0..<(3 * w * h)).map { _ in Float(random.uniform()) })
        let c = image.bSplineCoefficients()
        let k = cubicBSplineWeights(0)
        var worst: Float = 0
        for ch in 0..<3 { for y in 0..<h { for x in 0..<w {
            var v: Float = 0
            for j in 0..<4 { for i in 0..<4 {
                v += k[j] * k[i] * c[ch, wholeSampleMirroredIndex(y - 1 + j, count: h), wholeSampleMirroredIndex(x - 1 + i, count: w)]
            } }
            worst = max(worst, abs(v - image[ch, y, x]))
        } } }
        #expect(worst < 1e-5, "largest error \(worst)")
    }

    /// Half-way between samples of a sinusoid at 0.3 cycles/sample, the interpolation keeps 0.93
    /// of its amplitude (Catmull–Rom keeps 0.78 there, an error of 0.22): detail carried by a
    /// sub-pixel shift keeps its contrast.
    @Test func keepsFineDetailBetweenSamples() {
        let f: Float = 0.3
        let row = PlanarImage(channels: 1, height: 1, width: 200, values: (0..<200).map { cos(2 * .pi * f * Float($0)) })
        let coefficients = row.bSplineCoefficients()
        var error: Float = 0
        for x in 60..<140 {
            let at = Float(x) + 0.5
            error = max(error, abs(Self.interpolate(coefficients, at: at) - cos(2 * .pi * f * at)))
        }
        #expect(error < 0.12, "largest error \(error)")
    }
}

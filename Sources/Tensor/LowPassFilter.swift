import Foundation

/// A Kaiser-windowed-sinc low-pass filter (Kaiser 1974; Oppenheim & Schafer, "Discrete-Time Signal
/// Processing", §7.5), designed from its pass edge, stop edge and stop-band attenuation.
///
/// Frequencies are in cycles per sample of the rate the filter runs at (Nyquist = 0.5). The ideal
/// low-pass has its cut-off halfway between the edges; the Kaiser window sets the transition width
/// (the stop edge minus the pass edge) and the attenuation. `passEdge` may be 0: a smooth roll-off
/// from DC, with the stated attenuation from `stopEdge` up.
///
/// The continuous kernel `h(t)` (t in samples) is what every resampler in this module samples at
/// its own offsets, so that one design serves decimation, interpolation and fractional shifts.
public struct LowPassFilter: Sendable, Equatable {
    public let passEdge: Double
    public let stopEdge: Double
    /// Stop-band attenuation the window is designed for, in dB.
    public let attenuation: Double
    /// The cut-off of the ideal low-pass, (passEdge + stopEdge) / 2.
    public var cutoff: Double { (passEdge + stopEdge) / 2 }
    public var transitionWidth: Double { stopEdge - passEdge }
    /// Kaiser's β for the attenuation.
    public let beta: Double
    /// Half-length of the kernel in samples: h(t) = 0 for |t| ≥ radius.
    public let radius: Double

    /// - Parameters:
    ///   - passEdge: the highest frequency passed (≥ 0).
    ///   - stopEdge: the frequency where the stop band starts (> passEdge).
    ///   - attenuation: the stop-band attenuation to design for, in dB (> 21).
    public init(passEdge: Double, stopEdge: Double, attenuation: Double = 80) {
        precondition(passEdge >= 0 && stopEdge > passEdge, "LowPassFilter needs 0 ≤ passEdge < stopEdge")
        precondition(attenuation > 21, "LowPassFilter attenuation must exceed 21 dB")
        self.passEdge = passEdge
        self.stopEdge = stopEdge
        self.attenuation = attenuation
        // Kaiser's formulas are estimates: designed for `designMargin` dB more, every filter here
        // meets `attenuation` once sampled and normalised (the tests check the actual responses).
        let a = attenuation + Self.designMargin
        beta = a > 50 ? 0.1102 * (a - 8.7) : 0.5842 * pow(a - 21, 0.4) + 0.07886 * (a - 21)
        // Kaiser's length estimate: N − 1 = (A − 7.95) / (2.285 · 2π · Δf).
        radius = (a - 7.95) / (2.285 * 2 * Double.pi * (stopEdge - passEdge)) / 2
    }

    /// Extra attenuation designed in, in dB.
    public static let designMargin = 4.0

    /// The kernel at `t` samples from its centre (unnormalised; its integral is 1).
    public func callAsFunction(_ t: Double) -> Double {
        let a = abs(t)
        if a >= radius { return 0 }
        let x = 2 * cutoff * t
        let sinc = x == 0 ? 1 : sin(Double.pi * x) / (Double.pi * x)
        let r = a / radius
        return 2 * cutoff * sinc * besselI0(beta * (1 - r * r).squareRoot()) / besselI0(beta)
    }

    /// The standard anti-alias filter for decimation by `factor`: its stop band starts at the new
    /// Nyquist frequency 0.5 / factor and its pass band ends at 0.6 of it.
    public static func decimation(by factor: Int, attenuation: Double = 80) -> LowPassFilter {
        LowPassFilter(passEdge: 0.3 / Double(factor), stopEdge: 0.5 / Double(factor), attenuation: attenuation)
    }

    /// The standard anti-image filter for interpolation by `factor`, at the output rate: its stop band
    /// starts at the input's Nyquist frequency 0.5 / factor.
    public static func interpolation(by factor: Int, attenuation: Double = 80) -> LowPassFilter {
        decimation(by: factor, attenuation: attenuation)
    }
}

/// The modified Bessel function of the first kind, order 0, by its power series.
func besselI0(_ x: Double) -> Double {
    var sum = 1.0, term = 1.0
    let q = x * x / 4
    var k = 1.0
    while term > sum * 1e-17 {
        term *= q / (k * k)
        sum += term
        k += 1
    }
    return sum
}

/// A discrete filter as (position, weight) pairs: positions in samples at the rate the response is
/// taken at. Gives the magnitude response that tests check stop bands with.
public struct FilterTaps: Sendable {
    public var positions: [Double]
    public var weights: [Double]

    public init(positions: [Double], weights: [Double]) {
        precondition(positions.count == weights.count)
        self.positions = positions
        self.weights = weights
    }

    /// |Σ w · e^{−2πi f p}| at `frequency` (cycles per sample).
    public func magnitude(at frequency: Double) -> Double {
        var re = 0.0, im = 0.0
        for (p, w) in zip(positions, weights) {
            let phase = -2 * Double.pi * frequency * p
            re += w * cos(phase)
            im += w * sin(phase)
        }
        return (re * re + im * im).squareRoot()
    }

    /// The response at `frequency` relative to DC, in dB.
    public func gain(at frequency: Double) -> Double {
        20 * log10(max(magnitude(at: frequency), 1e-300) / magnitude(at: 0))
    }

    /// The highest gain (relative to DC, in dB) over [from, to], sampled every `step` cycles/sample.
    public func peakGain(from: Double, to: Double, step: Double = 1e-4) -> Double {
        var worst = -Double.infinity
        var f = from
        while f <= to + 1e-12 {
            worst = max(worst, gain(at: f))
            f += step
        }
        return worst
    }
}

import Foundation
import Tensor

/// The axis a shift is along.
public enum ShiftAxis: String, Sendable, CaseIterable {
    case x, y
}

/// How equivariant a latent codec is on one image (DESIGN.md, "The alias-free latent"). All values
/// are PSNRs in dB with peak 1: images in [0, 1]; latents as they are (colour in [0, 1], Lockstep's
/// structure channels normalised to [0, 1] by construction). +∞ means identical.
public struct EquivarianceReport: Sendable {
    public struct ShiftResult: Sendable {
        public var shift: Double
        public var axis: ShiftAxis
        /// SPSNR of E(T_Δ x) against T_{Δ/k} E(x).
        public var latent: Double
        /// SPSNR of D(T_{Δ/k} z) against T_Δ D(z), z = E(x).
        public var image: Double
        public var isInteger: Bool { shift == shift.rounded() }
    }

    public var codec: String
    public var factor: Int
    public var shifts: [ShiftResult]
    /// PSNR of D(down₂(E(x))) against down₂(D(E(x))) (EQ-VAE's scale equivariance).
    public var scale: Double
    /// PSNR of D(E(x)) against x.
    public var reconstruction: Double
    /// PSNR of D(E(x)) + residual against x: +∞ when exact.
    public var reconstructionWithResidual: Double

    /// The worst (lowest) latent SPSNR over the integer shifts, both axes.
    public var latentInteger: Double { worst(\.latent, integer: true) }
    public var latentFractional: Double { worst(\.latent, integer: false) }
    public var imageInteger: Double { worst(\.image, integer: true) }
    public var imageFractional: Double { worst(\.image, integer: false) }

    func worst(_ value: KeyPath<ShiftResult, Double>, integer: Bool) -> Double {
        shifts.filter { $0.isInteger == integer }.map { $0[keyPath: value] }.min() ?? .nan
    }
}

/// The measurement behind `lockstep equivariance` and the equivariance tests: one definition of
/// SPSNR (AF-LDM's shift PSNR), scale equivariance and reconstruction, for any `LatentCodec`.
///
/// - T is the band-limited shift of Tensor (`BandLimitedShift`, a Kaiser-windowed sinc, 80 dB):
///   on images accurate to 0.4 cycles/pixel; on latents accurate to 0.25 cycles/sample, the band
///   Lockstep's latent lives in. Integer shifts are exact translations. Borders are mirrored.
/// - The border is cropped along the shifted axis, at both ends (a mirrored border is not
///   shift-invariant at either end): ⌈|Δ|/k⌉ latent samples, for what the shift brings in, plus the
///   latent shift kernel's reach; k times that in the image. The other axis is kept whole.
/// - Each figure is the worst case over the shifts and both axes.
/// - down₂ is Tensor's standard band-limited decimation by 2 (stop band from 0.25, 80 dB), the
///   same operator on the latent and on the image; no border is cropped for it.
public struct EquivarianceMeasurement: Sendable {
    public var integerShifts: [Double] = [1, 2, 3, 5, -3]
    public var fractionalShifts: [Double] = [1, 2, 3, 4, 5, 6, 7, -3, -5].map { Double($0) / 8 }
    public var axes: [ShiftAxis] = ShiftAxis.allCases
    public var imageShift = BandLimitedShift(passEdge: 0.4)
    public var latentShift = BandLimitedShift(passEdge: 0.25)
    public var downsample = Decimator(factor: 2)

    public init() {}

    /// The smallest image side the default shifts can be measured on with `factor`: the crop must
    /// leave at least two latent samples.
    public func minimumSide(factor: Int) -> Int {
        let shifts = integerShifts + fractionalShifts
        let margin = shifts.map { latentMargin($0, factor: factor) }.max() ?? 0
        return (2 * margin + 2) * factor
    }

    func latentMargin(_ shift: Double, factor: Int) -> Int {
        Int((abs(shift) / Double(factor)).rounded(.up)) + latentShift.reach(shift / Double(factor))
    }

    public func measure(_ codec: LatentCodec, image x: PlanarImage) -> EquivarianceReport {
        let k = codec.factor
        let (z, decoded, residual) = codec.roundTrip(x)
        var results: [EquivarianceReport.ShiftResult] = []
        for shift in integerShifts + fractionalShifts {
            for axis in axes {
                let (dx, dy) = axis == .x ? (shift, 0.0) : (0.0, shift)
                let latentStep = shift / Double(k)
                let (ldx, ldy) = axis == .x ? (latentStep, 0.0) : (0.0, latentStep)
                let shiftedLatent = z.shifted(dx: ldx, dy: ldy, by: latentShift)
                let margin = latentMargin(shift, factor: k)
                let latent = Self.psnr(codec.encode(x.shifted(dx: dx, dy: dy, by: imageShift)), shiftedLatent,
                                       cropping: margin, along: axis)
                let image = Self.psnr(codec.decode(shiftedLatent, height: x.height, width: x.width),
                                      decoded.shifted(dx: dx, dy: dy, by: imageShift),
                                      cropping: margin * k, along: axis)
                results.append(.init(shift: shift, axis: axis, latent: latent, image: image))
            }
        }
        let halfHeight = downsample.outputLength(x.height), halfWidth = downsample.outputLength(x.width)
        let scale = Self.psnr(codec.decode(z.decimated(downsample), height: halfHeight, width: halfWidth),
                              decoded.decimated(downsample))
        let rebuilt = residual.reconstruct(decoded)
        return EquivarianceReport(codec: codec.name, factor: k, shifts: results, scale: scale,
                                  reconstruction: Self.psnr(decoded, x),
                                  reconstructionWithResidual: rebuilt.isIdentical(to: x) ? .infinity : Self.psnr(rebuilt, x))
    }

    /// PSNR in dB, peak 1; +∞ for identical inputs.
    public static func psnr(_ a: PlanarImage, _ b: PlanarImage) -> Double {
        let mse = a.sumOfSquaredDifferences(b) / Double(a.count)
        return mse == 0 ? .infinity : 10 * log10(1 / mse)
    }

    /// PSNR after cropping `margin` samples from both ends of `axis` (no more than leaves 2).
    static func psnr(_ a: PlanarImage, _ b: PlanarImage, cropping margin: Int, along axis: ShiftAxis) -> Double {
        let length = axis == .x ? a.width : a.height
        let m = max(0, min(margin, (length - 2) / 2))
        if axis == .x {
            return psnr(a.cropped(y: 0, x: m, height: a.height, width: a.width - 2 * m),
                        b.cropped(y: 0, x: m, height: b.height, width: b.width - 2 * m))
        }
        return psnr(a.cropped(y: m, x: 0, height: a.height - 2 * m, width: a.width),
                    b.cropped(y: m, x: 0, height: b.height - 2 * m, width: b.width))
    }
}

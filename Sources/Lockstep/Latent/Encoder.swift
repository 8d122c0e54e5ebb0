import Foundation
import Tensor

/// E: image (RGB, 3×H×W in [0, 1]) → alias-free latent (7×⌈H/k⌉×⌈W/k⌉), k = 4, 8 or 16.
///
/// The recipe of StyleGAN3 (Karras et al. 2021, "Alias-Free Generative Adversarial Networks") and
/// AF-LDM (Zhou et al. 2025, "Alias-Free Latent Diffusion Models"), done exactly rather than learned:
/// every decimation is low-passed first, and the one non-linearity is evaluated at twice the latent
/// rate, where its output fits, and low-passed again before the last decimation. The result is
/// equivariant to shifts: E(T_Δ x) = T_{Δ/k} E(x) for any real Δ, up to the filters' 80 dB stop bands.
///
/// Two stages, all separable and polyphase:
/// 1. RGB is decimated by k/2 to an intermediate rate, through a Kaiser low-pass whose stop band
///    starts at the intermediate Nyquist frequency 1/k cycles/pixel (80 dB).
/// 2. At the intermediate rate, luma (BT.709) feeds a bank of four quadrature Gabor filters
///    (0°, 45°, 90°, 135°; σ = 2 samples, 0.25 cycles/sample, zero mean), and each oriented energy
///    |g ∗ Y|² is compressed as log(1 + e/ε²) (ε = 0.01 luma). An analytic (quadrature) energy has no
///    component at twice the carrier: its spectrum is the autocorrelation of the band-pass spectrum,
///    so it stays well inside the intermediate band. RGB and the four energies are then decimated by
///    2 through the latent low-pass, whose stop band starts at 0.25 cycles per latent sample (80 dB).
///
/// The latent's content is thus confined to half its own Nyquist band (a 2× oversampled latent,
/// StyleGAN3's margin). That is what makes latent shifts exact with a short kernel, and what makes
/// the latent scale-equivariant (EQ-VAE): halving the latent's rate keeps all of its content, so
/// D(down₂(E(x))) = down₂(D(E(x))). The detail above the latent's band is in the residual.
///
/// Channels: 0–2 colour (band-limited RGB, [0, 1]); 3–6 oriented structure energies, normalised
/// so that 0 is flat and 1 a full-range (0…1) luma grating at the tuned frequency.
public struct LatentEncoder: Sendable {
    public let factor: Int
    public static let colourChannels = 3
    public static let structureChannels = 4
    public var channels: Int { Self.colourChannels + Self.structureChannels }
    /// Stage 1: RGB decimated by k/2.
    public let intermediateDecimator: Decimator
    /// Stage 2: decimation by 2 at the intermediate rate, to the latent.
    public let latentDecimator: Decimator
    let energies: OrientedEnergies

    /// - Parameter factor: the latent's sample spacing in pixels: 4, 8 (default) or 16 (any even
    ///   factor from 4 up works).
    public init(factor: Int = 8) {
        precondition(factor >= 4 && factor % 2 == 0, "latent factor must be even and at least 4")
        self.factor = factor
        let half = factor / 2
        intermediateDecimator = Decimator(factor: half, filter: LowPassFilter(passEdge: 0, stopEdge: 0.5 / Double(half)))
        latentDecimator = Decimator(factor: 2, filter: LowPassFilter(passEdge: 0, stopEdge: 0.125))
        let stage1 = intermediateDecimator.plan.response
        let gain = stage1.magnitude(at: OrientedEnergies.frequency / Double(half)) / stage1.magnitude(at: 0)
        energies = OrientedEnergies(gratingGain: gain)
    }

    /// E(image): 7 × ⌈H/k⌉ × ⌈W/k⌉. Sizes that are not multiples of k are mirrored out to the next
    /// multiple first (right and bottom edges), so the grid origin does not move.
    public func encode(_ image: PlanarImage) -> PlanarImage {
        precondition(image.channels == 3, "the encoder takes RGB images")
        let lh = (image.height + factor - 1) / factor, lw = (image.width + factor - 1) / factor
        let intermediate = image.decimated(intermediateDecimator, height: 2 * lh, width: 2 * lw)
        let structure = energies.apply(luma(intermediate))
        return PlanarImage(stacking: [intermediate, structure]).decimated(latentDecimator, height: lh, width: lw)
    }

    /// The latent's colour channels alone (3 × ⌈H/k⌉ × ⌈W/k⌉), equal to channels 0–2 of `encode`,
    /// without the cost of the structure energies.
    public func colour(_ image: PlanarImage) -> PlanarImage {
        precondition(image.channels == 3, "the encoder takes RGB images")
        let lh = (image.height + factor - 1) / factor, lw = (image.width + factor - 1) / factor
        return image.decimated(intermediateDecimator, height: 2 * lh, width: 2 * lw).decimated(latentDecimator, height: lh, width: lw)
    }

    /// The colour channels' low-pass as the image sees it: magnitude relative to DC at `frequency`
    /// cycles/pixel along one axis, through both stages.
    public func colourResponse(at frequency: Double) -> Double {
        let half = Double(factor / 2)
        let a = intermediateDecimator.plan.response, b = latentDecimator.plan.response
        return a.magnitude(at: frequency) / a.magnitude(at: 0) * b.magnitude(at: frequency * half) / b.magnitude(at: 0)
    }

    /// Where the latent's stop band starts, in cycles/pixel: a quarter of a latent sample's worth, 0.25/k.
    public var stopEdge: Double { 0.25 / Double(factor) }
}

/// Rec. 709 luma of an RGB image, one plane.
func luma(_ rgb: PlanarImage) -> PlanarImage {
    var out = PlanarImage(uninitializedChannels: 1, height: rgb.height, width: rgb.width)
    let n = rgb.planeSize
    rgb.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
            let r = src.baseAddress!, g = r + n, b = g + n, y = dst.baseAddress!
            parallelChunks(n, minimumChunk: 65536) { range in
                for i in range { y[i] = 0.2126 * r[i] + 0.7152 * g[i] + 0.0722 * b[i] }
            }
        }
    }
    return out
}

/// Four oriented, log-compressed quadrature energies of a luma plane (0°, 45°, 90°, 135°).
///
/// Each filter is a zero-mean complex Gabor, w(x)w(y)·(e^{2πi f·(x cos θ + y sin θ)} − κ_θ), with w a
/// Gaussian of σ = 2 samples cut at 4.5σ (−88 dB) and κ_θ the carrier's DC leak, so a flat region gives
/// exactly no energy. The filters are separable into complex 1-D passes, and 45° and 135° share their
/// row pass (they differ by conjugating the column filter): 5 row and 9 column convolutions in all.
struct OrientedEnergies: Sendable {
    static let sigma = 2.0
    static let frequency = 0.25
    static let epsilon: Float = 0.01
    let gauss: [Float]
    let cosine: [Float], sine: [Float]                 // carrier f along one axis
    let cosineDiagonal: [Float], sineDiagonal: [Float] // carrier f/√2
    let kappa: Float, kappaDiagonal: Float
    let normalisation: Float

    /// - Parameter gratingGain: how much the preceding low-pass attenuates a grating at the tuned
    ///   frequency, so that a full-range grating still maps to 1.
    init(gratingGain: Double) {
        let radius = Int((4.5 * Self.sigma).rounded(.up))
        let xs = (-radius...radius).map(Double.init)
        let w = xs.map { exp(-$0 * $0 / (2 * Self.sigma * Self.sigma)) }
        let total = w.reduce(0, +)
        func carrier(_ f: Double, _ wave: (Double) -> Double) -> [Float] {
            zip(xs, w).map { Float($1 * wave(2 * Double.pi * f * $0) / total) }
        }
        let f = Self.frequency, fd = Self.frequency / 2.0.squareRoot()
        gauss = w.map { Float($0 / total) }
        cosine = carrier(f, cos)
        sine = carrier(f, sin)
        cosineDiagonal = carrier(fd, cos)
        sineDiagonal = carrier(fd, sin)
        // DC response of the separable carrier: K(fx)·K(fy), K(f) = Σ w cos(2πfx) / Σ w.
        func leak(_ f: Double) -> Double { zip(xs, w).reduce(0) { $0 + $1.1 * cos(2 * Double.pi * f * $1.0) } / total }
        kappa = Float(leak(f))
        kappaDiagonal = Float(leak(fd) * leak(fd))
        // A full-range grating 0.5 + 0.5 cos(…) has a complex response of magnitude 0.25·gain.
        let reference = 0.25 * gratingGain
        normalisation = Float(1 / log1p(reference * reference / Double(Self.epsilon * Self.epsilon)))
    }

    func apply(_ y: PlanarImage) -> PlanarImage {
        // Row passes.
        let aRe = y.filtered(rows: cosine), aIm = y.filtered(rows: sine), b = y.filtered(rows: gauss)
        let cRe = y.filtered(rows: cosineDiagonal), cIm = y.filtered(rows: sineDiagonal)
        // Column passes, batched by column filter.
        let smooth = PlanarImage(stacking: [aRe, aIm, b]).filtered(columns: gauss)       // c0 re, c0 im, blur
        let c90Re = b.filtered(columns: cosine), c90Im = b.filtered(columns: sine)
        let diagonal = PlanarImage(stacking: [cRe, cIm])
        let pc = diagonal.filtered(columns: cosineDiagonal)                              // P = cRe∗gc, S = cIm∗gc
        let ps = diagonal.filtered(columns: sineDiagonal)                                // R = cRe∗gs, Q = cIm∗gs
        var out = PlanarImage(uninitializedChannels: 4, height: y.height, width: y.width)
        let n = y.planeSize
        let k0 = kappa, k45 = kappaDiagonal, scale = normalisation
        let inverse = 1 / (Self.epsilon * Self.epsilon)
        smooth.withUnsafeBufferPointer { sm in
        c90Re.withUnsafeBufferPointer { vr in
        c90Im.withUnsafeBufferPointer { vi in
        pc.withUnsafeBufferPointer { pcb in
        ps.withUnsafeBufferPointer { psb in
        out.withUnsafeMutableBufferPointer { o in
            let re0 = sm.baseAddress!, im0 = re0 + n, blur = im0 + n
            let re90 = vr.baseAddress!, im90 = vi.baseAddress!
            let p = pcb.baseAddress!, s = p + n, r = psb.baseAddress!, q = r + n
            let e0 = o.baseAddress!, e45 = e0 + n, e90 = e45 + n, e135 = e90 + n
            parallelChunks(n, minimumChunk: 16384) { range in
                for i in range {
                    let x0 = re0[i] - k0 * blur[i], y0 = im0[i]
                    let x90 = re90[i] - k0 * blur[i], y90 = im90[i]
                    let x45 = p[i] - q[i] - k45 * blur[i], y45 = r[i] + s[i]
                    let x135 = p[i] + q[i] - k45 * blur[i], y135 = s[i] - r[i]
                    e0[i] = log1p((x0 * x0 + y0 * y0) * inverse) * scale
                    e45[i] = log1p((x45 * x45 + y45 * y45) * inverse) * scale
                    e90[i] = log1p((x90 * x90 + y90 * y90) * inverse) * scale
                    e135[i] = log1p((x135 * x135 + y135 * y135) * inverse) * scale
                }
            }
        }}}}}}
        return out
    }
}

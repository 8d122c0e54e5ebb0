import Tensor

/// D: latent → image, band-limited interpolation by k of the latent's colour channels (the
/// structure channels are features for matching and are not decoded).
///
/// The anti-image filter passes up to 0.25/k cycles/pixel, where the encoder's content ends, and
/// stops (80 dB) from 0.75/k, where the first spectral image of that content starts: the latent
/// holds nothing between, so it needs no sharper filter (10 taps per phase and axis).
/// D(T_{Δ/k} z) = T_Δ D(z) for any real Δ.
public struct LatentDecoder: Sendable {
    public let factor: Int
    public let interpolator: Interpolator

    public init(factor: Int = 8) {
        precondition(factor >= 1)
        self.factor = factor
        let k = Double(factor)
        interpolator = Interpolator(factor: factor, filter: LowPassFilter(passEdge: 0.25 / k, stopEdge: 0.75 / k))
    }

    /// The image of `height` × `width` pixels (default: k times the latent's size) decoded from `latent`.
    public func decode(_ latent: PlanarImage, height: Int? = nil, width: Int? = nil) -> PlanarImage {
        precondition(latent.channels >= LatentEncoder.colourChannels, "a latent has at least three colour channels")
        let h = height ?? latent.height * factor, w = width ?? latent.width * factor
        precondition(h <= latent.height * factor && w <= latent.width * factor, "decoded size exceeds the latent's extent")
        return latent.channels(0..<LatentEncoder.colourChannels).interpolated(interpolator, height: h, width: w)
    }
}

import Tensor

/// The reference point for `lockstep equivariance`: the latent a strided convolution gives. Encode
/// is a k×k box average with stride k (mirrored out to a multiple of k); decode is bilinear
/// interpolation on the same grid (latent sample j at pixel j·k + (k−1)/2; clamped at the edges).
/// The box filter aliases, so its latent does not shift with the image.
public struct NaiveCodec: LatentCodec {
    public let factor: Int
    let box: ResamplingPlan
    let bilinear: ResamplingPlan

    public init(factor: Int = 8) {
        precondition(factor >= 1)
        self.factor = factor
        let k = factor
        let centre = Double(k - 1) / 2
        box = ResamplingPlan(phases: 1, step: k, offset: 0, tapCount: k, weights: [Float](repeating: 1 / Float(k), count: k),
                             response: FilterTaps(positions: (0..<k).map { Double($0) - centre },
                                                  weights: [Double](repeating: 1 / Double(k), count: k)))
        // Output q·k + r lies at latent coordinate q + (r − centre)/k: between q − 1 and q, or q and q + 1.
        var weights: [Float] = []
        var positions: [Double] = [], values: [Double] = []
        for r in 0..<k {
            let d = (Double(r) - centre) / Double(k)
            let row: [Double] = d < 0 ? [-d, 1 + d, 0] : [0, 1 - d, d]
            weights += row.map(Float.init)
            for (t, v) in row.enumerated() where v != 0 {
                positions.append(Double(r) - centre - Double(t - 1) * Double(k))
                values.append(v / Double(k))
            }
        }
        bilinear = ResamplingPlan(phases: k, step: 1, offset: -1, tapCount: 3, weights: weights,
                                  response: FilterTaps(positions: positions, weights: values))
    }

    public var name: String { "naive" }

    public func encode(_ image: PlanarImage) -> PlanarImage {
        let lh = (image.height + factor - 1) / factor, lw = (image.width + factor - 1) / factor
        return image.resampledVertically(box, outputHeight: lh, paddedHeight: lh * factor)
            .resampledHorizontally(box, outputWidth: lw, paddedWidth: lw * factor)
    }

    public func decode(_ latent: PlanarImage, height: Int, width: Int) -> PlanarImage {
        latent.channels(0..<3).resampledHorizontally(bilinear, outputWidth: width).resampledVertically(bilinear, outputHeight: height)
    }
}

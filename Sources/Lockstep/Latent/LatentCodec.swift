import Tensor

/// An encoder–decoder pair between images (3×H×W RGB in [0, 1]) and latents (C×⌈H/k⌉×⌈W/k⌉).
///
/// Grid: latent sample (j, i) sits at image position (j·k + (k−1)/2, i·k + (k−1)/2), the centre of its
/// k×k block, on both axes, so an image shift of Δ pixels is a latent shift of exactly Δ/k samples.
/// The first three latent channels are colour (RGB), the only ones the decoder reads.
public protocol LatentCodec: Sendable {
    /// A short name for tables.
    var name: String { get }
    /// The latent's sample spacing in image pixels.
    var factor: Int { get }
    /// E: image → latent.
    func encode(_ image: PlanarImage) -> PlanarImage
    /// D: latent → image of `height` × `width` pixels (at most k times the latent's size).
    func decode(_ latent: PlanarImage, height: Int, width: Int) -> PlanarImage
}

extension LatentCodec {
    /// Image position of latent sample 0 on each axis: (k − 1)/2.
    public var origin: Float { Float(factor - 1) / 2 }

    /// D(E(x)) and the detail residual x − D(E(x)), with D(E(x)) + residual = x exactly.
    public func roundTrip(_ image: PlanarImage) -> (latent: PlanarImage, decoded: PlanarImage, residual: DetailResidual) {
        let latent = encode(image)
        let decoded = decode(latent, height: image.height, width: image.width)
        return (latent, decoded, DetailResidual(image: image, decoded: decoded))
    }
}

/// Lockstep's alias-free latent: `LatentEncoder` and `LatentDecoder` together.
public struct AliasFreeCodec: LatentCodec {
    public let encoder: LatentEncoder
    public let decoder: LatentDecoder

    public init(factor: Int = 8) {
        encoder = LatentEncoder(factor: factor)
        decoder = LatentDecoder(factor: factor)
    }

    public var name: String { "lockstep" }
    public var factor: Int { encoder.factor }
    public func encode(_ image: PlanarImage) -> PlanarImage { encoder.encode(image) }
    public func decode(_ latent: PlanarImage, height: Int, width: Int) -> PlanarImage {
        decoder.decode(latent, height: height, width: width)
    }
}

/// What the latent cannot hold, x − D(E(x)), stored so that adding it back is exact.
///
/// In float, d + (x − d) is not x in general: where x is dark and d is not, x − d rounds to d's
/// precision and x's low bits are lost (about one pixel in seven of a photo at k = 8). So the
/// residual is kept as the float difference plus its rounding error, split exactly by Knuth's
/// TwoSum, and added back in double precision: the result rounds to x exactly whenever x = 0 or
/// |x| ≥ 2⁻²⁷·|d|, which every image from an 8- to 16-bit source satisfies.
public struct DetailResidual: Sendable {
    /// fl(x − D(E(x))): the detail later stages transport.
    public let detail: PlanarImage
    /// (x − D(E(x))) − detail, exactly; at most half a float ulp of `detail`.
    public let roundingError: PlanarImage

    public init(image: PlanarImage, decoded: PlanarImage) {
        precondition(image.channels == decoded.channels && image.height == decoded.height && image.width == decoded.width,
                     "residual: image and decoded image differ in shape")
        var detail = PlanarImage(uninitializedChannels: image.channels, height: image.height, width: image.width)
        var error = PlanarImage(uninitializedChannels: image.channels, height: image.height, width: image.width)
        image.withUnsafeBufferPointer { x in
            decoded.withUnsafeBufferPointer { d in
                detail.withUnsafeMutableBufferPointer { s in
                    error.withUnsafeMutableBufferPointer { e in
                        let px = x.baseAddress!, pd = d.baseAddress!, ps = s.baseAddress!, pe = e.baseAddress!
                        parallelChunks(x.count, minimumChunk: 65536) { range in
                            for i in range {
                                // TwoSum(a, b): s = fl(a + b), e = (a + b) − s exactly.
                                let a = px[i], b = -pd[i]
                                let sum = a + b
                                let bVirtual = sum - a
                                ps[i] = sum
                                pe[i] = (a - (sum - bVirtual)) + (b - bVirtual)
                            }
                        }
                    }
                }
            }
        }
        self.detail = detail
        roundingError = error
    }

    /// D(E(x)) + residual: x, bit for bit.
    public func reconstruct(_ decoded: PlanarImage) -> PlanarImage {
        precondition(decoded.channels == detail.channels && decoded.height == detail.height && decoded.width == detail.width,
                     "residual: decoded image has another shape")
        var out = PlanarImage(uninitializedChannels: detail.channels, height: detail.height, width: detail.width)
        decoded.withUnsafeBufferPointer { d in
            detail.withUnsafeBufferPointer { s in
                roundingError.withUnsafeBufferPointer { e in
                    out.withUnsafeMutableBufferPointer { o in
                        let pd = d.baseAddress!, ps = s.baseAddress!, pe = e.baseAddress!, po = o.baseAddress!
                        parallelChunks(d.count, minimumChunk: 65536) { range in
                            for i in range { po[i] = Float(Double(pd[i]) + Double(ps[i]) + Double(pe[i])) }
                        }
                    }
                }
            }
        }
        return out
    }
}

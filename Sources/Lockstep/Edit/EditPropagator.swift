import Foundation
import Tensor

/// What the propagator needs of the latent: features on a grid `factor` times coarser than the
/// image, whose sample 0 sits at pixel `origin`.
public protocol FeatureEncoder: Sendable {
    var factor: Int { get }
    var origin: Float { get }
    func features(_ image: PlanarImage) -> PlanarImage
}

/// A keyframe: the frame as it is in the video, and as the user edited it.
public struct Keyframe: Sendable {
    public var index: Int
    public var original: PlanarImage
    public var edited: PlanarImage

    public init(index: Int, original: PlanarImage, edited: PlanarImage) {
        self.index = index
        self.original = original
        self.edited = edited
    }
}

/// Propagates the edits made on keyframes to any frame (DESIGN.md, "Editors: edit").
///
/// The edit δ = edited − original is carried whole from the references, along the cross-frame
/// attention's correspondence refined on the pictures (`ImageAlignment`), at full resolution with
/// band-limited sampling (`Transport`), so on matched content each frame shows the keyframe's edit
/// itself, moved: strokes, texture and tone stay put on what they were painted on, however the
/// motion's sub-pixel phase falls. How far each pixel takes the carried edit is how well its
/// block matches the reference where it points (`ImageAlignment.matchQuality`). Content that
/// matches nothing (disoccluded, new, or changed) gets the edit's colour part instead: a function
/// of colour alone (`ColourTransform`, fitted on every keyframe) applied to the frame's own
/// colours, which needs no motion and cannot flicker, so it looks edited too, with no hole or seam.
/// out = frame + s · (t · carried δ + (1 − t) · colour(frame)); s = `strength`, so 0 leaves the
/// video unchanged and negative values invert the edit.
///
/// The colour part used to be applied to every frame, and only the rest carried. A non-linear
/// colour function meets an edge at another sub-pixel phase in each frame, so that split made
/// line-art and stylised edits shimmer on a slow pan (shift-consistency 32.8 dB); carried whole,
/// they move as one piece (41.6 dB).
public final class EditPropagator: @unchecked Sendable {
    public let strength: Float
    let encoder: FeatureEncoder
    let colour: ColourTransform
    let attention: CrossFrameAttention
    /// The edits of all keyframes side by side, as the attention's references are, as B-spline
    /// coefficients for `Transport`.
    let edits: PlanarImage
    /// The keyframes' own pictures side by side, for the correspondence's last, pixel-level step.
    let alignment: ImageAlignment
    let width: Int, height: Int

    /// Columns of zero features between references, so no refinement window spans two.
    static let gap = 8
    /// Match quality below which the carried edit is not computed at all: it would change the
    /// output by less than 10⁻⁴ of the edit (a fortieth of an 8-bit level).
    static let negligibleConfidence: Float = 1e-4

    public init(keyframes: [Keyframe], encoder: FeatureEncoder, strength: Float = 1,
                configuration: CrossFrameAttention.Configuration = .init()) {
        precondition(!keyframes.isEmpty)
        let first = keyframes[0].original
        width = first.width
        height = first.height
        self.strength = strength
        self.encoder = encoder
        // Colour part, from all keyframes together: the fallback for what matches nothing.
        let originals = Self.sideBySide(keyframes.map(\.original), gap: 0)
        let editedAll = Self.sideBySide(keyframes.map(\.edited), gap: 0)
        colour = ColourTransform(original: originals, edited: editedAll)
        let editImages = keyframes.map { key in
            PlanarImage(channels: 3, height: key.original.height, width: key.original.width,
                        values: zip(key.edited.values, key.original.values).map { $0 - $1 })
        }
        edits = Self.sideBySide(editImages, gap: Self.gap * encoder.factor).bSplineCoefficients()
        alignment = ImageAlignment(reference: Self.sideBySide(keyframes.map(\.original), gap: Self.gap * encoder.factor))
        let features = keyframes.map { encoder.features($0.original) }
        attention = CrossFrameAttention(reference: Self.sideBySide(features, gap: Self.gap), configuration: configuration)
    }

    /// The edited frame.
    public func apply(to frame: PlanarImage) -> PlanarImage {
        precondition(frame.width == width && frame.height == height)
        if strength == 0 { return frame }
        var field = attention.correspondence(for: encoder.features(frame))
        field.confidence = alignment.refine(&field, frame: frame, factor: encoder.factor, origin: encoder.origin,
                                            measuringMatch: true)
        let carrier = Transport.RowCarrier(field: field, width: width, height: height, factor: encoder.factor, origin: encoder.origin)
        var out = PlanarImage(uninitializedChannels: 3, height: height, width: width)
        let w = width, n = width * height, s = strength, size = colour.size
        let rw = edits.width, rh = edits.height
        // One pass per row: the edit carried along the field (where it is trusted at all), the
        // colour part at the frame's own colours, and the blend.
        frame.withUnsafeBufferPointer { f in edits.withUnsafeBufferPointer { r in
        colour.lattice.withUnsafeBufferPointer { lattice in out.withUnsafeMutableBufferPointer { o in
            let fp = f.baseAddress!, rp = r.baseAddress!, table = lattice.baseAddress!, op = o.baseAddress!
            parallelChunks(height, minimumChunk: 8) { rows in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * w) { buffer in
                carrier.withScratch { scratch in
                    let carried = buffer.baseAddress!, trust = carried + 3 &* w
                    for y in rows {
                        carrier.carry(row: y, of: rp, width: rw, height: rh, channels: 3, into: carried, channelStride: w,
                                      confidence: trust, skipBelow: Self.negligibleConfidence, scratch: scratch)
                        let line = y &* w
                        let red = fp + line, green = red + n, blue = green + n
                        for x in 0..<w {
                            let (dr, dg, db) = ColourTransform.evaluate(red[x], green[x], blue[x], size: size, table: table)
                            let t = trust[x], u = 1 - t
                            let vr = red[x] + s * (u * dr + t * carried[x])
                            let vg = green[x] + s * (u * dg + t * carried[w &+ x])
                            let vb = blue[x] + s * (u * db + t * carried[2 &* w &+ x])
                            op[line &+ x] = vr > 0 ? (vr < 1 ? vr : 1) : 0
                            op[n &+ line &+ x] = vg > 0 ? (vg < 1 ? vg : 1) : 0
                            op[2 &* n &+ line &+ x] = vb > 0 ? (vb < 1 ? vb : 1) : 0
                        }
                    }
                } }
            }
        } } } }
        return out
    }

    /// Images placed left to right with `gap` zero columns between them (all of one height).
    static func sideBySide(_ images: [PlanarImage], gap: Int) -> PlanarImage {
        if images.count == 1 { return images[0] }
        let h = images[0].height, c = images[0].channels
        let total = images.map(\.width).reduce(0, +) + gap * (images.count - 1)
        var out = PlanarImage(channels: c, height: h, width: total)
        var x0 = 0
        out.withUnsafeMutableBufferPointer { dst in
            for image in images {
                image.withUnsafeBufferPointer { src in
                    for ch in 0..<c {
                        for y in 0..<h {
                            for x in 0..<image.width {
                                dst[(ch * h + y) * total + x0 + x] = src[(ch * h + y) * image.width + x]
                            }
                        }
                    }
                }
                x0 += image.width + gap
            }
        }
        return out
    }
}

/// The alias-free latent is what the attention matches on: its colour and oriented-energy
/// channels, band-limited, so the correspondence moves exactly with sub-pixel motion.
extension AliasFreeCodec: FeatureEncoder {
    public func features(_ image: PlanarImage) -> PlanarImage { encode(image) }
}

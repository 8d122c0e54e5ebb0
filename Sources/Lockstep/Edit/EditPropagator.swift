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
/// The edit δ = edited − original is split, as a linear latent direction is in Asyrrp, by where a
/// function of colour alone (`ColourTransform`, fitted on every keyframe) explains it:
/// - where it does (a grade, a tint), that colour part is applied to each frame's own colours:
///   exact under any motion, and it cannot flicker;
/// - everything else (strokes, texture, a painted label, and the whole edit wherever the colour
///   function fits it poorly) is carried from the references along the cross-frame attention's
///   correspondence, refined on the pictures (`ImageAlignment`), at full resolution with
///   band-limited sampling (`Transport`). On matched content each frame shows that part of the
///   keyframe's edit itself, moved, however the motion's sub-pixel phase falls.
/// How far each pixel takes the carried part is how well its block matches the reference where it
/// points (`ImageAlignment.matchQuality`). Content that matches nothing (uncovered, new or
/// changed) gets the colour part alone, so it looks edited too, with no hole or seam.
/// With m the carried share of the colour part (see `carriedEdit`) and t the match quality:
/// out = frame + s · ((1 − t(1 − m)) · colour(frame) + t · carried(δ − m · colour(original)));
/// s = `strength`, so 0 leaves the video unchanged and negative values invert the edit.
public final class EditPropagator: @unchecked Sendable {
    public let strength: Float
    let encoder: FeatureEncoder
    let colour: ColourTransform
    let attention: CrossFrameAttention
    /// What is carried of each keyframe's edit (`carriedEdit`), side by side as the attention's
    /// references are, as B-spline coefficients for `Transport`.
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
        // Colour part, from all keyframes together.
        let originals = Self.sideBySide(keyframes.map(\.original), gap: 0)
        let editedAll = Self.sideBySide(keyframes.map(\.edited), gap: 0)
        colour = ColourTransform(original: originals, edited: editedAll)
        let colour = self.colour
        let editImages = keyframes.map { key in Self.carriedEdit(key, colour: colour) }
        edits = Self.sideBySide(editImages, gap: Self.gap * encoder.factor).bSplineCoefficients()
        alignment = ImageAlignment(reference: Self.sideBySide(keyframes.map(\.original), gap: Self.gap * encoder.factor))
        let features = keyframes.map { encoder.features($0.original) }
        // The alignment starts from the attention's answer pooled 4×4: the attention's own
        // sub-sample steps would change nothing it keeps (the same results, 3 ms less per 720p frame).
        var configuration = configuration
        configuration.subsampleSteps = false
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
        // One pass per row: the edit carried along the field (where it is trusted at all) with the
        // colour part's share, the colour part at the frame's own colours, and the blend.
        frame.withUnsafeBufferPointer { f in edits.withUnsafeBufferPointer { r in
        colour.lattice.withUnsafeBufferPointer { lattice in out.withUnsafeMutableBufferPointer { o in
            let fp = f.baseAddress!, rp = r.baseAddress!, table = lattice.baseAddress!, op = o.baseAddress!
            parallelChunks(height, minimumChunk: 8) { rows in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 5 * w) { buffer in
                carrier.withScratch { scratch in
                    let carried = buffer.baseAddress!, trust = carried + 4 &* w
                    for y in rows {
                        carrier.carry(row: y, of: rp, width: rw, height: rh, channels: 4, into: carried, channelStride: w,
                                      confidence: trust, skipBelow: Self.negligibleConfidence, scratch: scratch)
                        let line = y &* w
                        let red = fp + line, green = red + n, blue = green + n
                        for x in 0..<w {
                            let (dr, dg, db) = ColourTransform.evaluate(red[x], green[x], blue[x], size: size, table: table)
                            let t = trust[x], u = 1 - t * (1 - carried[3 &* w &+ x])
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

    /// τ and the smoothing (binomial passes, σ = 2 px) of the colour part's share; see `carriedEdit`.
    static let tolerance: Float = 0.04, spread = 8

    /// What is carried from a keyframe: the edit less the colour part where the colour part
    /// explains it, and that share m as a fourth plane. m = exp(−e/τ²), e the local mean of
    /// |δ − colour(original)|² plus how far the colour function, applied to the keyframe moved
    /// half a pixel, departs from its colour part moved half a pixel: m is 1 where the colour
    /// function accounts for the edit and commutes with sub-pixel motion (a grade, a tint), so
    /// that part is applied to each frame's own colours, exact under any motion; 0 where it does
    /// not (strokes, texture, a painted label, posterised or line-art tones, whose steep curves
    /// would make every edge shimmer as its sub-pixel phase changes), so the whole edit is carried.
    static func carriedEdit(_ key: Keyframe, colour: ColourTransform) -> PlanarImage {
        let w = key.original.width, h = key.original.height, n = w * h
        let e = key.edited.values, o = key.original.values, c = colour.delta(for: key.original).values
        // What a frame half a pixel on would get from the colour function, against the keyframe's
        // colour part moved half a pixel: where they differ, the function would shimmer.
        let moved = colour.delta(for: halfPixelShifted(key.original)).values
        let colourMoved = halfPixelShifted(PlanarImage(channels: 3, height: h, width: w, values: c)).values
        var unexplained = [Float](repeating: 0, count: n)
        for ch in 0..<3 { for i in 0..<n {
            let r = e[ch * n + i] - o[ch * n + i] - c[ch * n + i], d = moved[ch * n + i] - colourMoved[ch * n + i]
            unexplained[i] += r * r + d * d
        } }
        var local = PlanarImage(channels: 1, height: h, width: w, values: unexplained)
        for _ in 0..<spread { local = local.binomialSmoothed() }
        let share = local.values.map { exp(-$0 / (tolerance * tolerance)) }
        var values = [Float](repeating: 0, count: 4 * n)
        for ch in 0..<3 { for i in 0..<n { values[ch * n + i] = e[ch * n + i] - o[ch * n + i] - share[i] * c[ch * n + i] } }
        for i in 0..<n { values[3 * n + i] = share[i] }
        return PlanarImage(channels: 4, height: h, width: w, values: values)
    }

    /// The image sampled half a pixel right and down, band-limited (cubic B-spline).
    static func halfPixelShifted(_ image: PlanarImage) -> PlanarImage {
        let c = image.bSplineCoefficients(), w = image.width, h = image.height
        let k = cubicBSplineWeights(0.5)
        var out = PlanarImage(uninitializedChannels: image.channels, height: h, width: w)
        c.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in
            let s = src.baseAddress!, d = dst.baseAddress!
            for ch in 0..<image.channels { for y in 0..<h { for x in 0..<w {
                var v: Float = 0
                for j in 0..<4 {
                    let row = s + (ch * h + min(max(y + j - 1, 0), h - 1)) * w
                    for i in 0..<4 { v += k[j] * k[i] * row[min(max(x + i - 1, 0), w - 1)] }
                }
                d[(ch * h + y) * w + x] = v
            } } }
        } }
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

import Foundation
import Tensor

/// Removes flicker in two passes (DESIGN.md, "Editors: deflicker").
///
/// Pass 1, `DeflickerAnalysis`: every frame is matched to its scene's reference by the
/// cross-frame attention, on the guide (the unprocessed original) or, blind, on the input's own
/// latent made illumination-robust. Through that correspondence the frame's colour low band is
/// compared with the reference's, and the difference is fitted as a tone curve per channel and a
/// smooth gain field (`FrameAppearance`): that is the frame's flicker relative to the reference.
/// Only this small record is kept per frame (in a temporary file), and each scene's consensus
/// (`SceneConsensus`) is accumulated as the frames go by.
///
/// Pass 2, `DeflickerPlan`: each frame is mapped to its reference's appearance and on to the
/// scene's consensus. Only per-value curves and smooth fields touch the frame, so its detail and
/// its motion are its own: nothing is blended across frames, and nothing can ghost or trail.
///
/// A new reference is taken at a scene cut (consecutive frames that do not correlate), and when
/// the frame no longer overlaps the reference enough to be matched (the camera has moved on).
public final class DeflickerAnalysis {
    public enum Reason: String, Sendable {
        /// The first frame of the video, or the reference the user chose.
        case start
        /// A scene cut.
        case cut
        /// The camera has moved on: too little of the frame matches the reference.
        case coverage
    }

    /// A run of frames with one reference.
    public struct Scene: Sendable {
        public var start: Int
        public var reference: Int
        public var reason: Reason
    }

    /// A frame whose thumbnail correlates less than this with the previous one starts a new scene.
    public static let cutCorrelation: Float = 0.5
    /// A frame matching less than this share of itself to the reference takes a new reference.
    public static let minimumCoverage: Float = 0.25

    public let grid: AppearanceGrid
    let codec: AliasFreeCodec
    let fixedReference: Int?
    let store: RecordStore
    private var reference: (index: Int, attention: CrossFrameAttention, colour: PlanarImage)?
    private var consensus: SceneConsensus
    private var corrections: [ConsensusCorrection] = []
    private var previousThumbnail: [Float]?
    public private(set) var scenes: [Scene] = []
    /// First frames of the scene cuts found.
    public private(set) var cuts: [Int] = []
    public private(set) var frameCount = 0
    public let width: Int, height: Int

    /// - Parameter fixed: a reference chosen by the user (its index, input frame and guide frame),
    ///   used for the whole video; nil to take one at the start and after each cut.
    public init(width: Int, height: Int, fixed: (index: Int, input: PlanarImage, guide: PlanarImage?)? = nil) throws {
        self.width = width
        self.height = height
        codec = AliasFreeCodec()
        let k = codec.factor
        grid = AppearanceGrid(latentWidth: (width + k - 1) / k, latentHeight: (height + k - 1) / k, factor: k, origin: codec.origin)
        store = try RecordStore(recordLength: FrameAppearance.recordLength(grid) + 1)
        consensus = SceneConsensus(grid: grid)
        fixedReference = fixed?.index
        if let fixed {
            let (features, colour) = analyse(input: fixed.input, guide: fixed.guide)
            reference = (fixed.index, CrossFrameAttention(reference: features), colour)
            scenes = [Scene(start: 0, reference: fixed.index, reason: .start)]
        }
    }

    /// Adds the next frame: the input and, when there is one, its guide (same size).
    public func add(input: PlanarImage, guide: PlanarImage?) throws {
        let index = frameCount
        let (features, colour) = analyse(input: input, guide: guide)
        let thumbnail = Self.thumbnail(features)
        let isCut = previousThumbnail.map { Self.correlation($0, thumbnail) < Self.cutCorrelation } ?? false
        previousThumbnail = thumbnail
        if isCut { cuts.append(index) }

        var appearance: FrameAppearance?
        if let reference, !(isCut && fixedReference == nil) {
            if reference.index == index {
                appearance = .identity(grid)
            } else {
                let field = reference.attention.correspondence(for: features)
                let (carried, confidence) = carry(reference.colour, along: field)
                let fitted = FrameAppearance.fit(frame: colour, reference: carried, confidence: confidence,
                                                 samplesPerCell: AppearanceGrid.cell * grid.factor / 2, field: field, grid: grid)
                if fixedReference != nil || fitted.matchedFraction >= Self.minimumCoverage { appearance = fitted }
            }
        }
        if appearance == nil {
            // This frame becomes the reference of a new scene.
            if reference != nil { corrections.append(consensus.correction) }
            consensus = SceneConsensus(grid: grid)
            reference = (index, CrossFrameAttention(reference: features), colour)
            scenes.append(Scene(start: index, reference: index, reason: scenes.isEmpty ? .start : (isCut ? .cut : .coverage)))
            appearance = .identity(grid)
        }
        consensus.add(appearance!)
        try store.append(appearance!.record + [Float(scenes.count - 1)])
        frameCount += 1
    }

    /// Ends the first pass: the plan that maps every frame to its scene's consensus.
    public func finish() -> DeflickerPlan {
        var all = corrections
        if !scenes.isEmpty { all.append(consensus.correction) }
        return DeflickerPlan(store: store, grid: grid, corrections: all, scenes: scenes, cuts: cuts, frameCount: frameCount)
    }

    /// The features to match on, and the input at half resolution, whose colours are compared.
    /// (At half resolution the colours are still nearly point samples: comparing blurred colours
    /// would bias the tone curves wherever the picture has texture, as blur and a curve do not commute.)
    func analyse(input: PlanarImage, guide: PlanarImage?) -> (features: PlanarImage, colour: PlanarImage) {
        let features = guide.map { codec.encode($0) } ?? Self.illuminationRobust(codec.encode(input))
        return (features, input.averagePooled2())
    }

    /// Each channel scaled to zero mean and unit variance over the frame: a global gain, offset or
    /// colour cast changes nothing, and a smooth gain field changes little of the local structure
    /// the attention matches on.
    static func illuminationRobust(_ latent: PlanarImage) -> PlanarImage {
        var out = latent
        let n = latent.planeSize
        out.withUnsafeMutableBufferPointer { p in
            for c in 0..<latent.channels {
                let plane = p.baseAddress! + c * n
                var sum = 0.0, squares = 0.0
                for i in 0..<n { sum += Double(plane[i]); squares += Double(plane[i]) * Double(plane[i]) }
                let mean = sum / Double(n), sd = max((squares / Double(n) - mean * mean).squareRoot(), 1e-6)
                for i in 0..<n { plane[i] = Float((Double(plane[i]) - mean) / sd) }
            }
        }
        return out
    }

    /// The luma of the features' colour channels, 2×2 pooled, standardised: consecutive frames of
    /// one shot correlate highly however the light flickers; across a cut they do not.
    static func thumbnail(_ features: PlanarImage) -> [Float] {
        let colour = features.channels(0..<3)
        let pooled = colour.width >= 4 && colour.height >= 4 ? colour.averagePooled2() : colour
        let n = pooled.planeSize, v = pooled.values
        var luma = (0..<n).map { 0.2126 * v[$0] + 0.7152 * v[n + $0] + 0.0722 * v[2 * n + $0] }
        let mean = luma.reduce(0, +) / Float(n)
        let sd = max((luma.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(n)).squareRoot(), 1e-6)
        for i in 0..<n { luma[i] = (luma[i] - mean) / sd }
        return luma
    }

    static func correlation(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count, !a.isEmpty else { return 0 }
        var s: Float = 0
        for i in 0..<a.count { s += a[i] * b[i] }
        return s / Float(a.count)
    }

    /// The reference's half-resolution colours carried to the frame's half-resolution grid
    /// (bilinear), with the match's confidence there.
    func carry(_ colour: PlanarImage, along field: CorrespondenceField) -> (PlanarImage, [Float]) {
        let w = colour.width, h = colour.height, plane = w * h
        var out = PlanarImage(uninitializedChannels: 3, height: h, width: w)
        var confidence = [Float](repeating: 0, count: plane)
        let k = Float(grid.factor), origin = grid.origin
        colour.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in confidence.withUnsafeMutableBufferPointer { conf in
            let s = src.baseAddress!, d = dst.baseAddress!, cp = conf.baseAddress!
            parallelChunks(h, minimumChunk: 8) { rows in
                for y in rows {
                    for x in 0..<w {
                        let px = 2 * Float(x) + 0.5, py = 2 * Float(y) + 0.5
                        let (dx, dy, c) = WarpingErrorMeter.displacement(field, px, py, factor: k, origin: origin)
                        let sx = min(max((px + dx - 0.5) / 2, 0), Float(w - 1)), sy = min(max((py + dy - 0.5) / 2, 0), Float(h - 1))
                        let x0 = min(Int(sx), w - 2 < 0 ? 0 : w - 2), y0 = min(Int(sy), h - 2 < 0 ? 0 : h - 2)
                        let x1 = min(x0 + 1, w - 1), y1 = min(y0 + 1, h - 1), ax = sx - Float(x0), ay = sy - Float(y0)
                        let i = y * w + x
                        cp[i] = c
                        for ch in 0..<3 {
                            let p = s + ch * plane
                            d[ch * plane + i] = (1 - ay) * ((1 - ax) * p[y0 * w + x0] + ax * p[y0 * w + x1]) + ay * ((1 - ax) * p[y1 * w + x0] + ax * p[y1 * w + x1])
                        }
                    }
                }
            }
        } } }
        return (out, confidence)
    }
}

/// The second pass: each frame mapped to its scene's consensus appearance.
public final class DeflickerPlan {
    let store: RecordStore
    public let grid: AppearanceGrid
    let corrections: [ConsensusCorrection]
    public let scenes: [DeflickerAnalysis.Scene]
    public let cuts: [Int]
    public let frameCount: Int

    init(store: RecordStore, grid: AppearanceGrid, corrections: [ConsensusCorrection],
         scenes: [DeflickerAnalysis.Scene], cuts: [Int], frameCount: Int) {
        self.store = store
        self.grid = grid
        self.corrections = corrections
        self.scenes = scenes
        self.cuts = cuts
        self.frameCount = frameCount
    }

    /// The appearance recorded for frame `index` in the first pass.
    public func appearance(of index: Int) throws -> (appearance: FrameAppearance, scene: Int) {
        let record = try store.read(index)
        return (FrameAppearance(record: Array(record.dropLast()), grid: grid), Int(record.last!))
    }

    /// Frame `index` (counted from 0 over the whole video) made consistent.
    public func apply(to frame: PlanarImage, index: Int) throws -> PlanarImage {
        let (appearance, scene) = try appearance(of: index)
        return corrections[scene].apply(to: frame, appearance: appearance, grid: grid)
    }
}

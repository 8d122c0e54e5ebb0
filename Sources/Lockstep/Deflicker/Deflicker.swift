import Foundation
import MediaIO
import Tensor

/// Removes flicker in two passes (DESIGN.md, "Editors: deflicker").
///
/// Pass 1, `DeflickerAnalysis`: every frame is matched to a reference by the cross-frame
/// attention, on the guide (the unprocessed original, and refined on its pictures) or, blind, on
/// the input's own latent made illumination-robust. Through that correspondence the frame's
/// colours are compared with the reference's (with a guide, the reference's first moved by the
/// change of content the guide shows, `followingContent`), and the difference is fitted as a tone
/// curve per channel and a smooth gain field (`FrameAppearance`): that is the frame's flicker
/// relative to the reference. With a guide, the
/// guide's own tone curves to its reference are fitted too: they show how the light really
/// changes, flicker-free, which tells the curve consensus what to keep. Only this small record is
/// kept per frame (in a temporary file); the gain consensus is accumulated as frames go by.
///
/// Pass 2, `DeflickerPlan`: each frame is mapped to its reference's appearance and on to the
/// consensus (`CurveConsensus`, `FieldConsensus`). Only per-value curves and smooth fields touch
/// the frame, so its detail and its motion are its own: nothing is blended across frames, and
/// nothing can ghost or trail.
///
/// References: a shot starts at the first frame and at each scene cut (consecutive frames that do
/// not correlate) and takes that frame as its reference. When the camera moves on so far that too
/// little of a frame matches the reference, that frame becomes the next reference, linked to the
/// previous one by its fitted appearance: its curves, so that the tone consensus, taken over a
/// window of frames, can span references, and its gain field and cell positions, which carry the
/// neighbouring references' frames into each reference's gain consensus. If even the link is too
/// weak, the shot starts afresh. (Each reference's gain sums and link wait for the end of the
/// pass in a temporary file, not in memory.)
public final class DeflickerAnalysis {
    public enum Reason: String, Sendable {
        /// The first frame of the video, or the reference the user chose.
        case start
        /// A scene cut.
        case cut
        /// The camera has moved on: too little of the frame matches the previous reference.
        case coverage
    }

    /// A run of frames with one reference.
    public struct Scene: Sendable {
        public var start: Int
        public var reference: Int
        public var reason: Reason
    }

    /// A frame whose thumbnail correlates less than this with the previous one starts a new shot
    /// (blind, only where its detail's thumbnail does too: see `isCut`).
    public static let cutCorrelation: Float = 0.5
    /// A frame whose matches to the reference have less mean confidence than this becomes the
    /// next reference (a little below what neighbouring frames of real video reach); blind, less
    /// than this share of what the reference reaches matched against itself
    /// (`Reference.matchable`). References
    /// close together are what make the gain consensus wide: each link between them is a fit of
    /// two frames that still match well, so frames carried across it keep much of their weight.
    /// A reference kept until its matches fail is linked to a frame that barely matches it, and
    /// the consensus then averages few fields. (On the eval's video, guided, local flicker, with
    /// `spanningReferences`' weights: 0.45 → 0.6 took references from 15 to 27 of 48 frames and
    /// 39.3 → 39.9 dB. 0.65 reached 40.1, but in `whiteSeenUnderALocalFlickerStaysWhite` it
    /// takes as references frames that see the paper, and between them the clipped frames' bounds
    /// say too little: the paper comes back at 0.957 (the same weakness shows at any setting
    /// when the reference sees what every other frame clips). From 0.75 on, local flicker gained
    /// more, but the pencil sketch's global jitter lost up to 3.8 dB: its tone curves, composed
    /// across many links, drift.)
    ///
    /// Blind, relative to the reference's own, because blind matching scores a flat
    /// neighbourhood near 0 by design (`contrastThreshold`): a picture with large flat parts (a
    /// white background, smooth colour, a night sky) cannot be matched there with confidence by
    /// any frame, itself included. Against a fixed 0.6 such a video took every frame as a new
    /// reference, and its tone, composed across a link of weak matches a frame, drifted (a
    /// stylised pan over a colour wheel on white came out at 21.1 dB from an input at 26.9, its
    /// green halved by frame 12; now 30.0). Blind references matched against themselves reached
    /// 0.59–0.93 of their cells on my cases. Measured blind: my phone and screen-recording cases
    /// +1.2 dB under global jitter and +1.0 under local flicker, 30 held-out cases +0.5 and
    /// +0.6, the public cases +0.1 and +0.3 (two of them −1.5 and −2.6 dB, where the second
    /// reference came two frames later), my static cameras +0.1 and 0. Guided matching
    /// (refined on the guide's pictures) took one reference for that colour wheel, and the rule
    /// made guided cases worse where it applied at all (my phone and screen-recording cases
    /// −0.3 dB under global jitter, the cockatoo −0.4): with a guide it stays absolute.
    public static let minimumCoverage: Float = 0.6
    /// Below this, the link to the previous reference is too weak to carry the tone, and the
    /// frame is compared with the reference whole instead (`wholeFrameLink`). (A new shot begins
    /// only at a cut.)
    public static let minimumLink: Float = 0.15
    /// Frames with more pixels than this (twice 640 × 360) are analysed downscaled by the
    /// smallest whole factor (`scale`) that brings them to at most this many: 720p and 1080p to
    /// 640 × 360, the size of the eval's video cases; frames up to 854 × 480 keep their size.
    /// What the analysis finds (tone curves, a gain field smooth over dozens of pixels, which
    /// frames are references) does not need the full size, and at 640 × 360 it costs a quarter of
    /// 720p's. The correction is applied to the full-size frame, whose detail it keeps.
    public static let analysisPixels = 2 * 640 * 360

    /// The smallest whole factor that brings a frame to at most `limit` pixels.
    public static func analysisScale(width: Int, height: Int, limit: Int = analysisPixels) -> Int {
        precondition(limit > 0, "a frame is analysed at one pixel at least")
        var scale = 1
        while (width / scale) * (height / scale) > limit { scale += 1 }
        return scale
    }

    /// The appearance grid, on the analysed (downscaled) frame.
    public let grid: AppearanceGrid
    /// How many times the frames are downscaled for their analysis (`analysisPixels`).
    public let scale: Int
    let codec: AliasFreeCodec
    let fixedReference: Int?
    let store: RecordStore
    private var reference: Reference?
    /// Curves from the current reference's appearance to its shot's first reference.
    private var linkToShot = [ToneCurve](repeating: .identity, count: 3)
    private var fields: FieldConsensus
    /// Each finished reference's gain sums, and how it relates to the previous reference (its
    /// link, where the shot goes on), kept in a temporary file.
    private let references: RecordStore
    /// The link of the current reference, nil where it starts a shot.
    private var currentLink: FrameAppearance?
    /// First frame of each shot (a run of references linked by their curves).
    private var shotStarts: [Int] = []
    private var previousThumbnails: (whole: Thumbnail, detail: Thumbnail?)?
    public private(set) var scenes: [Scene] = []
    /// First frames of the scene cuts found.
    public private(set) var cuts: [Int] = []
    public private(set) var frameCount = 0
    public let width: Int, height: Int
    /// Every frame's mean luma, in order.
    private var lumas: [Float] = []
    /// With a guide, the mean of the frames' tones against it (`GuideTones.frame`), by scene
    /// (cut to cut).
    private var sceneTones: [ToneRelation.CensoredMean] = []

    /// A frame's tone against its guide: the relation from the guide's values to the frame's own
    /// (`frame`), and to the frame's mapped to its shot's first reference (`shot`). Without a
    /// guide, `frame` is the identity and `shot` relates the frame's own values to the same
    /// mapped ones: what the correction does to the frame, which `DeflickerPlan.drift(at:)` keeps
    /// from wandering.
    struct GuideTones {
        var frame: ToneRelation, shot: ToneRelation
        static let none = GuideTones(frame: .identity, shot: .identity)
    }

    /// - Parameters:
    ///   - fixed: a reference chosen by the user (its index, input frame and guide frame), used
    ///     for the whole video; nil to choose references as the video goes.
    ///   - analysisPixels: the most pixels a frame is analysed at (`analysisPixels`).
    public init(width: Int, height: Int, fixed: (index: Int, input: PlanarImage, guide: PlanarImage?)? = nil,
                analysisPixels: Int = DeflickerAnalysis.analysisPixels) throws {
        self.width = width
        self.height = height
        scale = Self.analysisScale(width: width, height: height, limit: analysisPixels)
        codec = AliasFreeCodec()
        let k = codec.factor, analysedWidth = width / scale, analysedHeight = height / scale
        grid = AppearanceGrid(latentWidth: (analysedWidth + k - 1) / k, latentHeight: (analysedHeight + k - 1) / k,
                              factor: k, origin: codec.origin)
        store = try RecordStore(recordLength: DeflickerPlan.recordLength(grid))
        references = try RecordStore(recordLength: FieldConsensus.sumsLength(grid) + FrameAppearance.recordLength(grid) + 1)
        fields = FieldConsensus(grid: grid)
        fixedReference = fixed?.index
        if let fixed {
            reference = Reference(index: fixed.index, analyse(input: fixed.input, guide: fixed.guide))
            scenes = [Scene(start: 0, reference: fixed.index, reason: .start)]
            shotStarts = [0]
            referenceOpen = true
        }
    }

    /// Where each latent sample of `frame` lies in `reference`, as the first pass matches them
    /// (both analysed by `analyse`, both guided or both blind).
    public func correspondence(from frame: AnalysedFrame, to reference: AnalysedFrame) -> CorrespondenceField {
        Reference(index: 0, reference).correspondence(for: frame, factor: codec.factor, origin: codec.origin)
    }

    /// Adds the next frame: the input and, when there is one, its guide (same size).
    public func add(input: PlanarImage, guide: PlanarImage?) throws {
        try add(analyse(input: input, guide: guide))
    }

    /// Adds the next frame, analysed beforehand (`analyse`, which can run on another thread).
    public func add(_ frame: AnalysedFrame) throws {
        try fit(match(frame))
    }

    /// A frame matched to its reference (`match`), waiting for its fit (`fit`).
    public struct MatchedFrame {
        let index: Int
        let frame: AnalysedFrame
        let isCut: Bool
        /// Why the frame becomes a reference, where it does.
        let newReference: Reason?
        /// Whether the frame is its scene's reference (a new one, or the one the user chose).
        let isReference: Bool
        /// The scene it belongs to (a position in `scenes`).
        let scene: Int
        /// Every `stride`-th sample of its colours and its guide's.
        let stride: Int
        let samplesPerCell: Int
        let sampledColour: PlanarImage
        let sampledGuide: PlanarImage?
        /// Its comparison with the reference it was matched to; nil where it was not matched
        /// (the first frame, a cut, the reference the user chose).
        let comparison: Comparison?

        struct Comparison {
            /// The reference the frame was matched to (not the frame itself, where it becomes one).
            let reference: Reference
            let field: CorrespondenceField
            /// The reference's colours, its guide's and its edit's slope, carried onto the frame.
            let carried: PlanarImage
            let confidence: [Float]
            /// The reference's colours as they would be on the frame's content (`followingContent`).
            let referenceColour: PlanarImage
            /// With a guide: the frame's and the reference's carried, and how far they agree.
            let guidePair: (frame: PlanarImage, reference: PlanarImage)?
            let agreement: [Float]?
        }
    }

    /// The first half of `add`, which decides the references: the frame matched to the current
    /// reference, and whether it becomes the next (a cut, or too little of it matches). What
    /// the fit needs of the frame is kept in the result; `fit` takes the results in order. The
    /// fit decides nothing the next match needs, so the next frame can be matched while this one
    /// is fitted (the fit is the longer half: on the 720p bench clip, guided, the first pass went
    /// from 9.1–9.6 to 8.2–8.3 s). `match` and `fit` share no state: each may run on its own
    /// thread, each called in frame order.
    public func match(_ frame: AnalysedFrame) -> MatchedFrame {
        let index = frameCount
        lumas.append(frame.luma)
        let colour = frame.colour
        hasGuide = frame.guide != nil
        // About 60 000 pairs are plenty for the fit: larger frames are sampled sparser.
        let stride = colour.planeSize > 4 * Self.fitSamples ? 4 : (colour.planeSize > Self.fitSamples ? 2 : 1)
        let samplesPerCell = AppearanceGrid.cell * grid.factor / 2 / stride, sampledColour = Self.subsampled(colour, stride)
        let sampledGuide = frame.guide.map { Self.subsampled($0, stride) }
        let isCut = previousThumbnails.map { Self.isCut(from: $0, to: (frame.thumbnail, frame.detailThumbnail)) } ?? false
        previousThumbnails = (frame.thumbnail, frame.detailThumbnail)
        if isCut { cuts.append(index) }

        var newReference: Reason?
        var comparison: MatchedFrame.Comparison?
        if let reference {
            if isCut && fixedReference == nil {
                newReference = .cut
            } else if reference.index != index {
                let field = reference.correspondence(for: frame, factor: codec.factor, origin: codec.origin)
                // The reference's colours, its guide's and its edit's slope, carried in one go.
                var (carried, confidence) = carry(reference.pictures, along: field, stride: stride)
                var referenceColour = carried.channels(0..<3)
                var guidePair: (frame: PlanarImage, reference: PlanarImage)?, agreement: [Float]?
                if let guide = frame.guide, let sampledGuide, carried.channels == 9 {
                    let pair = (frame: sampledGuide, reference: carried.channels(3..<6))
                    let agreed = Self.guideAgreement(guide, carried: pair.reference, stride: stride)
                    for i in confidence.indices { confidence[i] *= agreed[i] }
                    referenceColour = Self.followingContent(referenceColour, slope: carried.channels(6..<9), from: pair.reference, to: pair.frame)
                    guidePair = pair
                    agreement = agreed
                }
                comparison = .init(reference: reference, field: field, carried: carried, confidence: confidence,
                                   referenceColour: referenceColour, guidePair: guidePair, agreement: agreement)
                if fixedReference == nil && matchedShare(confidence, of: sampledColour, samplesPerCell: samplesPerCell)
                    < Self.minimumCoverage * reference.matchable {
                    newReference = .coverage
                }
            }
        } else {
            newReference = .start
        }
        if let reason = newReference {
            var next = Reference(index: index, frame)
            if fixedReference == nil && frame.guide == nil {
                let field = next.correspondence(for: frame, factor: codec.factor, origin: codec.origin)
                next.matchable = matchedShare(carry(next.pictures, along: field, stride: stride).1, of: sampledColour,
                                              samplesPerCell: samplesPerCell)
            }
            reference = next
            scenes.append(Scene(start: index, reference: index, reason: reason))
        }
        frameCount += 1
        return MatchedFrame(index: index, frame: frame, isCut: isCut, newReference: newReference,
                            isReference: newReference != nil || reference?.index == index, scene: scenes.count - 1,
                            stride: stride, samplesPerCell: samplesPerCell, sampledColour: sampledColour, sampledGuide: sampledGuide,
                            comparison: comparison)
    }

    /// The share of a frame (`sampled`: its colours as the fit samples them) that matches of
    /// this `confidence` cover, as the fit will find it (its cells' mean coverage).
    func matchedShare(_ confidence: [Float], of sampled: PlanarImage, samplesPerCell: Int) -> Float {
        FrameAppearance.matchedFraction(FrameAppearance.coverage(confidence: confidence, width: sampled.width, height: sampled.height,
                                                                 samplesPerCell: samplesPerCell, grid: grid))
    }

    /// The second half of `add`: the frame's appearance fitted against its reference, and kept.
    public func fit(_ matched: MatchedFrame) throws {
        try fit(appraise(matched))
    }

    /// What `fit` finds of a frame by itself: its appearance against its reference, its link
    /// where it becomes a reference, its tone against its guide.
    public struct AppraisedFrame {
        let matched: MatchedFrame
        let appearance: FrameAppearance
        let link: FrameAppearance?
        let frameTone: ToneRelation?
    }

    /// The part of `fit` that depends on the frame and its match alone, which is most of its work:
    /// safe to run on any thread, for several frames at once and in any order, so that the fit
    /// keeps pace with the matching (`fit(_: AppraisedFrame)` then takes the frames in order).
    public func appraise(_ matched: MatchedFrame) -> AppraisedFrame {
        let frame = matched.frame, samplesPerCell = matched.samplesPerCell, stride = matched.stride
        let sampledColour = matched.sampledColour
        var appearance = FrameAppearance.identity(grid)
        var link: FrameAppearance?
        if let comparison = matched.comparison {
            let field = comparison.field, confidence = comparison.confidence, referenceColour = comparison.referenceColour
            // With a guide, a frame's clipped values are left out of its fit
            // (`FrameAppearance.unclipped`): the second pass estimates them from what the pixel
            // showed unclipped or from the guide's tone. Blind it has nothing but the interval the
            // clip leaves, and the value the fit maps the clip to (the mean of what the reference
            // shows there) is its best estimate of them: a white sky that one frame clips and the
            // reference does not stays white (left out, 4 to 5 levels grey in such frames). A
            // frame that becomes the next reference is fitted as its link, which maps its
            // recorded values, clipped ones included, either way: the frames matched to it map
            // onto them.
            let clippedAsValues = matched.sampledGuide == nil || matched.newReference == .coverage
            appearance = FrameAppearance.fit(frame: sampledColour, reference: referenceColour, confidence: confidence,
                                             samplesPerCell: samplesPerCell, field: field, grid: grid, clippedAsValues: clippedAsValues)
            // Where the fit found a gain field, it is fitted again with every match trusted as
            // far as it agrees with the matches around it (`raisedConfidence`): a flat
            // surface's matches, unsure of their place one by one, are where a field shows most.
            // Only then: under a global flicker the curves do the work. Each cell's coverage
            // stays the first fit's, the share of it whose place the attention is sure of: the
            // consensus reads each cell's gain where it lies in the reference.
            if let agreement = comparison.agreement, let guidePair = comparison.guidePair, appearance.gain.values.contains(where: { $0 != 1 }) {
                let pictures = comparison.reference.pictures
                let raised = raisedConfidence(confidence, agreement: agreement, field: field, frame: sampledColour,
                                              guide: guidePair.frame, reference: comparison.carried.channels(0..<3),
                                              extent: (pictures.width, pictures.height), stride: stride)
                let coverage = appearance.coverage
                appearance = FrameAppearance.fit(frame: sampledColour, reference: referenceColour, confidence: raised,
                                                 samplesPerCell: samplesPerCell, field: field, grid: grid,
                                                 clippedAsValues: clippedAsValues)
                appearance.coverage = coverage
            }
            if matched.newReference == .coverage {
                if appearance.matchedFraction >= Self.minimumLink {
                    link = appearance
                } else if frame.pyramid[frame.pyramid.finest].detailedShare < Self.minimumLink {
                    // Nothing matched because there was nothing to match (blind, on a
                    // colour gradient, fog, a sky), and nothing was cut: not a new shot. The
                    // two frames are compared whole, and the tone is carried on
                    // (`wholeFrameLink`). A frame with detail that matched nothing (fast
                    // motion, new content) still begins a shot: compared whole, it would
                    // take the change of content for a change of tone.
                    link = wholeFrameLink(sampledColour, reference: comparison.reference, field: field, stride: stride,
                                          samplesPerCell: samplesPerCell)
                }
                appearance = .identity(grid)
            }
        }
        if matched.isReference {
            // The reference's own gain (1) is censored where the reference itself is clipped.
            appearance.clipped = FrameAppearance.clippedShares(of: sampledColour, weight: nil, samplesPerCell: samplesPerCell, grid: grid)
        }
        // Against the guide: the frame's own tone (what the edit and this frame's flicker make
        // of the original).
        let frameTone = matched.sampledGuide.map { ToneRelation(from: $0, to: sampledColour, frame: sampledColour) }
        return AppraisedFrame(matched: matched, appearance: appearance, link: link, frameTone: frameTone)
    }

    /// The frame's appraisal kept, in its place: the references and shots it opens, its curves
    /// composed to its shot's first reference, its gain added to its reference's consensus.
    public func fit(_ appraised: AppraisedFrame) throws {
        let matched = appraised.matched, index = matched.index, samplesPerCell = matched.samplesPerCell
        precondition(index == framesFitted, "frames are fitted in the order they were matched")
        let sampledColour = matched.sampledColour, link = appraised.link
        var appearance = appraised.appearance
        if matched.newReference != nil {
            if referenceOpen { try finishReference() }
            referenceOpen = true
            if link == nil { shotStarts.append(index) }
            currentLink = link
            linkToShot = link.map { Self.compose(linkToShot, $0.curves) } ?? Array(repeating: .identity, count: 3)
            fields = FieldConsensus(grid: grid)
        }
        // Curves go to the shot's first reference; the gain field stays with this reference.
        appearance.curves = Self.compose(linkToShot, appearance.curves)
        fields.add(appearance)
        // Against the guide: the frame's own tone (`appraise`) and the tone the frame has once
        // mapped to its shot's first reference.
        var tones = GuideTones.none
        let mapped = appearance.mappedToReference(sampledColour, samplesPerCell: samplesPerCell, grid: grid)
        if let guide = matched.sampledGuide, let frameTone = appraised.frameTone {
            tones = GuideTones(frame: frameTone, shot: ToneRelation(from: guide, to: mapped, frame: sampledColour).uncensored)
        } else {
            tones.shot = ToneRelation(from: sampledColour, to: mapped, frame: sampledColour).uncensored
        }
        if index == 0 || matched.isCut { sceneTones.append(ToneRelation.CensoredMean()) }
        sceneTones[sceneTones.count - 1].add(tones.frame)
        try store.append(DeflickerPlan.record(appearance, shotTone: tones.shot, scene: matched.scene))
        framesFitted += 1
    }

    /// Ends the first pass: the plan that maps every frame to its consensus.
    public func finish() throws -> DeflickerPlan {
        precondition(framesFitted == frameCount, "every frame matched is fitted before the pass ends")
        if referenceOpen { try finishReference() }
        let sumsLength = FieldConsensus.sumsLength(grid)
        let linkShare = (hasGuide ? FitRegularisation.guided : .blind).linkShare
        let gains = try FieldConsensus.spanningReferences(count: references.count, grid: grid, linkShare: linkShare) { [self] k in
            let record = try references.read(k)
            let own = FieldConsensus(grid: grid, sums: Array(record[..<sumsLength]))
            let link = record.last! > 0 ? FrameAppearance(record: Array(record[sumsLength..<(record.count - 1)]), grid: grid) : nil
            return (own, link)
        }
        // The edit's tone: the mean of every frame's tone against its guide, over the scene.
        let editTones = hasGuide ? sceneTones.map(\.mean) : []
        return DeflickerPlan(width: width, height: height, store: store, grid: grid, scale: scale, gains: gains,
                             scenes: scenes, shotStarts: shotStarts, cuts: cuts, lumas: lumas, editTones: editTones,
                             fixedReference: fixedReference)
    }

    /// Stores the current reference's gain sums and link.
    private func finishReference() throws {
        try references.append(fields.sums + (currentLink ?? .identity(grid)).record + [currentLink == nil ? 0 : 1])
    }

    /// Whether the frames came with a guide (known once the first has been added).
    private var hasGuide = false
    /// Frames fitted so far (`fit`), and whether a reference's gain sums are being gathered.
    private var framesFitted = 0
    private var referenceOpen = false

    /// Each channel's outer ∘ inner.
    static func compose(_ outer: [ToneCurve], _ inner: [ToneCurve]) -> [ToneCurve] {
        zip(outer, inner).map { $0.after($1) }
    }

    /// How far each match of `field` agrees with the matches around it: exp(−½ (d² + s²)), d the
    /// distance in latent samples from their mean displacement and s² their spread about it, both
    /// weighted by confidence over a Gaussian of a cell (σ 4 samples, cut at the field's edges).
    /// A flat surface's matches are unsure of their place one by one (every place on a table
    /// looks alike), but where they move as the matches around them do, their colour is as sure
    /// as any; a match onto a lookalike far off, or among neighbours that disagree, is not.
    public static func consistency(of field: CorrespondenceField) -> [Float] {
        let w = field.width, h = field.height, n = w * h, sigma: Float = 4, reach = 12
        let taps = (-reach...reach).map { exp(-0.5 * Float($0 * $0) / (sigma * sigma)) }
        // Σ c, Σ c·x, Σ c·y, Σ c·(x² + y²) (displacements from each sample's own place), each
        // blurred separably, one plane per worker.
        var planes = [Float](repeating: 0, count: 4 * n)
        planes.withUnsafeMutableBufferPointer { pb in taps.withUnsafeBufferPointer { tb in
            let p = pb.baseAddress!, taps = tb.baseAddress! + reach
            for i in 0..<n {
                let c = max(field.confidence[i], 1e-4), dx = field.x[i] - Float(i % w), dy = field.y[i] - Float(i / w)
                p[i] = c; p[n &+ i] = c * dx; p[2 &* n &+ i] = c * dy; p[3 &* n &+ i] = c * (dx * dx + dy * dy)
            }
            DispatchQueue.concurrentPerform(iterations: 4) { k in
                let plane = p + k &* n
                let row = UnsafeMutablePointer<Float>.allocate(capacity: n)
                defer { row.deallocate() }
                for y in 0..<h { for x in 0..<w {
                    var sum: Float = 0
                    for t in max(-reach, -x)...min(reach, w - 1 - x) { sum += taps[t] * plane[y &* w &+ x &+ t] }
                    row[y &* w &+ x] = sum
                } }
                for y in 0..<h { for x in 0..<w {
                    var sum: Float = 0
                    for t in max(-reach, -y)...min(reach, h - 1 - y) { sum += taps[t] * row[(y &+ t) &* w &+ x] }
                    plane[y &* w &+ x] = sum
                } }
            }
        } }
        return (0..<n).map { i in
            let c = planes[i], mx = planes[n + i] / c, my = planes[2 * n + i] / c
            let spread = max(planes[3 * n + i] / c - mx * mx - my * my, 0)
            let dx = field.x[i] - Float(i % w) - mx, dy = field.y[i] - Float(i / w) - my
            return exp(-0.5 * (dx * dx + dy * dy + spread))
        }
    }

    /// Each sample's `confidence` raised to how far its match agrees with its neighbours
    /// (`consistency`, read as `carry` reads the field) where its colour can be trusted
    /// without being sure of its place, times the guide's `agreement`:
    /// - the reference's colour carried onto it (`reference`, before it follows the guide) is
    ///   flat around it, against the guide's noise: a little off, it would read the same;
    /// - the frame's colour is a function of its guide's there, as a grade's is (what a linear
    ///   fit of the one on the other over the neighbouring samples leaves, against the same
    ///   noise): then the edit stays where its guide does;
    /// - neither colour is clipped, where a colour is a bound, not a value (on white paper that
    ///   the flicker clips, a pencil sketch's, trusting it more moved the fit);
    /// - the match lies within the reference: beyond its edge `carry` reads the edge's colour,
    ///   which the neighbours agree with but which is not the content's.
    func raisedConfidence(_ confidence: [Float], agreement: [Float], field: CorrespondenceField, frame: PlanarImage, guide: PlanarImage,
                          reference: PlanarImage, extent: (width: Int, height: Int), stride: Int) -> [Float] {
        var trusted = field
        trusted.confidence = Self.consistency(of: field)
        var raised = confidence
        let ow = frame.width, oh = frame.height, n = frame.planeSize, high = FrameAppearance.clippedLevel, low = 1 - high
        let allowance = 3 * Self.agreementNoise * Self.agreementNoise
        let k = Float(grid.factor), origin = grid.origin
        frame.withUnsafeBufferPointer { fb in reference.withUnsafeBufferPointer { rb in guide.withUnsafeBufferPointer { gb in
        raised.withUnsafeMutableBufferPointer { out in agreement.withUnsafeBufferPointer { ab in
            let f = fb.baseAddress!, r = rb.baseAddress!, g = gb.baseAddress!, raised = out.baseAddress!, agreement = ab.baseAddress!
            parallelChunks(oh, minimumChunk: 8) { rows in
                for oy in rows {
                    for ox in 0..<ow {
                        let i = oy &* ow &+ ox
                        guard (0..<3).allSatisfy({ ch in
                            let a = f[ch &* n &+ i], b = r[ch &* n &+ i]
                            return a < high && a > low && b < high && b > low
                        }) else { continue }
                        let px = 2 * Float(ox &* stride) + 0.5, py = 2 * Float(oy &* stride) + 0.5
                        let (dx, dy, consistent) = WarpingErrorMeter.displacement(trusted, px, py, factor: k, origin: origin)
                        let sx = (px + dx - 0.5) / 2, sy = (py + dy - 0.5) / 2
                        guard sx >= 0, sy >= 0, sx <= Float(extent.width - 1), sy <= Float(extent.height - 1) else { continue }
                        // The colour's trust is at most 1: where that could not raise the sample, skip it.
                        let bound = consistent * agreement[i]
                        guard bound > raised[i] else { continue }
                        // Over the 3 × 3 neighbouring samples, per channel: the carried colour's
                        // variance, and the frame's less what its guide's explains linearly.
                        var spread: Float = 0, unexplained: Float = 0
                        for ch in 0..<3 {
                            var sr: Float = 0, srr: Float = 0, sf: Float = 0, sff: Float = 0, sg: Float = 0, sgg: Float = 0, sfg: Float = 0, m: Float = 0
                            for yy in max(oy - 1, 0)...min(oy + 1, oh - 1) { for xx in max(ox - 1, 0)...min(ox + 1, ow - 1) {
                                let j = ch &* n &+ yy &* ow &+ xx, a = f[j], b = g[j], c = r[j]
                                sr += c; srr += c * c; sf += a; sff += a * a; sg += b; sgg += b * b; sfg += a * b; m += 1
                            } }
                            spread += max(srr / m - (sr / m) * (sr / m), 0)
                            let vf = max(sff / m - (sf / m) * (sf / m), 0), vg = max(sgg / m - (sg / m) * (sg / m), 0)
                            let cfg = sfg / m - (sf / m) * (sg / m)
                            unexplained += vg > 1e-6 ? max(vf - cfg * cfg / vg, 0) : vf
                        }
                        let colourTrust = exp(-0.5 * (spread + unexplained) / allowance)
                        raised[i] = max(raised[i], colourTrust * bound)
                    }
                }
            }
        } } } } }
        return raised
    }

    /// See `guideAgreement`: σ of the guide's noise, and the misplacement of its texture that a
    /// good match may still show, in half-resolution pixels (the carry takes the nearest sample,
    /// up to half a sample off, on top of the correspondence's own error).
    static let agreementNoise: Float = 0.04, agreementSlack: Float = 1.5

    /// How well the reference's guide, carried onto every `stride`-th sample of the frame's guide
    /// (both at half resolution), agrees with it: exp(−½ · |difference|² / allowance), the
    /// allowance being what noise and a misplacement of `agreementSlack` px of the local texture
    /// would leave. The guide is unprocessed, so where it disagrees the pair shows different
    /// content (an occlusion, a moving edge, a match one texel off), and its colours would read
    /// as a change of appearance. The attention's and the alignment's confidences judge whole
    /// blocks; this judges every sample. (On the eval's video: +1.0 dB on global flicker, +0.2 on
    /// local; the pans within 0.1 dB.)
    public static func guideAgreement(_ guide: PlanarImage, carried: PlanarImage, stride: Int) -> [Float] {
        let gw = guide.width, gh = guide.height, plane = gw * gh, ow = gw / stride, oh = gh / stride, outPlane = ow * oh
        precondition(carried.width == ow && carried.height == oh && guide.channels == carried.channels)
        let channels = guide.channels, noise = Self.agreementNoise, slack = Self.agreementSlack
        var agreement = [Float](repeating: 0, count: outPlane)
        guide.withUnsafeBufferPointer { gb in carried.withUnsafeBufferPointer { cb in agreement.withUnsafeMutableBufferPointer { ab in
            let g = gb.baseAddress!, carried = cb.baseAddress!, a = ab.baseAddress!
            parallelChunks(oh, minimumChunk: 8) { rows in
                for oy in rows {
                    let y = oy * stride, up = max(y - 1, 0), down = min(y + 1, gh - 1)
                    for ox in 0..<ow {
                        let x = ox * stride, left = max(x - 1, 0), right = min(x + 1, gw - 1)
                        var difference: Float = 0, gradient: Float = 0
                        for c in 0..<channels {
                            let p = g + c &* plane
                            let dx = (p[y &* gw &+ right] - p[y &* gw &+ left]) / Float(max(right - left, 1))
                            let dy = (p[down &* gw &+ x] - p[up &* gw &+ x]) / Float(max(down - up, 1))
                            let d = p[y &* gw &+ x] - carried[c &* outPlane &+ oy &* ow &+ ox]
                            gradient += dx * dx + dy * dy
                            difference += d * d
                        }
                        a[oy &* ow &+ ox] = exp(-0.5 * difference / (Float(channels) * noise * noise + slack * slack * gradient))
                    }
                }
            }
        } } }
        return agreement
    }

    /// The reference's colours as they would be on the frame's content: each moved by the edit's
    /// local slope times the change of its guide, `from` the reference's to the frame's (`to`).
    /// The bird turns, a shadow moves, and the original shows it; the edit changes each colour in
    /// its own way, which the slope, fitted on the reference, follows to first order. The
    /// difference that remains between the pair is then the flicker. (On the eval's video: +0.2 dB
    /// on global flicker and +0.5 on local; on the pans +0.1 and +0.3, and E_warp closer to the truth's.)
    /// The change is taken as `contentChange` makes it: in noisy footage the guide's own noise,
    /// new in every frame, is no change of content.
    public static func followingContent(_ colour: PlanarImage, slope: PlanarImage, from: PlanarImage, to: PlanarImage) -> PlanarImage {
        var out = colour
        let n = colour.count
        precondition(slope.count == n && from.count == n && to.count == n)
        let change = contentChange(from: from, to: to)
        slope.withUnsafeBufferPointer { s in change.withUnsafeBufferPointer { d in
            out.withUnsafeMutableBufferPointer { o in
                for i in 0..<n { o[i] += s[i] * d[i] }
            }
        } }
        return out
    }

    /// The guide's change `from` the reference's to the frame's, with its noise taken out: its
    /// mean over the slope's window (`slopeRadius`), plus its fine part (the change less that
    /// mean) where the fine part is more content than noise, its mean square over the window
    /// above twice the noise's variance σ² (a signal-to-noise ratio above 1), and none of it
    /// elsewhere. σ, per channel, is the change's noise as Donoho's estimator reads it: the
    /// median absolute finest diagonal (Haar) detail over 0.6745, which edges and texture barely
    /// move. In clean footage σ is a level or so and the fine part, where the carry misplaces
    /// texture by a fraction of a pixel, is kept; in footage shot in the dark the change is
    /// mostly the guide's noise (new in every frame, 20 levels of 255 on a night clip).
    ///
    /// Why all or nothing: the pair's difference should be the flicker, and the flicker's curves
    /// are fitted by matching the two sides' distributions, which is exact only where both carry
    /// as much noise. Moved by all of the guide's change with the right slope, the reference
    /// carries the frame's noise; moved by none of it, its own, as much. Moved by a share a of it
    /// (a slope that misreads how the edit mixes the channels' noise, or a partial, Wiener-like
    /// gain), it carries (1 − a)² + a² of it, less: the frame's values, noisier, were fitted
    /// onto a narrower spread, and each link's curves came out flatter. Where every frame becomes
    /// a reference (noise leaves the matches little confidence), a night clip's 47 links
    /// flattened its tone to a third of its range, green (24.9 dB against the truth, FFmpeg's
    /// `deflicker` 32.7).
    static func contentChange(from: PlanarImage, to: PlanarImage) -> PlanarImage {
        var change = to
        let n = change.count, plane = change.planeSize, w = change.width, h = change.height
        change.withUnsafeMutableBufferPointer { d in from.withUnsafeBufferPointer { f in for i in 0..<n { d[i] -= f[i] } } }
        let mean = change.boxFiltered(radius: slopeRadius)
        var fine = change
        fine.withUnsafeMutableBufferPointer { f in mean.withUnsafeBufferPointer { m in for i in 0..<n { f[i] -= m[i] } } }
        var squares = fine
        squares.withUnsafeMutableBufferPointer { q in for i in 0..<n { q[i] *= q[i] } }
        let energy = squares.boxFiltered(radius: slopeRadius)
        let noise: [Float] = change.withUnsafeBufferPointer { d in
            (0..<change.channels).map { c in
                let p = d.baseAddress! + c * plane
                var details: [Float] = []
                details.reserveCapacity(plane / 4)
                for y in Swift.stride(from: 0, to: h - 1, by: 2) {
                    for x in Swift.stride(from: 0, to: w - 1, by: 2) {
                        let at = y * w + x
                        details.append(abs(p[at] - p[at + 1] - p[at + w] + p[at + w + 1]) / 2)
                    }
                }
                guard !details.isEmpty else { return 0 }
                let sigma = Self.kthSmallest(details.count / 2, of: &details) / 0.6745
                return sigma * sigma
            }
        }
        change.withUnsafeMutableBufferPointer { d in mean.withUnsafeBufferPointer { m in
            fine.withUnsafeBufferPointer { f in energy.withUnsafeBufferPointer { e in
                for i in 0..<n {
                    d[i] = e[i] > 2 * noise[i / plane] ? m[i] + f[i] : m[i]
                }
            } }
        } }
        return change
    }

    /// The k-th smallest of `values` (from 0), which it reorders: Hoare's selection, linear on
    /// average (a whole sort was 3% of the 1080p first pass's samples).
    static func kthSmallest(_ k: Int, of values: inout [Float]) -> Float {
        values.withUnsafeMutableBufferPointer { v in
            var low = 0, high = v.count - 1
            while low < high {
                let pivot = v[(low + high) / 2]
                var i = low, j = high
                while i <= j {
                    while v[i] < pivot { i += 1 }
                    while v[j] > pivot { j -= 1 }
                    if i <= j { v.swapAt(i, j); i += 1; j -= 1 }
                }
                if k <= j { high = j } else if k >= i { low = i } else { break }
            }
            return v[k]
        }
    }

    /// Box radius (half-resolution samples) of the local regression that gives the edit's slope
    /// (radius 8 was up to 0.2 dB worse on the pans), its regulariser (a guide contrast below this
    /// says little about a slope) and its bound.
    static let slopeRadius = 4, slopeRegulariser: Float = 0.03, maximumSlope: Float = 3

    /// Per channel and sample, the slope of `input` against `guide` in a window around it (local
    /// least squares, as a guided filter fits it, with the whole frame's slope as its prior, then
    /// averaged over the window): how the edit changes a colour when the original's changes.
    /// Clamped to [0, `maximumSlope`]; an edit that reverses its original's contrast locally (a
    /// pencil stroke's edge) says too little to follow. (The prior, over a prior of 0: +0.7 dB on
    /// the graded video's global flicker.)
    public static func editSlope(input: PlanarImage, guide: PlanarImage) -> PlanarImage {
        precondition(input.channels == guide.channels && input.count == guide.count)
        let mean = { (image: PlanarImage) in image.boxFiltered(radius: slopeRadius) }
        let n = input.count
        var products = PlanarImage(uninitializedChannels: 2 * input.channels, height: input.height, width: input.width)
        input.withUnsafeBufferPointer { i in guide.withUnsafeBufferPointer { g in products.withUnsafeMutableBufferPointer { p in
            for k in 0..<n {
                p[k] = i[k] * g[k]
                p[n + k] = g[k] * g[k]
            }
        } } }
        let meanInput = mean(input), meanGuide = mean(guide), meanProducts = mean(products)
        var slope = PlanarImage(uninitializedChannels: input.channels, height: input.height, width: input.width)
        let floor = slopeRegulariser * slopeRegulariser, bound = maximumSlope
        // Each channel's slope over the whole frame: where the window's guide is flat, the
        // local slope is pulled to it rather than to 0.
        let plane = input.planeSize
        let global: [Float] = input.withUnsafeBufferPointer { i in guide.withUnsafeBufferPointer { g in
            (0..<input.channels).map { c in
                var si = 0.0, sg = 0.0, sgi = 0.0, sgg = 0.0
                for k in (c * plane)..<((c + 1) * plane) {
                    let a = Double(i[k]), b = Double(g[k])
                    si += a; sg += b; sgi += a * b; sgg += b * b
                }
                let m = Double(plane), covariance = sgi / m - si * sg / (m * m), variance = sgg / m - sg * sg / (m * m)
                return Float(min(max(covariance / max(variance, 1e-9), 0), Double(bound)))
            }
        } }
        meanInput.withUnsafeBufferPointer { mi in meanGuide.withUnsafeBufferPointer { mg in meanProducts.withUnsafeBufferPointer { mp in
            slope.withUnsafeMutableBufferPointer { s in
                for k in 0..<n {
                    let covariance = mp[k] - mg[k] * mi[k], variance = mp[n + k] - mg[k] * mg[k]
                    s[k] = min(max((covariance + floor * global[k / plane]) / (variance + floor), 0), bound)
                }
            }
        } } }
        return mean(slope)
    }

    /// Pairs the fit needs at most; beyond, they are taken every second or fourth sample.
    static let fitSamples = 65536

    /// Every `stride`-th sample along both axes (no filtering: the samples keep their values).
    static func subsampled(_ image: PlanarImage, _ stride: Int) -> PlanarImage {
        guard stride > 1 else { return image }
        let h = image.height / stride, w = image.width / stride
        var out = PlanarImage(uninitializedChannels: image.channels, height: h, width: w)
        image.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in
            for c in 0..<image.channels {
                for y in 0..<h {
                    for x in 0..<w { dst[(c * h + y) * w + x] = src[(c * image.height + y * stride) * image.width + x * stride] }
                }
            }
        } }
        return out
    }

    /// What the analysis keeps of a frame: the features to match on (as the attention's pyramid,
    /// built once whether the frame is matched or becomes a reference, and as a thumbnail to find
    /// cuts by), the input at half resolution, whose colours are compared, and the guide at half
    /// resolution, on which the match is refined. (At half resolution the colours are still
    /// nearly point samples: comparing blurred colours would bias the tone curves wherever the
    /// picture has texture, as blur and a curve do not commute.)
    public struct AnalysedFrame: Sendable {
        var pyramid: FeaturePyramid
        var thumbnail: Thumbnail
        /// Blind, the thumbnail of the features' detail (`gainInvariant`), which flicker in space
        /// does not change; nil with a guide, which does not flicker.
        var detailThumbnail: Thumbnail?
        var colour: PlanarImage
        var guide: PlanarImage?
        /// The full-size input's mean luma: the frame's fingerprint (`DeflickerPlan.apply`).
        var luma: Float
    }

    /// The part of a frame's analysis that depends on the frame alone: safe to run on any thread,
    /// ahead of `add`, so that a reader thread can do it while the previous frame is matched.
    /// The frame and its guide are full-size; they are downscaled by `scale` here.
    public func analyse(input fullInput: PlanarImage, guide fullGuide: PlanarImage?) -> AnalysedFrame {
        analyse(pooledInput: fullInput.averagePooled(scale), guide: fullGuide?.averagePooled(scale),
                luma: Float(FlickerAnalyzer.meanLuma(fullInput)))
    }

    /// Whether every pixel of a frame falls in one of its pooled picture's (the size is a
    /// multiple of `scale`): then the pooled picture is all `analyse(pooledInput:guide:)` needs,
    /// its mean luma being the frame's (up to rounding).
    public var poolsWhole: Bool { width % scale == 0 && height % scale == 0 }

    /// `analyse` of a frame and its guide already downscaled by `scale` (`averagePooled`), for
    /// frames that pool whole (`poolsWhole`): a reader can make them without the full-size floats.
    public func analyse(pooledInput input: PlanarImage, guide: PlanarImage?) -> AnalysedFrame {
        precondition(poolsWhole && input.width == width / scale && input.height == height / scale)
        return analyse(pooledInput: input, guide: guide, luma: Float(FlickerAnalyzer.meanLuma(input)))
    }

    /// `analyse` of a frame and its guide already downscaled by `scale`, with the full-size
    /// frame's mean luma (its fingerprint, `DeflickerPlan.apply`).
    func analyse(pooledInput input: PlanarImage, guide: PlanarImage?, luma: Float) -> AnalysedFrame {
        let levels = CrossFrameAttention.Configuration().levels
        let colour = input.averagePooled2()
        if let guide {
            let features = codec.encode(guide)
            return AnalysedFrame(pyramid: FeaturePyramid(features, levels: levels), thumbnail: Self.thumbnail(features),
                                 detailThumbnail: nil, colour: colour, guide: guide.averagePooled2(), luma: luma)
        }
        let latent = codec.encode(input), detail = Self.gainInvariant(latent)
        let pyramid = FeaturePyramid(detail, levels: levels, contrastFloor: Self.contrastThreshold * Self.meanLevel(latent))
        // The whole thumbnail is standardised channel by channel first; its contrast is the latent's.
        var whole = Self.thumbnail(Self.illuminationRobust(latent))
        whole.contrast = Self.thumbnail(latent).contrast
        return AnalysedFrame(pyramid: pyramid, thumbnail: whole,
                             detailThumbnail: Self.thumbnail(detail), colour: colour, guide: nil, luma: luma)
    }

    /// A reference frame and how frames are matched to it. With a guide, the attention's answer
    /// is refined on the guide's pictures (`ImageAlignment`, at half resolution, where the
    /// colours are compared): on real video the attention alone is a pixel or more off at moving
    /// edges, which pairs colours across them. The confidence then becomes the geometric mean of
    /// the attention's (uniqueness and forward–backward agreement) and the alignment's match
    /// quality: each alone lets through matches the other rejects. Both judge blocks; each
    /// sample is then judged too, by its guide's agreement (`guideAgreement`).
    struct Reference {
        let index: Int
        let attention: CrossFrameAttention
        /// The reference's colours at half resolution, followed, when there is a guide, by the
        /// guide's and by the edit's local slope (`editSlope`).
        let pictures: PlanarImage
        let alignment: ImageAlignment?
        /// Blind, the share of the reference that matching finds matched against itself: what a
        /// frame showing the same can reach (`minimumCoverage`). 1 with a guide.
        var matchable: Float = 1

        init(index: Int, _ frame: AnalysedFrame) {
            self.index = index
            var configuration = CrossFrameAttention.Configuration()
            // The alignment refines below a sample; the attention's own sub-sample steps would be redone.
            configuration.subsampleSteps = frame.guide == nil
            configuration.motionPrior = DeflickerAnalysis.motionPrior
            attention = CrossFrameAttention(reference: frame.pyramid, configuration: configuration)
            pictures = frame.guide.map {
                PlanarImage(stacking: [frame.colour, $0, DeflickerAnalysis.editSlope(input: frame.colour, guide: $0)])
            } ?? frame.colour
            alignment = frame.guide.map { ImageAlignment(reference: $0) }
        }

        /// The correspondence from `frame` to this reference, on the latent grid (`factor` pixels
        /// per sample at full resolution, sample 0 at pixel `origin`).
        func correspondence(for frame: AnalysedFrame, factor: Int, origin: Float) -> CorrespondenceField {
            var field = attention.correspondence(for: frame.pyramid)
            if let alignment, let guide = frame.guide {
                let pooled = ImageAlignment.pooledGeometry(factor: factor, origin: origin)
                let quality = alignment.refine(&field, frame: guide, factor: pooled.factor, origin: pooled.origin, measuringMatch: true)
                field.confidence = zip(field.confidence, quality).map { ($0 * $1).squareRoot() }
            }
            return field
        }
    }

    /// Blind, frames are matched on their latent's detail: each channel less its Gaussian blur
    /// of this σ (latent samples). A gain field smooth over two of the grid's cells (the finest
    /// the gain model represents: 8 samples at k = 8) keeps under a seventh of its amplitude
    /// there, and an offset none; the latent's own band (up to ¼ cycle a sample) keeps about
    /// half. On the whole latent the flicker's blobs are the strongest structure a flat scene
    /// has (a table, a wall, paper), and the attention matched them: on a static camera under
    /// local flicker, the matches lay 6 to 9 samples from where they belonged.
    static let detailScale: Float = 0.7
    /// The local contrast (rms of a descriptor's entries, relative to the frame's mean level)
    /// below which a neighbourhood of that detail counts as flat (`FeatureLevel`'s
    /// `contrastFloor`): about the threshold of visible contrast. Higher, flat scenes hold better
    /// (a static table under local flicker: 32.7 dB at 0.004, 37.2 at 0.0075, 39.2 at 0.015) but
    /// low-contrast handheld footage matches too weakly and every frame becomes a reference
    /// (the corpus's phone clip, global jitter: 35.6, 36.4, 34.6 dB; before, 36.7).
    static let contrastThreshold: Float = 0.0075
    /// The attention's motion prior, guided or blind, ten times the default (`edit`'s): a
    /// Gaussian of about one sample's width at each level, against the default's three. Blind,
    /// flat neighbourhoods score near 0, and it is what holds them where the content around them
    /// goes. Guided, a flat surface's descriptors all look alike, and a dark object coming into
    /// the frame shifts them all (they are centred on the frame's mean): with the default prior,
    /// the corpus's static camera (`motion.mov`) matched its table 5 to 20 latent samples off once
    /// a pen came in (16.7 at frame 56, against 2.05 with this one), and read the flicker of the
    /// wrong places. A frame and its reference are near in time, where most content moves
    /// little; what moves far is textured enough to outscore the prior.
    static let motionPrior: Float = 0.01

    /// The Gaussian of σ = `detailScale`, to ±3σ, summing to 1.
    static let detailBlur: [Float] = {
        let sigma = detailScale, radius = Int((3 * sigma).rounded(.up))
        let taps = (-radius...radius).map { exp(-Float($0 * $0) / (2 * sigma * sigma)) }
        let total = taps.reduce(0, +)
        return taps.map { $0 / total }
    }()

    /// `latent` less its blur (`detailBlur`), channel by channel.
    static func gainInvariant(_ latent: PlanarImage) -> PlanarImage {
        latent - latent.filtered(rows: detailBlur, columns: detailBlur)
    }

    /// The mean of the latent's colour channels.
    static func meanLevel(_ latent: PlanarImage) -> Float {
        let n = latent.planeSize * LatentEncoder.colourChannels
        return Float(latent.values[..<n].reduce(0.0) { $0 + Double($1) } / Double(max(n, 1)))
    }

    /// A cut: the frame's thumbnail does not correlate with the previous one's. Blind, the
    /// detail's thumbnails must not correlate either: flicker in space decorrelates a flat
    /// scene's whole thumbnails (the blobs are most of what it shows) but not its detail; motion
    /// decorrelates fine detail but not the whole; a new shot changes both.
    ///
    /// Two frames that show nothing (a clear sky, fog, a wall, a grey card: their thumbnails'
    /// `contrast` under one 8-bit level) have nothing a cut could change: what is left of them
    /// once standardised is grain, which correlates with nothing, and every frame of such a shot
    /// was taken for a new one, its flicker left in. Between two such frames there is no cut;
    /// from a picture to such a frame, or back, there is (the tone of one must not be averaged
    /// with the other's).
    static func isCut(from previous: (whole: Thumbnail, detail: Thumbnail?), to next: (whole: Thumbnail, detail: Thumbnail?)) -> Bool {
        guard max(previous.whole.contrast, next.whole.contrast) >= Self.minimumContrast,
              correlation(previous.whole.values, next.whole.values) < cutCorrelation else { return false }
        guard let a = previous.detail, let b = next.detail else { return true }
        return correlation(a.values, b.values) < cutCorrelation
    }

    /// A frame's small standardised luma picture (see `thumbnail`), and how much it varied
    /// before it was standardised.
    struct Thumbnail: Sendable {
        var values: [Float]
        /// The standard deviation of its luma, in the picture's units (1 = white): 0.03 and more
        /// on the corpus's real footage (a static camera on a table, a dim tour); 0.0002 for
        /// grain on a flat colour.
        var contrast: Float
    }

    /// See `isCut`: one 8-bit level.
    static let minimumContrast: Float = 1 / 255

    /// Each channel scaled to zero mean and unit variance over the frame: a global gain, offset or
    /// colour cast changes nothing. (Blind, the thumbnail that finds cuts is made of it.)
    static func illuminationRobust(_ latent: PlanarImage) -> PlanarImage {
        var out = latent
        let n = latent.planeSize
        out.withUnsafeMutableBufferPointer { p in
            for c in 0..<latent.channels {
                let plane = p.baseAddress! + c * n
                var sum = 0.0, squares = 0.0
                for i in 0..<n { sum += Double(plane[i]); squares += Double(plane[i]) * Double(plane[i]) }
                // The variance from sums can come out a rounding error below zero on a flat plane (a
                // white frame), where its square root would be NaN.
                let mean = sum / Double(n), sd = max(max(squares / Double(n) - mean * mean, 0).squareRoot(), 1e-6)
                for i in 0..<n { plane[i] = Float((Double(plane[i]) - mean) / sd) }
            }
        }
        return out
    }

    /// The luma of the features' colour channels, 2×2 pooled, standardised: consecutive frames of
    /// one shot correlate highly however the light flickers; across a cut they do not.
    static func thumbnail(_ features: PlanarImage) -> Thumbnail {
        let colour = features.channels(0..<3)
        let pooled = colour.width >= 4 && colour.height >= 4 ? colour.averagePooled2() : colour
        let n = pooled.planeSize, v = pooled.values
        var luma = (0..<n).map { 0.2126 * v[$0] + 0.7152 * v[n + $0] + 0.0722 * v[2 * n + $0] }
        let mean = luma.reduce(0, +) / Float(n)
        let variance = luma.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(n)
        let sd = max(variance.squareRoot(), 1e-6)
        for i in 0..<n { luma[i] = (luma[i] - mean) / sd }
        return Thumbnail(values: luma, contrast: variance.squareRoot())
    }

    static func correlation(_ a: [Float], _ b: [Float]) -> Float {
        guard a.count == b.count, !a.isEmpty else { return 0 }
        var s: Float = 0
        for i in 0..<a.count { s += a[i] * b[i] }
        return s / Float(a.count)
    }

    /// The frame's appearance against the reference where the two are not matched but not cut
    /// either, as a link: colours compared where they lie, every sample trusted alike, as a
    /// histogram-based deflicker (FFmpeg's) compares every frame. Quantile matching is what makes
    /// that hold where the picture moves: it compares the two frames' distributions of colour,
    /// which a slow motion hardly changes. Before, such a frame began a shot of its own, with no
    /// frame to agree with, and kept its flicker: on a pan over a colour wheel, blind, every frame
    /// (evaluation's harness: 28.1 → 33.6 dB, brightness flicker above the truth's 7.7 → 1.3
    /// levels, FFmpeg's `deflicker` 28.8 dB and 2.4); 49 other cases of four sets did not move.
    func wholeFrameLink(_ colour: PlanarImage, reference: Reference, field: CorrespondenceField, stride: Int,
                        samplesPerCell: Int) -> FrameAppearance {
        let w = field.width, n = w * field.height
        let still = CorrespondenceField(width: w, height: field.height, x: (0..<n).map { Float($0 % w) }, y: (0..<n).map { Float($0 / w) },
                                        confidence: [Float](repeating: 1, count: n))
        let carried = carry(reference.pictures, along: still, stride: stride).0.channels(0..<3)
        return FrameAppearance.fit(frame: colour, reference: carried, confidence: [Float](repeating: 1, count: colour.planeSize),
                                   samplesPerCell: samplesPerCell, field: still, grid: grid, clippedAsValues: true)
    }

    /// The reference's half-resolution pictures (any number of planes) carried to every
    /// `stride`-th sample of the frame's half-resolution grid (as `subsampled` takes them), with
    /// the match's confidence there. Nearest sample, not interpolation: an interpolated sample is
    /// a local blur, which lowers the bright tones and raises the dark ones wherever the picture
    /// has fine texture, and that would read as a change of tone. A nearest sample keeps the
    /// reference's distribution of values; its misplacement of up to half a sample is only noise.
    func carry(_ pictures: PlanarImage, along field: CorrespondenceField, stride: Int = 1) -> (PlanarImage, [Float]) {
        let w = pictures.width, h = pictures.height, plane = w * h, planes = pictures.channels
        let ow = w / stride, oh = h / stride, outPlane = ow * oh
        var out = PlanarImage(uninitializedChannels: planes, height: oh, width: ow)
        var confidence = [Float](repeating: 0, count: outPlane)
        let k = Float(grid.factor), origin = grid.origin
        pictures.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in confidence.withUnsafeMutableBufferPointer { conf in
            let s = src.baseAddress!, d = dst.baseAddress!, cp = conf.baseAddress!
            parallelChunks(oh, minimumChunk: 8) { rows in
                for oy in rows {
                    for ox in 0..<ow {
                        let px = 2 * Float(ox * stride) + 0.5, py = 2 * Float(oy * stride) + 0.5
                        let (dx, dy, c) = WarpingErrorMeter.displacement(field, px, py, factor: k, origin: origin)
                        let sx = Int(min(max((px + dx - 0.5) / 2, 0), Float(w - 1)).rounded())
                        let sy = Int(min(max((py + dy - 0.5) / 2, 0), Float(h - 1)).rounded())
                        let i = oy * ow + ox, j = sy * w + sx
                        cp[i] = c
                        for p in 0..<planes { d[p &* outPlane &+ i] = s[p &* plane &+ j] }
                    }
                }
            }
        } } }
        return (out, confidence)
    }
}

/// The second pass: each frame mapped to the consensus appearance.
///
/// The level, with a guide. A frame's curves map it to its shot's first reference, composed
/// across every link between references on the way, and the tone consensus agrees over a window
/// of ±`window` frames. Both let the level wander on a long clip: the links' errors add up, and
/// what the flicker did to a window's frames on average stays (on the 280-frame cockatoo with a
/// random gamma and offset per frame, the output's 31-frame mean luma wandered by 8 levels of
/// 255). The guide, unprocessed, has no flicker, and each frame is compared with its own guide
/// pixel for pixel, with no correspondence and no link (`ToneRelation`):
///   E_s   the edit's tone for scene s (cut to cut): the mean over all the scene's frames of each
///         frame's value at each value of its guide. The flicker is new in every frame and
///         averages out over the scene; the edit, the same for the whole scene, stays.
///   H_f   the same for frame f once mapped to the reference, held over the window (frames so
///         mapped carry no flicker of their own), and taken on through the tone consensus and
///         the gain field: what the correction alone makes of each guide value.
/// Their mean difference over the frame (`ToneRelation.offset`) is how far the correction's
/// level lies from the edit's there. Less its mean over the scene, it is added to the frame:
/// the anchor takes away how the level wanders within the scene, and nothing adds up along the
/// chain, however long the scene. Where the level lies over the whole scene stays the
/// consensus's: the anchor reads some edits less well than the consensus
/// does (a pencil sketch's strokes, mixed with paper that the flicker clips), and its error
/// there is mostly a constant, which this leaves out. An offset, one number per channel: the
/// consensus keeps the tone's shape and its frame-to-frame precision, and an error in the
/// anchor is not magnified in the highlights of a dark frame, as a gain's would be.
///
/// The level, without a guide: the correction's own slow part is taken back out (`drift(at:)`),
/// so that the output's slow level follows the input's.
///
/// Last, with a guide, each corrected frame's tone against its guide is brought to its window's,
/// as far as the difference is the correction's error and not the picture's (`ToneWindow`).
public final class DeflickerPlan {
    /// Frames on each side whose curves make a frame's tone consensus (about a second of video).
    public static let window = 15
    let store: RecordStore
    /// The appearance grid on the analysed frame, and on the full-size frame the plan applies to.
    public let grid: AppearanceGrid, outputGrid: AppearanceGrid
    /// Each reference's consensus gain, read when its first frame comes.
    let gains: ReferenceGains
    private var correction: (reference: Int, ConsensusCorrection)?
    /// With a guide, what each pixel showed when last seen unclipped (`ClippedMemory`).
    private var clippedMemory: ClippedMemory?
    /// With a guide, the tones of the frames before against their guides (`ToneWindow`).
    private var toneWindow = ToneWindow()
    /// With a guide, the frames before where the guide holds still (`StillWindow`).
    private var stillWindow = StillWindow()
    public let scenes: [DeflickerAnalysis.Scene]
    let shotStarts: [Int]
    public let cuts: [Int]
    public var frameCount: Int { lumas.count }
    /// Every frame's mean luma (BT.709, in [0, 1]) as the analysis saw it: a frame given to
    /// `apply` must show the same, or it is not the frame the plan was made for.
    public let lumas: [Float]
    /// With a guide, each scene's edit tone E_s (the first scene's, then one after each cut);
    /// empty without one.
    let editTones: [ToneRelation]
    /// Whether the analysis had a guide.
    public var guided: Bool { !editTones.isEmpty }
    /// The reference the user chose for the whole video (`--reference`), or nil for references
    /// found as the video goes.
    public let fixedReference: Int?
    /// The analysed size divides the frame's by this.
    let scale: Int
    /// Curves (the input's, whether each channel clipped at white and at black) and tone against
    /// the guide once mapped to the reference, of the frames around the last one applied, by index.
    private var toneCache: [Int: (input: [ToneCurve], clippedAtWhite: [Bool], clippedAtBlack: [Bool], shot: ToneRelation, scene: Int)] = [:]
    /// Each frame's consensus curves, around the last frame applied.
    private var consensusCache: [Int: [ToneCurve]] = [:]
    /// Each reference's gain field's mean, by reference.
    private var fieldMeans: [Int: [Float]] = [:]
    /// The anchor's offsets, less their scene's mean, of the frames of the current scene still
    /// to come (`drift(at:)`).
    private var drifts: [Int: [Float]] = [:]

    /// The size of the frames the plan applies to.
    public let width: Int, height: Int

    init(width: Int, height: Int, store: RecordStore, grid: AppearanceGrid, scale: Int, gains: ReferenceGains,
         scenes: [DeflickerAnalysis.Scene], shotStarts: [Int], cuts: [Int], lumas: [Float], editTones: [ToneRelation],
         fixedReference: Int?) {
        self.fixedReference = fixedReference
        self.width = width
        self.height = height
        self.store = store
        self.grid = grid
        self.scale = scale
        outputGrid = grid.scaled(by: scale)
        self.gains = gains
        self.scenes = scenes
        self.shotStarts = shotStarts
        self.cuts = cuts
        self.lumas = lumas
        self.editTones = editTones
    }

    /// A frame that is not the one the plan was made for: past the analysed video's end, or with
    /// another picture (its mean luma differs from the analysis's by more than `lumaTolerance`).
    public struct OtherFrame: Error, Sendable {
        public let index: Int
        /// The analysed video's length; and, for a frame within it, both mean lumas (8-bit).
        public let frameCount: Int
        public let analysed: Float?, given: Float?
    }

    /// Half an 8-bit level: a frame decoded again reads the same to the last bit; one from another
    /// video (or another decode of it) almost never stays within this on every frame.
    public static let lumaTolerance: Float = 0.5 / 255

    /// A frame's record: its appearance, its tone against the guide once mapped to the reference
    /// (empty without a guide), its reference's number.
    static func record(_ appearance: FrameAppearance, shotTone: ToneRelation, scene: Int) -> [Float] {
        appearance.record + shotTone.values + shotTone.weights + [Float(scene)]
    }

    static func recordLength(_ grid: AppearanceGrid) -> Int {
        FrameAppearance.recordLength(grid) + 6 * ToneRelation.levels + 1
    }

    /// The appearance recorded for frame `index` in the first pass, its tone against the guide
    /// once mapped to the reference, and its reference's number.
    public func appearance(of index: Int) throws -> (appearance: FrameAppearance, shotTone: ToneRelation, scene: Int) {
        let record = try store.read(index)
        let tone = FrameAppearance.recordLength(grid), n = 3 * ToneRelation.levels
        let shotTone = ToneRelation(values: Array(record[tone..<(tone + n)]), weights: Array(record[(tone + n)..<(tone + 2 * n)]))
        // Written as a whole number below the scenes' count; anything else is a damaged file.
        guard let scene = Int(exactly: record.last!), scenes.indices.contains(scene) else {
            throw MediaError(.invalidArgument, path: store.place, "is cut short or damaged (frame \(index)'s record names no reference)")
        }
        return (FrameAppearance(record: Array(record[..<tone]), grid: grid), shotTone, scene)
    }

    /// Frame i's consensus curves (`CurveConsensus.consensus` over its window within its shot).
    private func consensus(at i: Int) throws -> [ToneCurve] {
        if let known = consensusCache[i] { return known }
        let (lower, upper) = try window(around: i)
        var window: [[ToneCurve]] = [], white: [[Bool]] = [], black: [[Bool]] = []
        for j in lower...upper {
            let record = try toneRecord(j)
            window.append(record.input)
            white.append(record.clippedAtWhite)
            black.append(record.clippedAtBlack)
        }
        let consensus = CurveConsensus.consensus(of: window, clippedAtWhite: white, clippedAtBlack: black)
        consensusCache[i] = consensus
        return consensus
    }

    /// The frames whose curves make frame i's consensus: within `window` of it, in its shot.
    private func window(around i: Int) throws -> (lower: Int, upper: Int) {
        let shot = shotStarts.lastIndex(where: { $0 <= i }) ?? 0
        return (max(i - Self.window, shotStarts[shot]), min(i + Self.window, (shot + 1 < shotStarts.count ? shotStarts[shot + 1] : frameCount) - 1))
    }

    /// With a guide, the offset per channel that brings what frame i's correction makes of the
    /// guide's values (its consensus curves' inverse, then the reference's gain field on average
    /// over the frame) to the edit's tone: the anchor.
    private func anchor(at i: Int) throws -> [Float] {
        let reference = try toneRecord(i).scene
        if fieldMeans[reference] == nil { fieldMeans[reference] = ConsensusCorrection(gain: try gains.gain(of: reference)).meanGain }
        guard guided else {
            return try toneRecord(i).shot.offset(through: try consensus(at: i), field: fieldMeans[reference]!, to: .identity,
                                                 headroomOf: .corrected)
        }
        let held = try heldTone(at: i)
        let edit = editTones[cuts.lastIndex(where: { $0 <= i }).map { $0 + 1 } ?? 0]
        return held.offset(through: try consensus(at: i), field: fieldMeans[reference]!, to: edit)
    }

    /// H_f: the tone against the guide of frame i's window, its frames mapped to the reference.
    private func heldTone(at i: Int) throws -> ToneRelation {
        let (lower, upper) = try window(around: i)
        return ToneRelation.robustMean(try (lower...upper).map { try toneRecord($0).shot })
    }

    /// The parts of frame i's record that the tone needs, read once while they are in use.
    private func toneRecord(_ i: Int) throws -> (input: [ToneCurve], clippedAtWhite: [Bool], clippedAtBlack: [Bool], shot: ToneRelation, scene: Int) {
        if let known = toneCache[i] { return known }
        let record = try appearance(of: i)
        let a = record.appearance
        toneCache[i] = (a.curves, (0..<3).map(a.clipsWhite), (0..<3).map(a.clipsBlack), record.shotTone, record.scene)
        return toneCache[i]!
    }

    /// The offset added to frame `index`. Computed for the whole scene (cut to cut) when its
    /// first frame comes, as three numbers per frame, each given once.
    ///
    /// With a guide, the anchor's offset less its mean over the scene: where the consensus's own
    /// level lies, the flicker averaged over the whole scene, is kept, and the anchor only takes
    /// away how it wanders. (The anchor's own error on an edit it reads poorly, a pencil sketch's
    /// strokes mixed with clipped paper, is then mostly a constant, and goes with it.)
    ///
    /// Without one, nothing says where the original's level lies, but the correction itself
    /// says what it does to each frame: the mean change from the frame's values to their
    /// corrected ones (its `shot` tone, through the consensus, against the identity; levels
    /// whose corrected value is above the headroom, which the flicker clips in some frames and
    /// not in others, left out). The consensus takes away what changes within its ±`window`
    /// frames; what its correction does more slowly than that is the fits' own wander (a hand
    /// moving over the table, a bird turning, changes what the curves pair), not flicker. So
    /// the frame gets the opposite of the correction's mean over the same window, taken twice
    /// (a triangle over ±2 `window`, whose ends weigh nothing, so that no frame coming into it
    /// steps the level): the output's slow level follows the input's, and the flicker averages
    /// out of it over more frames than the consensus's window alone. (`scripts/eval-long`,
    /// blind, level drift: the static camera 7.23 → 6.15, FFmpeg's `deflicker` 7.21; the
    /// cockatoo 8.09 → 6.63, FFmpeg's 7.27; brightness flicker unchanged. On 48-frame clips,
    /// which the triangle spans almost whole, it is the input's level against the consensus's,
    /// both over about as many frames: the evaluation's cases −0.1 to −0.3 dB on average, ±1.5
    /// case by case.)
    private func drift(at index: Int) throws -> [Float] {
        if let known = drifts.removeValue(forKey: index) { return known }
        let first = cuts.last(where: { $0 <= index }) ?? 0, last = (cuts.first(where: { $0 > index }) ?? frameCount) - 1
        var offsets: [[Float]] = []
        for i in first...last {
            offsets.append(try anchor(at: i))
            toneCache = toneCache.filter { $0.key >= i - Self.window }
            consensusCache = consensusCache.filter { $0.key >= i }
        }
        let levels: [[Float]]
        if guided {
            let mean = (0..<3).map { c in offsets.reduce(0.0) { $0 + Double($1[c]) } / Double(offsets.count) }
            levels = offsets.map { offset in (0..<3).map { offset[$0] - Float(mean[$0]) } }
        } else {
            levels = Self.movingMean(Self.movingMean(offsets))
        }
        for (k, level) in levels.enumerated() where first + k > index { drifts[first + k] = level }
        return levels[index - first]
    }

    /// Each frame's values averaged over the frames within ±`window` of it (fewer at the ends).
    static func movingMean(_ values: [[Float]]) -> [[Float]] {
        values.indices.map { t in
            let lower = max(t - window, 0), upper = min(t + window, values.count - 1)
            return (0..<3).map { c in Float((lower...upper).reduce(0.0) { $0 + Double(values[$1][c]) } / Double(upper - lower + 1)) }
        }
    }

    /// Frame `index` (counted from 0 over the whole video) made consistent. `guide`, with a
    /// guided plan: the frame's guide at its size (`ConsensusCorrection.apply` takes what clipping
    /// lost from it, and from what the frames before showed where it shows the same). Frames come
    /// in order; a run that starts past a shot's first frame gives the frames of
    /// `recalled(before:)` first.
    public func apply(to frame: PlanarImage, index: Int, guide: (() throws -> PlanarImage)? = nil) throws -> PlanarImage {
        guard index < frameCount else { throw OtherFrame(index: index, frameCount: frameCount, analysed: nil, given: nil) }
        let luma = Float(FlickerAnalyzer.meanLuma(frame))
        guard abs(luma - lumas[index]) <= Self.lumaTolerance else {
            throw OtherFrame(index: index, frameCount: frameCount, analysed: lumas[index] * 255, given: luma * 255)
        }
        let (current, _, scene) = try appearance(of: index)
        let offset = try drift(at: index)
        let consensus = try consensus(at: index)
        var guideImage: PlanarImage?, held: ToneRelation?, memory: ClippedMemory.Use?
        if guided, let guide {
            // Every frame's guide: where the frame is not clipped it is remembered
            // (`ClippedMemory`), for the frames after it that are.
            guideImage = try guide()
            held = try heldTone(at: index)
            if clippedMemory?.count != frame.count { clippedMemory = ClippedMemory(count: frame.count) }
            memory = ClippedMemory.Use(memory: clippedMemory!, index: Int32(index), oldest: Int32(try window(around: index).lower))
        }
        toneCache = toneCache.filter { $0.key >= index - Self.window }
        consensusCache = consensusCache.filter { $0.key >= index }
        if correction?.reference != scene { correction = (scene, ConsensusCorrection(gain: try gains.gain(of: scene))) }
        var output = correction!.1.apply(to: frame, appearance: current, consensus: consensus, offset: offset, grid: outputGrid,
                                         guide: guideImage, held: held, memory: memory)
        if let guideImage {
            // Measured at the analysis's size; the halves are squares of 2 × 2 cells.
            let lower = try window(around: index).lower
            let tone = toneWindow.steady(&output, guide: guideImage, index: index, lower: lower, stride: scale,
                                         block: 2 * AppearanceGrid.cell * outputGrid.factor)
            // At every other pixel of the analysis's size: a quarter of the memory and the work,
            // the same cells.
            stillWindow.steady(&output, guide: guideImage, tone: tone, index: index, lower: lower, stride: 2 * scale)
        }
        return output
    }

    /// The frames before `start` that a guided run starting there must have seen first: those
    /// of its window in its shot, which its still pixels are brought to as `ToneWindow` made them
    /// (`StillWindow`); the window's of the first of them, whose tones theirs were brought to
    /// (`ToneWindow`); and that one's window's, whose values their clipped ones may take
    /// (`ClippedMemory`). Given to `apply` in order, output unused, they make the run from
    /// `start` the whole run's, frame for frame.
    public func recalled(before start: Int) throws -> Range<Int> {
        guard guided, start > 0, start < frameCount else { return 0..<0 }
        return try window(around: window(around: window(around: start).lower).lower).lower..<start
    }
}

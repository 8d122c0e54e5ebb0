import Foundation
import Tensor

/// What the propagator needs of the latent: features on a grid `factor` times coarser than the
/// image, whose sample 0 sits at pixel `origin`.
public protocol FeatureEncoder: Sendable {
    var factor: Int { get }
    var origin: Float { get }
    func features(_ image: PlanarImage) -> PlanarImage
}

/// A keyframe to be loaded when it is needed: its index, and how to read it.
public struct KeyframeSource {
    public var index: Int
    public var load: () throws -> Keyframe

    public init(index: Int, load: @escaping () throws -> Keyframe) {
        self.index = index
        self.load = load
    }
}

/// A keyframe: the frame as it is in the video, and as the user edited it.
public struct Keyframe: Sendable {
    public var index: Int
    public var original: PlanarImage
    public var edited: PlanarImage
    /// Bits per component of the edited image's file: its rounding is noise that is not carried
    /// to other frames (`EditPropagator.carriedEdit`).
    public var bits: Int

    public init(index: Int, original: PlanarImage, edited: PlanarImage, bits: Int = 8) {
        self.index = index
        self.original = original
        self.edited = edited
        self.bits = bits
    }
}

/// Propagates the edits made on keyframes to any frame (DESIGN.md, "Editors: edit").
///
/// Each keyframe's edit is propagated on its own (`KeyframeEdit`). A frame before the first
/// keyframe or after the last takes that keyframe's; a frame between two takes both, the nearer
/// weighing more, linearly in time, so that the edit hands over from one keyframe to the next
/// without a jump, and is exactly each keyframe's own at the keyframe. Within that, each pixel
/// leans towards the keyframe it matches better (weight × match quality): what only the next
/// keyframe shows takes its edit, not a blend with the colour-only fallback of the other. A
/// frame is never matched against a keyframe beyond its neighbours, so a region cannot flip from
/// one keyframe's version to another's from frame to frame; and only those two are held, so
/// memory does not grow with the number of keyframes (one every few frames, as dense keyframes
/// from an image model come).
public final class EditPropagator: @unchecked Sendable {
    public let strength: Float
    let encoder: FeatureEncoder
    let configuration: CrossFrameAttention.Configuration
    /// Every keyframe, in frame order, loaded when a frame needs it.
    let sources: [KeyframeSource]
    /// The propagations of the keyframes the last frame used, by position in `sources`: at most
    /// two are held, whatever the number of keyframes.
    private var loaded: [Int: KeyframeEdit] = [:]
    let width: Int, height: Int

    /// Match quality below which the carried edit is not computed at all: it would change the
    /// output by less than 10⁻⁴ of the edit (a fortieth of an 8-bit level).
    static let negligibleConfidence: Float = 1e-4

    /// A keyframe's match of a frame starts from its match of the frames before (the
    /// correspondence from the last two, `KeyframeEdit.trackedStart`; the synthesis from the
    /// sources of the last, `PatchSynthesis.field`'s `previous`) within spans of this many
    /// frames, starting afresh at each multiple of it. A frame's edit then depends on the frames
    /// since its span began and on no earlier ones: a job that starts mid-span first follows
    /// those frames (`follow`; at most 31, matched but not edited or written), and its frames
    /// equal the whole run's. Measured for the synthesis on eight stylised and pencil-sketched
    /// cases of four real clips against a chain that never restarts: PSNR 0.02 dB lower, E_warp
    /// ratio 0.01 higher (restarting every 8 frames: 0.04 and 0.03).
    public static let historySpan = 32

    /// The first frame a job starting at `first` must `follow` for its frames to equal the
    /// whole run's.
    public static func history(before first: Int) -> Range<Int> { (first - first % historySpan)..<first }

    /// Keyframes already in memory.
    public convenience init(keyframes: [Keyframe], encoder: FeatureEncoder, strength: Float = 1,
                            configuration: CrossFrameAttention.Configuration = .init()) {
        precondition(!keyframes.isEmpty)
        let first = keyframes[0].original
        self.init(sources: keyframes.map { key in KeyframeSource(index: key.index) { key } }, width: first.width, height: first.height,
                  encoder: encoder, strength: strength, configuration: configuration)
    }

    /// Keyframes loaded as the frames come to need them, for frames `width` × `height`: frames
    /// in increasing order (as a stream gives them) hold two keyframes at a time.
    public init(sources: [KeyframeSource], width: Int, height: Int, encoder: FeatureEncoder, strength: Float = 1,
                configuration: CrossFrameAttention.Configuration = .init()) {
        precondition(!sources.isEmpty)
        self.width = width
        self.height = height
        self.strength = strength
        self.encoder = encoder
        self.configuration = configuration
        self.sources = sources.sorted { $0.index < $1.index }
    }

    /// How many keyframes' propagations are held now.
    public var keyframesHeld: Int { loaded.count }

    /// The keyframes (positions in `sources`) frame `index` takes its edit from, with their weights in time.
    func neighbours(of index: Int) -> [(position: Int, weight: Float)] {
        guard let next = sources.firstIndex(where: { $0.index >= index }) else { return [(sources.count - 1, 1)] }
        if next == 0 || sources[next].index == index { return [(next, 1)] }
        let a = sources[next - 1].index, b = sources[next].index
        let toward = Float(index - a) / Float(b - a)
        return [(next - 1, 1 - toward), (next, toward)]
    }

    /// The propagations of `positions`, loading what is missing and letting go of the rest.
    private func keyframes(_ positions: [Int]) throws -> [KeyframeEdit] {
        loaded = loaded.filter { positions.contains($0.key) }
        return try positions.map { position in
            if let edit = loaded[position] { return edit }
            let key = try sources[position].load()
            precondition(key.original.width == width && key.original.height == height && key.index == sources[position].index)
            let edit = BufferPool.shared.withoutRecycling { KeyframeEdit(key, encoder: encoder, configuration: configuration) }
            loaded[position] = edit
            return edit
        }
    }

    /// Sets up the keyframes frame `index` takes its edit from, before the stream starts: their
    /// set-up's full-size temporaries are then gone before decoded frames queue up beside them
    /// (at 1080p the job's peak memory 404 → 327 MB; the output is the same).
    public func prepare(for index: Int) throws {
        if strength == 0 { return }
        _ = try keyframes(neighbours(of: index).map(\.position))
    }

    /// Frame `index` seen but not edited: each keyframe's match follows it, as it would in a
    /// run that edits it (`history(before:)`).
    public func follow(_ frame: PlanarImage, index: Int) throws {
        precondition(frame.width == width && frame.height == height)
        if strength == 0 { return }
        _ = try matches(of: frame, index: index, keyframes: neighbours(of: index))
    }

    /// Frame `index` matched to each keyframe it takes its edit from (`neighbours(of:)`), the
    /// frame's latent and its detail's pyramid made once for both, and only if a match needs them.
    private func matches(of frame: PlanarImage, index: Int,
                         keyframes active: [(position: Int, weight: Float)]) throws -> [KeyframeEdit.Match] {
        var features: PlanarImage?
        let latent = { () -> PlanarImage in
            if let features { return features }
            let made = self.encoder.features(frame)
            features = made
            return made
        }
        var pyramid: DetailPrediction.Pyramid?
        let details = { () -> DetailPrediction.Pyramid in
            if let pyramid { return pyramid }
            let made = DetailPrediction.Pyramid(frame)
            pyramid = made
            return made
        }
        return try keyframes(active.map(\.position)).map { $0.match(frame, features: latent, details: details, index: index) }
    }

    /// Frame `index` (counted from 0 over the whole video), edited.
    public func apply(to frame: PlanarImage, index: Int) throws -> PlanarImage {
        var out = frame
        try apply(to: &out, index: index)
        return out
    }

    /// Frame `index` edited in place: each row is read, then written, by the same worker, and
    /// everything else the edit needs of the frame is taken before the rows (no second
    /// full-size image: 25 MB at 1080p).
    public func apply(to frame: inout PlanarImage, index: Int) throws {
        precondition(frame.width == width && frame.height == height)
        if strength == 0 { return }
        let active = neighbours(of: index)
        let matched = try matches(of: frame, index: index, keyframes: active)
        let w = width, n = width * height, s = strength
        // A keyframe's own frame is the keyframe as edited (its match above still runs, for the
        // frames after it): the carried edit lacks the rounding noise that `carriedEdit` takes
        // out of it. So that frame alone keeps the keyframe's rounding (±½ level of an 8-bit
        // file), its neighbours the colour part: with graded keyframes every other frame, that
        // rounding comes and goes, below what an 8-bit output shows. The frame given is taken
        // to be the keyframe's own (the command reads both from the same video).
        let own = active.count == 1 && sources[active[0].position].index == index ? matched[0].edit.ownEdit : nil
        frame.withUnsafeMutableBufferPointer { f in
            let fp = UnsafePointer(f.baseAddress!), op = f.baseAddress!
            parallelChunks(height, minimumChunk: 8) { rows in
                // Per keyframe: its edit (3 rows) and match quality (1 row).
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * w * active.count) { buffer in
                    let base = buffer.baseAddress!
                    for y in rows {
                        let line = y &* w
                        let red = fp + line, green = red + n, blue = green + n
                        if let own {
                            own.withUnsafeBufferPointer { d in
                                for c in 0..<3 {
                                    let at = c &* n &+ line
                                    for x in 0..<w { op[at &+ x] = Self.clamped(fp[at &+ x] + s * Float(d[at &+ x])) }
                                }
                            }
                            continue
                        }
                        for (k, match) in matched.enumerated() {
                            match.editRow(y, of: fp, into: base + k &* 4 &* w)
                        }
                        if active.count == 1 {
                            let d = base
                            for x in 0..<w {
                                op[line &+ x] = Self.clamped(red[x] + s * d[x])
                                op[n &+ line &+ x] = Self.clamped(green[x] + s * d[w &+ x])
                                op[2 &* n &+ line &+ x] = Self.clamped(blue[x] + s * d[2 &* w &+ x])
                            }
                        } else {
                            let a = base, b = base + 4 &* w, wa = active[0].weight, wb = active[1].weight
                            let floor = Self.negligibleConfidence
                            for x in 0..<w {
                                let qa = wa * max(a[3 &* w &+ x], floor), qb = wb * max(b[3 &* w &+ x], floor)
                                let ta = qa / (qa + qb), tb = 1 - ta
                                op[line &+ x] = Self.clamped(red[x] + s * (ta * a[x] + tb * b[x]))
                                op[n &+ line &+ x] = Self.clamped(green[x] + s * (ta * a[w &+ x] + tb * b[w &+ x]))
                                op[2 &* n &+ line &+ x] = Self.clamped(blue[x] + s * (ta * a[2 &* w &+ x] + tb * b[2 &* w &+ x]))
                            }
                        }
                    }
                }
            }
        }
    }

    @inline(__always)
    static func clamped(_ v: Float) -> Float { v > 0 ? (v < 1 ? v : 1) : 0 }
}

/// One keyframe's edit, propagated to any frame.
///
/// The edit δ = edited − original is split, as a linear latent direction is in Asyrrp, by where a
/// function of colour alone (`ColourTransform`, fitted on the keyframe) explains it:
/// - where it does (a grade, a tint), that colour part is applied to each frame's own colours:
///   exact under any motion, and it cannot flicker;
/// - everything else (strokes, texture, a painted label, and the whole edit wherever the colour
///   function fits it poorly) is carried from the keyframe along the cross-frame attention's
///   correspondence, refined on the pictures (`ImageAlignment`), at full resolution with
///   band-limited sampling (`Transport`). On matched content each frame shows that part of the
///   keyframe's edit itself, moved, however the motion's sub-pixel phase falls.
/// How far each pixel takes the carried part is how well its block matches the keyframe where it
/// points (`ImageAlignment.matchQuality`). Content the transport does not reach (uncovered,
/// new or changed) takes the edit of what looks like it in the keyframe (`PatchSynthesis`), as
/// far as that matches; what matches nothing gets the colour part, and where the keyframe's edit
/// is a function of its detail (a stylisation, a pencil sketch), that function of the frame's own
/// detail (`DetailPrediction`), so it looks edited too, with no hole or seam.
/// With m the carried share of the colour part (see `carriedEdit`), t the match quality, r the
/// residual δ − colour(original) and k its Wiener gain over the keyframe file's rounding, the
/// edit of a pixel is (1 − t(1 − m)) · colour(frame) + t · carried(k·r + (1 − m) · colour(original))
/// + (1 − t) · detail(frame) (and with the synthesis, below, its share too).
final class KeyframeEdit: @unchecked Sendable {
    let encoder: FeatureEncoder
    let colour: ColourTransform
    let attention: CrossFrameAttention
    /// What is carried of the edit (`carriedEdit`), as B-spline coefficients for `Transport`,
    /// four channels interleaved and padded (`Transport.paddedInterleaved4`).
    let edits: [Float]
    /// The same, as samples, for the synthesis's votes, four channels interleaved (a vote reads
    /// a pixel's four values together) as half-precision floats (steps of 2⁻¹¹ at most, an eighth
    /// of an 8-bit level: the votes' reads are scattered over the keyframe, and half the bytes is
    /// half the memory traffic); kept only where the synthesis runs (`PatchSynthesis.contributes`).
    let samples: [Float16]?
    /// The keyframe's edit δ = edited − original, three planes, for its own frame: as
    /// half-precision floats (within a sixteenth of an 8-bit level, so an 8-bit keyframe comes
    /// back exactly, a 16-bit one to a quarter of a 10-bit level), as the carried edit lacks its
    /// rounding noise (`carriedEdit`).
    let ownEdit: [Float16]
    /// Where the transport fails: the edit synthesised by appearance.
    let synthesis: PatchSynthesis
    /// What the colour part leaves of the edit, predicted from each frame's detail, for what
    /// neither the transport nor the synthesis reaches; nil where it predicts nothing.
    let detail: DetailPrediction?
    /// Per channel, how much of that prediction the synthesis leaves to each frame's own
    /// (`predictedShare(carried:predicted:synthesis:)`); 0 where there is none.
    let predictedShare: [Float]
    /// The keyframe's own picture, for the correspondence's last, pixel-level step.
    let alignment: ImageAlignment
    let width: Int, height: Int
    /// The synthesis's field for the last frame matched, and that frame's index.
    private var lastField: (index: Int, field: PatchSynthesis.Field)?
    /// The correspondences of the last two frames matched, the later last, each with the
    /// weights its refinement used (see `trackedStart`).
    private var recentFields: [(index: Int, field: CorrespondenceField, weights: [Float])] = []

    init(_ key: Keyframe, encoder: FeatureEncoder, configuration: CrossFrameAttention.Configuration) {
        width = key.original.width
        height = key.original.height
        self.encoder = encoder
        // Straight into half precision: no full-size Float temporaries (two, 22 MB at 720p).
        ownEdit = key.edited.withUnsafeBufferPointer { e in key.original.withUnsafeBufferPointer { o in
            precondition(e.count == o.count, "a keyframe's edited image must have its original's size")
            return [Float16](unsafeUninitializedCapacity: e.count) { d, count in
                for i in 0..<e.count { d[i] = Float16(e[i] - o[i]) }
                count = e.count
            }
        } }
        // The colour part and the prediction from detail are fitted together, in turns
        // (backfitting), each on what the other leaves: fitted first alone, the colour part takes
        // as a colour's edit what strokes on detailed content of that colour did (a blue spring's
        // dark outlines, darkening all blue), which a flat blue sky in a later frame then gets.
        func leftUnexplained(by part: PlanarImage) -> PlanarImage { key.edited.combined(with: key.original, part) { e, o, c in e - o - c } }
        var colour = ColourTransform(original: key.original, edited: key.edited)
        var colourPart = colour.delta(for: key.original)
        var unexplained = leftUnexplained(by: colourPart)
        // The keyframe's pyramid, made once for every turn's fit and prediction.
        let pyramid = DetailPrediction.Pyramid(key.original)
        var detail = DetailPrediction(original: key.original, unexplained: unexplained, pyramid: pyramid)
        var turn = 0, settled = false
        let firstIsLeastSquares = colour.isLeastSquares
        while let fitted = detail, turn < KeyframeEdit.jointRounds {
            turn += 1
            // Where the first fit found the edit no function of colour (a stylisation), the turns
            // take the colour part as a local average, as it did; the last is fitted in full, least
            // squares where what the prediction leaves is a function of colour (a grade with
            // sharpening), each from the last least-squares solution.
            let full = settled || turn == KeyframeEdit.jointRounds || firstIsLeastSquares
            let nextColour = ColourTransform(original: key.original, edited: key.edited.combined(with: fitted.predicted(key.original, pyramid: pyramid), -),
                                             start: colour.solution, leastSquares: full)
            let nextPart = nextColour.delta(for: key.original)
            let nextUnexplained = leftUnexplained(by: nextPart)
            guard let next = DetailPrediction(original: key.original, unexplained: nextUnexplained, pyramid: pyramid) else { break }
            let moved = nextPart.rmsDifference(from: colourPart)
            (colour, colourPart, unexplained, detail) = (nextColour, nextPart, nextUnexplained, next)
            if full { break }
            // Settled: the colour part moved by less than half an 8-bit level; one full turn more.
            settled = moved < 0.5 / 255
        }
        self.colour = colour
        self.detail = detail
        let carried = EditPropagator.carriedEdit(key, colour: colour, colourPart: colourPart)
        edits = Transport.paddedInterleaved4(carried.bSplineCoefficients())
        synthesis = PatchSynthesis(original: key.original, carried: carried, unexplained: unexplained)
        // Where the edit is predicted from detail too, the synthesis carries what that prediction
        // leaves of the keyframe's edit, as far as it tells lookalikes' edits apart, and each
        // frame's own prediction brings the rest: strokes drawn on the frame's own edges, not on
        // its lookalike's.
        // (Made straight into the samples, half precision and interleaved: at 1080p a copy of the
        // carried edit and an interleaved one in full precision took 66 MB more at the set-up's
        // peak.)
        var share: [Float] = [0, 0, 0], samples: [Float16]?
        if synthesis.contributes {
            let own = detail?.predicted(key.original, pyramid: pyramid)
            if let own { share = KeyframeEdit.predictedShare(carried: carried, predicted: own, synthesis: synthesis) }
            samples = Transport.interleavedHalf4(carried, less: own, times: share)
        }
        predictedShare = share
        self.samples = samples
        alignment = ImageAlignment(reference: key.original, followingSlope: true)
        // The alignment starts from the attention's answer pooled 2^l × 2^l (l = 2 at 720p), so the
        // attention stops one level finer than that: its finest levels would be averaged away
        // (and its sub-sample steps redone). One level below the alignment's keeps the
        // forward-backward check sharp enough: stopping at level l itself saved 16 core-ms a 720p
        // frame and lost 0.13 dB on the evaluation's pans; one finer saves 13 and loses 0.05 dB.
        let features = encoder.features(key.original)
        var configuration = configuration
        configuration.subsampleSteps = false
        configuration.finestLevel = max(alignment.startingLevel(fieldWidth: features.width, fieldHeight: features.height) - 1, 0)
        attention = CrossFrameAttention(reference: features, configuration: configuration)
    }

    /// At most this many turns of the joint fit of the colour part and the prediction from
    /// detail after the first (`init`): each costs a colour fit, a prediction and its fit of
    /// the keyframe. Real stylised and pencil keyframes mostly settle in fewer (against a limit
    /// of 5: the evaluation's and my 20 such cases within ±0.07 dB, the cockatoo's set-up as
    /// long); a colour that the keyframe shows only under strokes takes more
    /// (`aColourTheKeyframeShowedOnlyUnderStrokesIsPaperWhereFlat`).
    static let jointRounds = 12

    /// How far, per channel, the difference between two lookalikes' predictions from detail
    /// explains the difference between their edits: the least-squares α of
    /// e_p − e_q ≈ α (P_p − P_q) over the keyframe's pixels and their lookalikes'
    /// (`PatchSynthesis.lookalikes`), each pair weighed by its patch's predictability, within
    /// [0, 1]. The synthesis puts a frame's patch where its keyframe lookalike is; this is how
    /// far the two predictions' difference says what changes between them. (With α = 1 always:
    /// the evaluation's stylised cockatoo −0.18 dB against −0.09 with α fitted, its pencil
    /// sketch +0.15 against +0.08.)
    static func predictedShare(carried: PlanarImage, predicted: PlanarImage, synthesis: PatchSynthesis) -> [Float] {
        let w = carried.width, h = carried.height, n = w * h
        let gw = synthesis.gridWidth, gh = synthesis.gridHeight, block = 2 * synthesis.scale
        var products = [Double](repeating: 0, count: 3), squares = products
        carried.withUnsafeBufferPointer { e in predicted.withUnsafeBufferPointer { p in
            for v in 0..<gh { for u in 0..<gw {
                let g = v * gw + u, weight = Double(synthesis.predictability[g])
                guard weight > 0 else { continue }
                let ox = Int(synthesis.lookalikes.dx[g]) * block, oy = Int(synthesis.lookalikes.dy[g]) * block
                for y in (v * block)..<min((v + 1) * block, h) {
                    let qy = y + oy
                    guard qy >= 0, qy < h else { continue }
                    for x in (u * block)..<min((u + 1) * block, w) {
                        let qx = x + ox
                        guard qx >= 0, qx < w else { continue }
                        for c in 0..<3 {
                            let a = c * n + y * w + x, b = c * n + qy * w + qx
                            let de = Double(e[a] - e[b]), dp = Double(p[a] - p[b])
                            products[c] += weight * de * dp; squares[c] += weight * dp * dp
                        }
                    }
                }
            } }
        } }
        return (0..<3).map { c in squares[c] > 0 ? Float(min(max(products[c] / squares[c], 0), 1)) : 0 }
    }

    /// Frame `index`'s correspondence to the keyframe, ready to give its edit row by row;
    /// `features` gives the frame's (`encoder.features`), asked for only where the attention
    /// runs, and `details` its detail's pyramid, only where the keyframe's edit is predicted from
    /// detail (`DetailPrediction`). Frames come in increasing order: within a span (`EditPropagator.historySpan`) the
    /// correspondence starts from the last two frames' (`trackedStart`) and the synthesis from
    /// the last frame's sources.
    func match(_ frame: PlanarImage, features: () -> PlanarImage, details: () -> DetailPrediction.Pyramid, index: Int) -> Match {
        var field = trackedStart(for: index) ?? attention.correspondence(for: features())
        let weights = field.confidence
        field.confidence = alignment.refine(&field, frame: frame, factor: encoder.factor, origin: encoder.origin,
                                            measuringMatch: true, vouching: true)
        recentFields = [recentFields.last, (index, field, weights)].compactMap { $0 }
        var synthesised: PatchSynthesis.Field?
        if synthesis.contributes {
            let start = synthesis.start(from: field, factor: encoder.factor, origin: encoder.origin)
            if start.trust.contains(where: { $0 < 1 - EditPropagator.negligibleConfidence }) {
                let previous = lastField.flatMap { last in
                    last.index == index - 1 && index % EditPropagator.historySpan != 0 ? last.field : nil
                }
                synthesised = synthesis.field(for: frame, start: (start.dx, start.dy), trust: start.trust, previous: previous)
            }
        }
        lastField = synthesised.map { (index, $0) }
        return Match(edit: self, carrier: Transport.RowCarrier(field: field, width: width, height: height,
                                                               factor: encoder.factor, origin: encoder.origin),
                     synthesised: synthesised, pyramid: detail == nil ? nil : details())
    }

    /// Where frame `index`'s correspondence starts when frames `index` − 2 and `index` − 1 of the
    /// same span were matched: their fields, moved on at the same speed (each sample's position
    /// plus its change between them), with the alignment's weights what the pictures said of
    /// each block over the last frames: the mean of the last frame's match quality and the
    /// weight that frame's refinement gave the block. (The last quality alone fed the answer
    /// back into its own weights: on a frozen picture the field alternated between two answers,
    /// frame after frame, each one's quality weighing the refinement towards the other; a
    /// screen recording's pencil sketch changed by 0.18 levels a frame where its truth stood
    /// still. Relaxed by half, the feedback settles.) The alignment on the pictures then refines
    /// it as it refines the attention's answer. The attention, and the
    /// frame's latent it needs, are skipped: on real video a frame's neighbour is a better start
    /// than a global search (mean match quality 0.45 against 0.38 on the evaluation's cockatoo,
    /// frames 8–30), and the two are 13% of a graded 720p edit's work. The first two frames of a
    /// span start from the attention, so that a fast motion away from a keyframe (whose own
    /// field is the identity) is found. (Weights of 1 instead: content moving 24 px a frame lost
    /// the sticker of `aFastMotionAwayFromTheKeyframeIsFollowed`.)
    private func trackedStart(for index: Int) -> CorrespondenceField? {
        guard index % EditPropagator.historySpan >= 2, recentFields.count == 2,
              recentFields[0].index == index - 2, recentFields[1].index == index - 1 else { return nil }
        let before = recentFields[0].field
        var start = recentFields[1].field
        // Each block's weight: the mean of the match quality the last frame found and the weight
        // its refinement used, a moving average of the block's quality that halves every frame.
        start.confidence = zip(start.confidence, recentFields[1].weights).map { ($0 + $1) / 2 }
        // Held within the keyframe, as the attention's answers are: content that has left its
        // view is not followed out of it (a block read outside the picture takes the alignment's
        // and the carry's slow, clamped paths: unheld, they took back all the search saved).
        let right = Float(start.width - 1), bottom = Float(start.height - 1)
        for i in start.x.indices {
            start.x[i] = min(max(2 * start.x[i] - before.x[i], 0), right)
            start.y[i] = min(max(2 * start.y[i] - before.y[i], 0), bottom)
        }
        return start
    }

    struct Match {
        let edit: KeyframeEdit
        let carrier: Transport.RowCarrier
        /// The synthesis's field, where the transport does not reach everywhere.
        let synthesised: PatchSynthesis.Field?
        /// The frame's luma pyramid, where the keyframe's edit is predicted from detail.
        let pyramid: DetailPrediction.Pyramid?

        /// Row `y` of the edit for the frame at `frame` (3 planes of width × height): the edit per
        /// channel into out[0 ..< 3w], and into out[3w ..< 4w] how far to trust it against
        /// another keyframe's, each part of the edit by its share: what the transport and the
        /// synthesis carry of the keyframe's pixels, fully; what they bring of the colour part
        /// (their share m, where the colour part explains the edit at the source), as far as the
        /// keyframe's own colours decide its colour function at the pixel's colour
        /// (`ColourTransform`'s support g: a match to another colour is no match for the colour
        /// part); the colour part alone, as far as g and the function explains the keyframe's
        /// edit as a whole (`ColourTransform.explained`). With t and s as below:
        ///   t(1 − m) + s(1 − m′) + (t·m + s·m′)·g + (1 − t − s)·g·explained.
        /// So a graded keyframe that never showed a colour leaves it to one that did, however near.
        ///
        /// With t the transport's match quality and s the synthesis's, the transport takes t and
        /// the synthesis what is left of it, (1 − t)·s; each brings its own share m of the colour
        /// part (see `KeyframeEdit`), and the colour part fills the rest, with the detail's
        /// prediction (`DetailPrediction`) taking the share neither reaches, 1 − t − s, and α·s more,
        /// α the share of it the synthesis's samples leave to the frame (`predictedShare`). Where the synthesis
        /// found a better source than the transport's, t is at most the transport's own quality
        /// at the synthesis's patch scale (`PatchSynthesis.Field.transportCap`): a block that
        /// matches the background beside new content still says nothing of the content's style.
        func editRow(_ y: Int, of frame: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
            let w = edit.width, n = w * edit.height, size = edit.colour.size
            let carried = out, trust = out + 3 &* w, floor = EditPropagator.negligibleConfidence, explained = edit.colour.explained
            edit.edits.withUnsafeBufferPointer { r in
            edit.colour.lattice.withUnsafeBufferPointer { lattice in
                let table = lattice.baseAddress!
                carrier.withScratch { scratch in
                    // The carried edit: three planes and the colour part's share, a row's width
                    // apart; then the synthesised one likewise, and its quality.
                    let extra = pyramid == nil ? 0 : (3 + DetailPrediction.scratchRows) * w
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 14 * w + extra) { planes in
                        let p = planes.baseAddress!, q = p + 4 &* w, quality = q + 4 &* w, cap = quality + w, c = cap + w
                        carrier.carry4(row: y, of: r.baseAddress!, width: w, height: edit.height, into: p, channelStride: w,
                                       confidence: trust, skipBelow: EditPropagator.negligibleConfidence, scratch: scratch)
                        let line = y &* w
                        let red = frame + line, green = red + n, blue = green + n
                        ColourTransform.evaluateRow(red, green, blue, count: w, size: size, table: table, into: c)
                        // The detail's prediction, for what neither the transport nor the synthesis takes.
                        let predicted: UnsafeMutablePointer<Float>? = pyramid.map { pyramid in
                            let out = c + 4 &* w
                            edit.detail!.predictRow(y, red: red, green: green, blue: blue, pyramid: pyramid, into: out, scratch: out + 3 &* w)
                            return out
                        }
                        // The prediction's share, 1 − t − s (+ α·s), is taken while `trust` still holds t, and
                        // the prediction added after the main loop, which stays free of branches.
                        @inline(__always) func addPrediction() {
                            guard let predicted else { return }
                            for i in 0..<(3 &* w) { carried[i] += predicted[i] }
                        }
                        guard let synthesised, let samples = edit.samples else {
                            // The transport alone (s = 0 below).
                            if let predicted {
                                for x in 0..<w {
                                    let rest = 1 - trust[x]
                                    predicted[x] *= rest; predicted[w &+ x] *= rest; predicted[2 &* w &+ x] *= rest
                                }
                            }
                            for x in 0..<w {
                                let (dr, dg, db) = (c[4 &* x], c[4 &* x &+ 1], c[4 &* x &+ 2])
                                let t = trust[x], u = 1 - t * (1 - p[3 &* w &+ x])
                                carried[x] = u * dr + t * p[x]
                                carried[w &+ x] = u * dg + t * p[w &+ x]
                                carried[2 &* w &+ x] = u * db + t * p[2 &* w &+ x]
                                let m = p[3 &* w &+ x], g = c[4 &* x &+ 3]
                                trust[x] = max(t * (1 - m) + t * m * g + (1 - t) * g * explained, floor)
                            }
                            addPrediction()
                            return
                        }
                        samples.withUnsafeBufferPointer { samples in
                            edit.synthesis.synthesise(row: y, field: synthesised, carried: samples.baseAddress!, into: q,
                                                      quality: quality, cap: cap, skip: trust)
                        }
                        if let predicted {
                            let (a0, a1, a2) = (edit.predictedShare[0], edit.predictedShare[1], edit.predictedShare[2])
                            for x in 0..<w {
                                let t = min(trust[x], cap[x]), s = (1 - t) * quality[x], rest = max(1 - t - s, 0)
                                predicted[x] *= rest + a0 * s; predicted[w &+ x] *= rest + a1 * s; predicted[2 &* w &+ x] *= rest + a2 * s
                            }
                        }
                        for x in 0..<w {
                            let (dr, dg, db) = (c[4 &* x], c[4 &* x &+ 1], c[4 &* x &+ 2])
                            let t = min(trust[x], cap[x]), s = (1 - t) * quality[x]
                            let u = 1 - t * (1 - p[3 &* w &+ x]) - s * (1 - q[3 &* w &+ x])
                            carried[x] = u * dr + t * p[x] + s * q[x]
                            carried[w &+ x] = u * dg + t * p[w &+ x] + s * q[w &+ x]
                            carried[2 &* w &+ x] = u * db + t * p[2 &* w &+ x] + s * q[2 &* w &+ x]
                            let m = p[3 &* w &+ x], mq = q[3 &* w &+ x], g = c[4 &* x &+ 3]
                            trust[x] = max(t * (1 - m) + s * (1 - mq) + (t * m + s * mq) * g + (1 - t - s) * g * explained, floor)
                        }
                        addPrediction()
                    }
                }
            } }
        }
    }
}

extension EditPropagator {
    /// τ and the smoothing (binomial passes, σ = 2 px) of the colour part's share; see `carriedEdit`.
    static let tolerance: Float = 0.04, spread = 8
    /// The variance that rounding the edited keyframe to `bits` bits leaves in the residual,
    /// summed over the three channels: 3 × (1/(2^bits − 1))² / 12. Files of fewer than 8 bits
    /// (1-bit line art, a 4-bit palette) count as 8: their few levels are the picture itself, not
    /// the rounding of a smooth one (at 1 bit, N would swallow most of a thin stroke).
    static func roundingNoise(bits: Int) -> Float {
        let levels = Float((1 << min(max(bits, 8), 24)) - 1)
        return 0.25 / (levels * levels)
    }

    /// What is carried from a keyframe: the edit less the colour part where the colour part
    /// explains it, and that share m as a fourth plane. m = exp(−e/τ²), e the local mean of
    /// |δ − colour(original)|² plus how far the colour function, applied to the keyframe (smoothed
    /// by one binomial pass) moved half a pixel, departs from its colour part moved half a
    /// pixel: m is 1 where the colour function accounts for the edit and commutes with sub-pixel
    /// motion (a grade, a tint), so that part is applied to each frame's own colours, exact under
    /// any motion; 0 where it does not (strokes, texture, a painted label, posterised or line-art
    /// tones, whose steep curves would make every edge shimmer as its sub-pixel phase changes),
    /// so the whole edit is carried.
    /// Of the residual r = δ − colour(original), only what stands above the rounding of the
    /// edited keyframe's file (`Keyframe.bits`) is carried: r · max(1 − N/R, 0), R its local mean
    /// square and N the rounding's (a Wiener gain). A grade's residual is mostly that rounding,
    /// noise that, moved onto other frames, only added to their own (the evaluation's graded
    /// cases lost 0.5 to 3.4 dB to it); strokes, paint and texture stand far above it and are
    /// carried whole.
    /// `colourPart` is `colour.delta(for: key.original)`, which the caller needs too.
    static func carriedEdit(_ key: Keyframe, colour: ColourTransform, colourPart: PlanarImage) -> PlanarImage {
        let w = key.original.width, h = key.original.height, n = w * h, noise = roundingNoise(bits: key.bits)
        var shimmer = PlanarImage(channels: 1, height: h, width: w)
        // What a frame half a pixel on would get from the colour function, against the keyframe's
        // colour part moved half a pixel: where they differ, the function would shimmer. Measured
        // on the keyframe band-limited (one binomial pass), so that it is the shimmer the function
        // makes of well-sampled content (a posterised gradient), not the difference any curved
        // function shows at the camera's own hard edges, which the per-frame truth of a grade
        // shows too: measured there, the evaluation's grades carried their keyframe's edges and
        // lost 2.5 to 7.5 dB against it. (First, and on its own, so that its full-size temporaries
        // are gone before the next.)
        do {
            let smooth = key.original.binomialSmoothed()
            let movedDelta = colour.delta(for: halfPixelShifted(smooth))
            let difference = movedDelta.combined(with: halfPixelShifted(colour.delta(for: smooth)), -)
            difference.withUnsafeBufferPointer { d in shimmer.withUnsafeMutableBufferPointer { u in
                for ch in 0..<3 { for i in 0..<n { u[i] += d[ch &* n &+ i] * d[ch &* n &+ i] } }
            } }
        }
        var residual = PlanarImage(channels: 1, height: h, width: w)
        var carried = PlanarImage(uninitializedChannels: 4, height: h, width: w)
        key.edited.withUnsafeBufferPointer { e in key.original.withUnsafeBufferPointer { o in colourPart.withUnsafeBufferPointer { c in
            residual.withUnsafeMutableBufferPointer { u in
                for ch in 0..<3 { for i in 0..<n {
                    let r = e[ch &* n &+ i] - o[ch &* n &+ i] - c[ch &* n &+ i]
                    u[i] += r * r
                } }
            }
            for _ in 0..<spread { shimmer = shimmer.binomialSmoothed(); residual = residual.binomialSmoothed() }
            shimmer.withUnsafeBufferPointer { s in residual.withUnsafeBufferPointer { u in carried.withUnsafeMutableBufferPointer { v in
                for i in 0..<n {
                    let share = exp(-(s[i] + u[i]) / (tolerance * tolerance))
                    // The residual less what the keyframe's rounding alone would leave there
                    // (Wiener: as far as its local energy exceeds the rounding's).
                    let kept = max(1 - noise / max(u[i], .leastNormalMagnitude), 0)
                    for ch in 0..<3 {
                        let k = ch &* n &+ i, r = e[k] - o[k] - c[k]
                        v[k] = kept * r + (1 - share) * c[k]
                    }
                    v[3 &* n &+ i] = share
                }
            } } }
        } } }
        return carried
    }

    /// The image sampled half a pixel right and down, band-limited (cubic B-spline).
    /// Rows in parallel, and eight pixels at a time where all their taps lie inside the row:
    /// the 16 taps summed in the same order as pixel by pixel, so the same values.
    static func halfPixelShifted(_ image: PlanarImage) -> PlanarImage {
        let c = image.bSplineCoefficients(), w = image.width, h = image.height
        let k = cubicBSplineWeights(0.5)
        var out = PlanarImage(uninitializedChannels: image.channels, height: h, width: w)
        c.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in
            let s = src.baseAddress!, d = dst.baseAddress!
            parallelChunks(image.channels * h, minimumChunk: 8) { rows in
                for line in rows {
                    let ch = line / h, y = line % h
                    @inline(__always) func row(_ j: Int) -> UnsafePointer<Float> {
                        s + (ch &* h &+ wholeSampleMirroredIndex(y &+ j &- 1, count: h)) &* w
                    }
                    let rows = (row(0), row(1), row(2), row(3))
                    @inline(__always) func tapRow(_ j: Int) -> UnsafePointer<Float> {
                        j == 0 ? rows.0 : j == 1 ? rows.1 : j == 2 ? rows.2 : rows.3
                    }
                    let o = d + (ch &* h &+ y) &* w
                    @inline(__always) func one(_ x: Int) {
                        var v: Float = 0
                        for j in 0..<4 {
                            let r = tapRow(j)
                            for i in 0..<4 { v += k[j] * k[i] * r[wholeSampleMirroredIndex(x &+ i &- 1, count: w)] }
                        }
                        o[x] = v
                    }
                    // Pixel x reads x − 1 … x + 2: inside the row from x = 1 while x + 2 < w.
                    var x = 0
                    if w >= 4 { one(0); x = 1 }
                    while x &+ 8 &+ 2 <= w {
                        var v = SIMD8<Float>()
                        for j in 0..<4 {
                            let r = UnsafeRawPointer(tapRow(j) + (x &- 1))
                            for i in 0..<4 { v += SIMD8(repeating: k[j] * k[i]) * r.loadUnaligned(fromByteOffset: 4 &* i, as: SIMD8<Float>.self) }
                        }
                        UnsafeMutableRawPointer(o + x).storeBytes(of: v, as: SIMD8<Float>.self)
                        x &+= 8
                    }
                    while x < w { one(x); x &+= 1 }
                }
            }
        } }
        return out
    }
}

/// The alias-free latent is what the attention matches on: its colour and oriented-energy
/// channels, band-limited, so the correspondence moves exactly with sub-pixel motion.
extension AliasFreeCodec: FeatureEncoder {
    public func features(_ image: PlanarImage) -> PlanarImage { encode(image) }
}

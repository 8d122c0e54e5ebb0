import Foundation
import Tensor

/// The appearance a shot's frames agree on. Every frame's appearance is known relative to a
/// reference (`FrameAppearance`); averaged over the frames, those relations describe the
/// reference's own accident: if the reference came out too bright, every frame maps to it with a
/// gain above 1. The consensus is the inverse of that average, so a too-bright reference does not
/// make the output too bright. Tone curves and gain fields are agreed separately:
///   curves (`CurveConsensus`, over a window of frames around each frame, within its shot):
///     ḡ_c = (the window's consensus of curve_c, knot by knot)⁻¹. A window rather than the whole
///     shot, so that a slow change (a camera's exposure adapting, a sunset) is kept while flicker
///     is removed; robust statistics, so that frames whose tones were clipped (a frame made
///     brighter loses its highlights, and its curve says less than the truth) or whose fit failed
///     do not pull the consensus.
///   gain (`FieldConsensus`, per reference): n_c(y) = exp(−mean of log gain_c at reference position y)
/// The gain is averaged in the reference's coordinates (each frame's cells placed where they lie
/// in the reference), so spatial flicker that moves with the picture is averaged where it belongs;
/// the neighbouring references' frames join in, carried across the links between references.
public enum CurveConsensus {
    /// The consensus curves (ḡ_c before its inversion) of the curves of the frames in a window:
    /// knot by knot, their robust mean (`ToneCurve.robustMean`).
    ///
    /// A constant over the window reports the window's average light, not the frame's, where the
    /// light really changes (an exposure adapting, a shot's ends, where the window is one-sided).
    /// With a guide, the anchor (`DeflickerPlan`) brings each frame to the edit's tone against its
    /// own guide, which shows the real change without the flicker, so the consensus need not
    /// follow it; without one, nothing tells the change from the flicker. (It used to lean
    /// towards a robust local quadratic as far as the guide showed a trend, from before there
    /// was an anchor. Without that lean, 2026-12-04, guided: the evaluation's pans the same to
    /// 0.01 dB, the cockatoo −0.14 dB under global jitter, 17 static-camera and phone cases of my
    /// own +0.2 and +0.3 dB under global jitter with the E_warp ratio 1.12 → 1.10 and 1.07 → 1.04.)
    ///
    /// `clippedAtWhite[i][c]`, `clippedAtBlack[i][c]`: whether frame i of the window was clipped
    /// at white (at black) in channel c (`ToneCurve.robustMean`); none when empty.
    public static func consensus(of window: [[ToneCurve]], clippedAtWhite: [[Bool]] = [], clippedAtBlack: [[Bool]] = []) -> [ToneCurve] {
        (0..<3).map { c in
            ToneCurve.robustMean(window.map { $0[c] }, clippedAtWhite: clippedAtWhite.map { $0[c] },
                                 clippedAtBlack: clippedAtBlack.map { $0[c] })
        }
    }
}

/// Accumulates, for one reference, the log gain of every frame matched to it, at the reference
/// positions of the frame's cells; `gain` is the consensus correction n_c on the reference's grid.
/// The frames of neighbouring references join it through the links between references
/// (`spanningReferences`).
///
/// Every frame whose cell is matched (coverage above 0.2) counts alike there, however confident
/// its matches: what the consensus averages away is each frame's own flicker (5% rms on the
/// eval's local flicker), well above a fit's error (1.3%), so weighting the frames by their
/// coverage only made the average narrower. (On the eval's video, guided, local flicker:
/// 39.9 → 40.0 dB.)
///
/// Clipped highlights censor the gains: where a frame is clipped at white, its colour is lower
/// than the flicker made it, and its log gain to the reference (reference over frame) reads too
/// high: it is a bound that the true one lies below. Averaging such bounds darkens the consensus
/// (on the eval's pencil sketch, the white paper by 5 levels). So each frame's cells count as
/// observed or censored by the share of their samples that are clipped
/// (`FrameAppearance.clipped`), and the consensus is the mean of a normal censored at the
/// bounds, fitted by expectation–maximisation (`censoredMean`). Where nothing is clipped, that
/// is the plain mean. (On the eval's cases, guided, local flicker: pans 42.7 → 43.5 dB, video
/// 38.2 → 38.9, the pencil sketch's 34.9 → 36.6; global flicker 40.4 / 38.9 → 40.6 / 39.1.)
public struct FieldConsensus: Sendable {
    let grid: AppearanceGrid
    /// Per channel and cell: observed weight, Σ w z, Σ w z²; censored weight, Σ w z (its bounds).
    private var stats: [Float]
    static let statistics = 5

    public init(grid: AppearanceGrid) {
        self.grid = grid
        stats = [Float](repeating: 0, count: Self.statistics * 3 * grid.count)
    }

    /// Length of `sums` for a grid.
    public static func sumsLength(_ grid: AppearanceGrid) -> Int { statistics * 3 * grid.count }

    /// Index of statistic `k` for channel `c` at `cell`.
    @inline(__always)
    private func at(_ k: Int, _ c: Int, _ cell: Int) -> Int { (k * 3 + c) * grid.count + cell }

    /// Adds `weight` of an observation z of channel c at `cell`, the share `clipped` of it censored.
    private mutating func add(_ z: Float, weight: Float, clipped: Float, channel c: Int, cell: Int) {
        let observed = weight * (1 - clipped), censored = weight * clipped
        stats[at(0, c, cell)] += observed
        stats[at(1, c, cell)] += observed * z
        stats[at(2, c, cell)] += observed * z * z
        stats[at(3, c, cell)] += censored
        stats[at(4, c, cell)] += censored * z
    }

    public mutating func add(_ appearance: FrameAppearance) {
        let count = grid.count
        let gain = appearance.gain.values
        for cell in 0..<count {
            let coverage = appearance.coverage[cell]
            guard coverage > 0.2 else { continue }
            guard grid.contains(latentX: appearance.referenceX[cell], latentY: appearance.referenceY[cell]) else { continue }
            for (target, share) in grid.corners(latentX: appearance.referenceX[cell], latentY: appearance.referenceY[cell]) where share > 0 {
                for c in 0..<3 {
                    add(log(max(gain[c * count + cell], 1e-3)), weight: share,
                        clipped: appearance.clipped[c * count + cell], channel: c, cell: target)
                }
            }
        }
    }

    /// Each reference's consensus widened to its neighbours' frames: a reference matched by few
    /// frames (the camera moving on) would otherwise average few fields. Frames of the earlier
    /// references are carried forward, and of the later ones back, through the links (a
    /// reference's appearance relative to the previous one: where its cells lie there, and the
    /// gain between them), their weight shrinking by `linkShare` at each link (a link is itself a
    /// fit, and its error is shared by every frame carried across it; `FitRegularisation`) and by
    /// the square root of the link's coverage (the coverage itself about halved the weight at
    /// every link of real video; on the eval's video, guided, local flicker, with references
    /// every 1 to 2 frames: 39.8 → 40.1 dB; with them every 3, 39.3 either way).
    /// `reference(k)` gives reference k's own sums and its link to k − 1 (nil starts a shot,
    /// which nothing crosses), read one at a time; the forward pass's sums and the gains are kept
    /// in temporary files: memory does not grow with the number of references (on footage where
    /// every frame becomes one, the gains alone took 11 KB per 720p frame).
    static func spanningReferences(count: Int, grid: AppearanceGrid, linkShare: Float,
                                   reference: (Int) throws -> (own: FieldConsensus, link: FrameAppearance?)) throws -> ReferenceGains {
        let forwardSums = try RecordStore(recordLength: sumsLength(grid))
        var previous: FieldConsensus?
        for k in 0..<count {
            let (own, link) = try reference(k)
            var forward = own
            if let previous, let link { forward.addCarriedForward(previous, link: link, share: linkShare) }
            try forwardSums.append(forward.sums)
            previous = forward
        }
        let gains = try ReferenceGains(grid: grid)
        var next: (sums: FieldConsensus, link: FrameAppearance?)?
        for k in stride(from: count - 1, through: 0, by: -1) {
            let (mine, link) = try reference(k)
            var backward = mine
            if let next, let link = next.link { backward.addCarriedBack(next.sums, link: link, share: linkShare) }
            // Both directions hold the reference's own frames: count them once.
            var total = try forwardSums.read(k)
            let carriedBack = backward.sums, own = mine.sums
            for i in total.indices { total[i] += carriedBack[i] - own[i] }
            try gains.appendGoingBack(FieldConsensus(grid: grid, sums: total).gain)
            next = (backward, link)
        }
        return gains
    }

    /// `spanningReferences` over sums and links held in memory.
    public static func spanningReferences(_ own: [FieldConsensus], links: [FrameAppearance?], linkShare: Float) throws -> [PlanarImage] {
        let gains = try spanningReferences(count: own.count, grid: own[0].grid, linkShare: linkShare, reference: { (own[$0], links[$0]) })
        return try (0..<own.count).map { try gains.gain(of: $0) }
    }

    /// The statistics, as stored.
    var sums: [Float] {
        get { stats }
        set { stats = newValue }
    }

    init(grid: AppearanceGrid, sums: [Float]) {
        self.init(grid: grid)
        self.sums = sums
    }

    /// Adds `weight` times the statistics of `source`'s `from` cell to this one's `to` cell,
    /// every observation shifted by `shift` (per channel): a frame's log gain to one reference
    /// becomes its log gain to the other.
    private mutating func add(_ source: FieldConsensus, from: Int, to: Int, weight: Float, shift: (Float, Float, Float)) {
        for (c, d) in [shift.0, shift.1, shift.2].enumerated() {
            let observed = source.stats[source.at(0, c, from)], sum = source.stats[source.at(1, c, from)]
            let squares = source.stats[source.at(2, c, from)]
            let censored = source.stats[source.at(3, c, from)], bounds = source.stats[source.at(4, c, from)]
            stats[at(0, c, to)] += weight * observed
            stats[at(1, c, to)] += weight * (sum + d * observed)
            stats[at(2, c, to)] += weight * (squares + 2 * d * sum + d * d * observed)
            stats[at(3, c, to)] += weight * censored
            stats[at(4, c, to)] += weight * (bounds + d * censored)
        }
    }

    /// Adds the previous reference's sums, read where this reference's cells lie in it (`link`:
    /// this reference relative to the previous one) and brought to this reference's gain.
    mutating func addCarriedForward(_ previous: FieldConsensus, link: FrameAppearance, share: Float) {
        for cell in 0..<grid.count {
            let coverage = link.coverage[cell]
            guard coverage > 0.2, previous.grid.contains(latentX: link.referenceX[cell], latentY: link.referenceY[cell]) else { continue }
            // A frame's gain to the previous reference, over the link's: its gain to this one.
            let (r, g, b) = Self.logGain(link, cell: cell), shift = (-r, -g, -b)
            for (source, s) in previous.grid.corners(latentX: link.referenceX[cell], latentY: link.referenceY[cell]) where s > 0 {
                add(previous, from: source, to: cell, weight: share * coverage.squareRoot() * s, shift: shift)
            }
        }
    }

    /// Adds the next reference's sums, placed where its cells lie in this reference (`link`: the
    /// next reference relative to this one) and brought to this reference's gain.
    mutating func addCarriedBack(_ next: FieldConsensus, link: FrameAppearance, share: Float) {
        for cell in 0..<grid.count {
            let coverage = link.coverage[cell]
            guard coverage > 0.2, (0..<3).contains(where: { next.stats[next.at(0, $0, cell)] + next.stats[next.at(3, $0, cell)] > 0 }),
                  grid.contains(latentX: link.referenceX[cell], latentY: link.referenceY[cell]) else { continue }
            let shift = Self.logGain(link, cell: cell)
            for (target, s) in grid.corners(latentX: link.referenceX[cell], latentY: link.referenceY[cell]) where s > 0 {
                add(next, from: cell, to: target, weight: share * coverage.squareRoot() * s, shift: shift)
            }
        }
    }

    /// A link's log gain at `cell`, per channel.
    private static func logGain(_ link: FrameAppearance, cell: Int) -> (Float, Float, Float) {
        let g = link.gain.values, count = link.gain.planeSize
        return (log(max(g[cell], 1e-3)), log(max(g[count + cell], 1e-3)), log(max(g[2 * count + cell], 1e-3)))
    }

    /// n_c on the reference's grid.
    public var gain: PlanarImage {
        let count = grid.count
        var numerator = [Float](repeating: 0, count: 3 * count), weights = numerator
        for c in 0..<3 {
            for cell in 0..<count {
                let observed = stats[at(0, c, cell)], censored = stats[at(3, c, cell)], total = observed + censored
                guard total > 0 else { continue }
                let mean = Self.censoredMean(observed: observed, sum: stats[at(1, c, cell)], squares: stats[at(2, c, cell)],
                                             censored: censored, bounds: stats[at(4, c, cell)])
                numerator[c * count + cell] = -total * mean
                weights[c * count + cell] = total
            }
        }
        let logGain = FrameAppearance.smoothRatio(numerator: numerator, denominator: weights, grid: grid, fallback: 0)
        return PlanarImage(channels: 3, height: grid.height, width: grid.width, values: logGain.values.map { exp($0) })
    }

    /// The mean μ of a normal N(μ, σ²) of which `observed` weight was seen (Σ w z = `sum`,
    /// Σ w z² = `squares`) and `censored` weight was only known to lie below its bounds (Σ w b =
    /// `bounds`, taken at their mean b̄), by expectation–maximisation: each censored value is
    /// replaced by its expectation below b̄, E[z | z ≤ b̄] = μ − σ φ(α)/Φ(α), α = (b̄ − μ)/σ, and
    /// its square likewise. σ is kept above `minimumSpread` (a handful of frames can agree by
    /// chance). With nothing censored this is the plain mean, and with almost nothing observed
    /// (nothing to fit σ on) the plain mean too.
    public static func censoredMean(observed: Float, sum: Float, squares: Float, censored: Float, bounds: Float) -> Float {
        let total = Double(observed + censored)
        let plain = Double(sum + bounds) / total
        guard Double(censored) > 1e-3 * total, Double(observed) > 0.05 * total else { return Float(plain) }
        let u = Double(observed), su = Double(sum), qu = Double(squares), cw = Double(censored), bound = Double(bounds) / cw
        var mean = plain
        var variance = max(qu / u - (su / u) * (su / u), minimumSpread * minimumSpread)
        for _ in 0..<30 {
            let sd = variance.squareRoot(), alpha = (bound - mean) / sd
            let cdf = max(0.5 * erfc(-alpha / 2.0.squareRoot()), 1e-12), pdf = exp(-0.5 * alpha * alpha) / (2 * Double.pi).squareRoot()
            let ratio = pdf / cdf
            let expected = mean - sd * ratio
            let expectedSquare = variance * (1 - alpha * ratio - ratio * ratio) + expected * expected
            let next = (su + cw * expected) / total
            variance = max((qu + cw * expectedSquare) / total - next * next, minimumSpread * minimumSpread)
            if abs(next - mean) < 1e-6 { mean = next; break }
            mean = next
        }
        return Float(mean)
    }

    /// Floor on σ of a cell's log gains in `censoredMean`.
    static let minimumSpread = 0.01
}

/// Each reference's consensus gain (n_c on its grid), in a temporary file, as the backward pass of
/// `FieldConsensus.spanningReferences` finds them: from the last reference to the first.
final class ReferenceGains {
    let grid: AppearanceGrid
    private let store: RecordStore

    init(grid: AppearanceGrid) throws {
        self.grid = grid
        store = try RecordStore(recordLength: 3 * grid.count)
    }

    /// Gains already computed, in `store` (as `records` gives them).
    init(grid: AppearanceGrid, store: RecordStore) {
        self.grid = grid
        self.store = store
    }

    /// The store behind the gains, for writing them out.
    var records: RecordStore { store }

    /// Adds the gain of the reference before the last one added.
    func appendGoingBack(_ gain: PlanarImage) throws { try store.append(gain.values) }

    /// Reference k's gain.
    func gain(of k: Int) throws -> PlanarImage {
        PlanarImage(channels: 3, height: grid.height, width: grid.width, values: try store.read(store.count - 1 - k))
    }
}

/// The consensus for one reference, ready to apply: the reference's consensus gain field, and
/// (given per frame) the inverse of the consensus curves.
public struct ConsensusCorrection: Sendable {
    public let gain: PlanarImage

    public init(gain: PlanarImage) {
        self.gain = gain
    }

    /// Per channel, the gain's geometric mean over the grid.
    public var meanGain: [Float] {
        let n = gain.planeSize, v = gain.values
        return (0..<3).map { c in Float(exp((0..<n).reduce(0.0) { $0 + log(Double(max(v[c * n + $1], 1e-3))) } / Double(n))) }
    }

    /// The stable version of `frame`, whose appearance relative to the reference is `appearance`:
    ///   out_c(x) = n_c(w(x)) · (ḡ_c(gain_c(x) · curve_c(frame_c(x))) + offset_c)
    /// with ḡ_c the inverse of `consensus`' curve c (`CurveConsensus.consensus`) and `offset` one
    /// value per channel (with a guide, `DeflickerPlan`'s anchor; 0 without). Only smooth fields
    /// and per-value curves touch the frame, so its detail is its own.
    ///
    /// Where the frame was clipped (at white or at black) its own value is lost, and `v` is only
    /// a bound: the truth lies between it and white (or black). With the frame's `guide` and
    /// `held`, the tone relation of the frame's window to the guide (`DeflickerPlan`), the
    /// window's other frames say what lies there: a clipped value takes what the correction
    /// makes of its guide value, n_c · (ḡ_c(held_c(guide_c)) + offset_c), held within its
    /// interval. That estimate does not depend on the frame's own flicker, as the interval's
    /// middle does (a frame made brighter clips more, and higher), so the clipped parts stay
    /// as still as the rest. (A normal's mean beyond the bound, with the spread of the values at
    /// each guide level, came closer to the truth on pencil sketches but followed the flicker:
    /// on the evaluation's cases up to 0.5 levels more brightness flicker.) With `memory`, a
    /// clipped value whose pixel a frame of the window saw unclipped, where the guide showed what
    /// it shows now, takes what that frame's correction made of it instead (`ClippedMemory`),
    /// and the frame's unclipped values are remembered. Without a guide, or at a
    /// guide value no frame of the window saw unclipped, a value clipped at white takes the
    /// middle of its interval and one clipped at black its bound.
    public func apply(to frame: PlanarImage, appearance: FrameAppearance, consensus: [ToneCurve], offset: [Float] = [0, 0, 0],
                      grid: AppearanceGrid, guide: PlanarImage? = nil, held: ToneRelation? = nil,
                      memory: ClippedMemory.Use? = nil) -> PlanarImage {
        let count = grid.count
        // The consensus gain at each of the frame's cells, read where the cell lies in the
        // reference; cells that matched poorly take it from their neighbours.
        var numerator = [Float](repeating: 0, count: 3 * count), denominator = numerator
        let n = gain.values
        for cell in 0..<count {
            let w = appearance.coverage[cell]
            guard w > 0 else { continue }
            let around = grid.corners(latentX: appearance.referenceX[cell], latentY: appearance.referenceY[cell])
            for c in 0..<3 {
                let b = c * count
                numerator[b + cell] = w * around.reduce(0) { $0 + $1.weight * n[b + $1.cell] }
                denominator[b + cell] = w
            }
        }
        let after = FrameAppearance.smoothRatio(numerator: numerator, denominator: denominator, grid: grid)
        let curves = appearance.curves.map { $0.table() }
        // ḡ_c is tabulated over every value gain_c · curve_c can take here (with a margin), at
        // 4096 entries per unit. A frame's curves map it to its shot's first reference, composed
        // across every link on the way, and over a hundred links they can steepen far: on a
        // 280-frame clip, 0.9 came to 2.3 by frame 153. A table that stopped at 1.5 flattened
        // every value mapped above it to one grey, each channel its own (a green tint).
        let gains = appearance.gain.values, lowGain = gains.min() ?? 1, highGain = gains.max() ?? 1
        let reach = appearance.curves.flatMap { curve in curve.values.flatMap { [$0 * lowGain, $0 * highGain] } }
        let lower = max(min(-0.5, 1.05 * (reach.min() ?? 0)), -1000), upper = min(max(1.5, 1.05 * (reach.max() ?? 1)), 1000)
        // (At most 65 536 entries: curves gone as steep as a range of 16 get a coarser table.)
        let entries = min(max(8192, Int(((upper - lower) * 4096).rounded(.up))), 1 << 16)
        let inverse = consensus.indices.map { c in
            let table = consensus[c].inverseTable(lower: lower, upper: upper, count: entries)
            return offset[c] == 0 ? table : LookupTable(lower: lower, upper: upper, values: table.values.map { offset[c] + $0 })
        }
        let prediction = guide.flatMap { guide in held.map { held in (guide, inverse.indices.map { held.table(channel: $0, through: inverse[$0]) }) } }
        return GridFieldApplier(grid: grid, width: frame.width, height: frame.height)
            .apply(frame, curves: curves, before: appearance.gain, inverse: inverse, after: after, prediction: prediction, memory: memory)
    }
}

/// Applies out = after(x) · inverse(before(x) · curve(v)) per pixel and channel, with the two
/// grid fields interpolated to every pixel (Catmull–Rom between cell centres, constant beyond the
/// outermost ones: `AxisWeights`); with a `prediction`, a clipped value is predicted as after(x) · table(guide(x))
/// (`ConsensusCorrection.apply`).
struct GridFieldApplier {
    let grid: AppearanceGrid
    let width: Int, height: Int
    let columns: AxisWeights, rows: AxisWeights

    init(grid: AppearanceGrid, width: Int, height: Int) {
        self.grid = grid
        self.width = width
        self.height = height
        let toCell = { (p: Int) -> Float in AppearanceGrid.cellCoordinate((Float(p) - grid.origin) / Float(grid.factor)) }
        columns = AxisWeights(positions: (0..<width).map(toCell), cells: grid.width)
        rows = AxisWeights(positions: (0..<height).map(toCell), cells: grid.height)
    }

    /// Below this an input value was clipped at black; at or above `white`, at white.
    static let black: Float = 0.5 / 255, white: Float = 1 - 0.5 / 255

    func apply(_ frame: PlanarImage, curves: [LookupTable], before: PlanarImage, inverse: [LookupTable], after: PlanarImage,
               prediction: (guide: PlanarImage, tables: [LookupTable])? = nil, memory: ClippedMemory.Use? = nil) -> PlanarImage {
        precondition(prediction == nil || (prediction!.guide.count == frame.count && prediction!.tables.count == 3))
        precondition(memory == nil || (prediction != nil && memory!.memory.count == frame.count))
        let predicted = prediction?.tables
        let w = width, h = height, gw = grid.width, gh = grid.height, plane = w * h
        // Both fields, each grid row interpolated across the full width first: (field, c, gy, x).
        var wide = [Float](repeating: 0, count: 2 * 3 * gh * w)
        for (f, field) in [before, after].enumerated() {
            let values = field.values
            for c in 0..<3 {
                for gy in 0..<gh {
                    let src = c * gh * gw + gy * gw, dst = ((f * 3 + c) * gh + gy) * w
                    for x in 0..<w {
                        let (i, t) = (columns.index[x], columns.weight[x])
                        wide[dst + x] = t[0] * values[src + i[0]] + t[1] * values[src + i[1]] + t[2] * values[src + i[2]] + t[3] * values[src + i[3]]
                    }
                }
            }
        }
        var out = PlanarImage(uninitializedChannels: 3, height: h, width: w)
        let white = Self.white, black = Self.black
        let guidePixels = prediction?.guide ?? PlanarImage(channels: 1, height: 1, width: 1)
        frame.withUnsafeBufferPointer { fb in out.withUnsafeMutableBufferPointer { ob in wide.withUnsafeBufferPointer { wb in
          guidePixels.withUnsafeBufferPointer { gb in
            let src = fb.baseAddress!, dst = ob.baseAddress!, rowsWide = wb.baseAddress!, guideBase = gb.baseAddress!
            parallelChunks(h, minimumChunk: 8) { range in
                // This row's two gains, interpolated down the grid rows first (a loop the compiler
                // vectorises), then the per-value lookups.
                let gains = UnsafeMutablePointer<Float>.allocate(capacity: 4 * w)
                defer { gains.deallocate() }
                let before = gains, after = gains + w, field = gains + 2 * w, seen = gains + 3 * w
                seen.initialize(repeating: 0, count: w)
                for y in range {
                    let (i, t) = (rows.index[y], rows.weight[y])
                    // With a memory, the row's pixels none of whose channels is clipped (1, else 0).
                    if memory != nil {
                        let r = src + y &* w, g = r + plane, b = g + plane
                        for x in 0..<w {
                            let unclipped = r[x] < white && r[x] > black && g[x] < white && g[x] > black && b[x] < white && b[x] > black
                            seen[x] = unclipped ? 1 : 0
                        }
                    }
                    for c in 0..<3 {
                        let m = rowsWide + c * gh * w, n = rowsWide + (3 + c) * gh * w
                        let m0 = m + i[0] * w, m1 = m + i[1] * w, m2 = m + i[2] * w, m3 = m + i[3] * w
                        let n0 = n + i[0] * w, n1 = n + i[1] * w, n2 = n + i[2] * w, n3 = n + i[3] * w
                        let t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3]
                        for x in 0..<w {
                            before[x] = t0 * m0[x] + t1 * m1[x] + t2 * m2[x] + t3 * m3[x]
                            after[x] = t0 * n0[x] + t1 * n1[x] + t2 * n2[x] + t3 * n3[x]
                        }
                        let curve = curves[c], inv = inverse[c]
                        let s = src + c * plane + y * w, d = dst + c * plane + y * w
                        // With a guide, the field kept for the clipped values' predictions.
                        if predicted != nil { field.update(from: after, count: w) }
                        // The two lookups (gathers, so scalar), into `after`...
                        curve.values.withUnsafeBufferPointer { cv in inv.values.withUnsafeBufferPointer { iv in
                            let cp = cv.baseAddress!, ip = iv.baseAddress!
                            // Eight at a time: the indices as vectors, the loads lane by lane.
                            var x = 0
                            while x &+ 8 <= w {
                                let first = curve.indices(UnsafeRawPointer(s + x).loadUnaligned(as: SIMD8<Float>.self))
                                var curved = SIMD8<Float>()
                                for i in 0..<8 { curved[i] = cp[Int(first[i])] }
                                let second = inv.indices(UnsafeRawPointer(before + x).loadUnaligned(as: SIMD8<Float>.self) * curved)
                                var inverted = SIMD8<Float>()
                                for i in 0..<8 { inverted[i] = ip[Int(second[i])] }
                                let a = UnsafeMutableRawPointer(after + x)
                                a.storeBytes(of: a.loadUnaligned(as: SIMD8<Float>.self) * inverted, as: SIMD8<Float>.self)
                                x &+= 8
                            }
                            while x < w {
                                after[x] *= ip[inv.index(before[x] * cp[curve.index(s[x])])]
                                x &+= 1
                            }
                        } }
                        // ... then the clipping, a loop the compiler vectorises. A white input was
                        // clipped: its truth lies anywhere between v and white, so it takes the
                        // middle of that interval. (Taking v paints flat grey patches where the
                        // picture was white.)
                        if predicted == nil {
                            for x in 0..<w {
                                let v = after[x], clipped = s[x] >= white && v < 1
                                d[x] = clipped ? 0.5 * (v + 1) : min(max(v, 0), 1)
                            }
                        } else {
                            // With a guide, the prediction held within the clipped value's
                            // interval (looked up only there: few values are clipped): what the
                            // pixel showed when last seen unclipped, where the guide shows the
                            // same there as then (`ClippedMemory`), else the guide's tone.
                            let line = c &* plane &+ y &* w
                            let g = guideBase + line, table = predicted![c]
                            table.values.withUnsafeBufferPointer { pv in
                                let pp = pv.baseAddress!
                                @inline(__always) func estimate(_ x: Int) -> Float {
                                    memory?.recalled(line &+ x, pixel: y &* w &+ x, guide: g[x], table: pp, lookup: table, gain: field[x])
                                        ?? field[x] * pp[table.index(g[x])]
                                }
                                @inline(__always) func one(_ x: Int) {
                                    let v = min(max(after[x], 0), 1)
                                    if s[x] >= white && v < 1 {
                                        let p = estimate(x)
                                        d[x] = p.isNaN ? 0.5 * (v + 1) : min(max(p, v), 1)
                                    } else if s[x] <= black && v > 0 {
                                        let p = estimate(x)
                                        d[x] = p.isNaN ? v : min(max(p, 0), v)
                                    } else {
                                        d[x] = v
                                        if seen[x] != 0 { memory?.remember(line &+ x, value: v, guide: g[x]) }
                                    }
                                }
                                // Eight at a time where none of them is clipped (or NaN), which
                                // is most of a frame; value by value where any is.
                                var x = 0
                                while x &+ 8 <= w {
                                    let a = UnsafeRawPointer(after + x).loadUnaligned(as: SIMD8<Float>.self)
                                    let input = UnsafeRawPointer(s + x).loadUnaligned(as: SIMD8<Float>.self)
                                    let v = a.replacing(with: 0, where: a .< 0).replacing(with: 1, where: a .> 1)
                                    let clipped = ((input .>= white) .& (v .< 1)) .| ((input .<= black) .& (v .> 0))
                                    if any(clipped .| (a .!= a)) {
                                        for i in x..<(x &+ 8) { one(i) }
                                    } else {
                                        UnsafeMutableRawPointer(d + x).storeBytes(of: v, as: SIMD8<Float>.self)
                                        memory?.remember(line &+ x, values: v, guides: UnsafeRawPointer(g + x).loadUnaligned(as: SIMD8<Float>.self),
                                                         where: UnsafeRawPointer(seen + x).loadUnaligned(as: SIMD8<Float>.self) .!= 0)
                                    }
                                    x &+= 8
                                }
                                while x < w {
                                    one(x)
                                    x &+= 1
                                }
                            }
                        }
                    }
                    memory?.seen(y &* w, count: w, where: seen)
                }
            }
          }
        } } }
        return out
    }
}

/// For each pixel along one axis, the four grid cells and weights that interpolate a grid field
/// there: Catmull–Rom between cell centres, and beyond the outermost ones the outermost value.
/// Beyond them is where the fit (`GainFieldFit`, reading its nodes as `AppearanceGrid.corners`
/// does) took the field as constant, so the field it found holds there as fitted: extrapolated
/// linearly, the half cell along every edge of the frame took the slope of the field inside it
/// on, and the slope of a fitted field is its least sure part. (Guided, local flicker: the nine
/// static cameras 41.70 → 41.84 dB with the E_warp ratio 1.204 → 1.184, every case better; the
/// evaluation's pans 43.74 → 43.93 dB, the cockatoo 39.62 → 39.67; global jitter the same.)
struct AxisWeights {
    var index: [SIMD4<Int>] = []
    var weight: [SIMD4<Float>] = []

    init(positions: [Float], cells n: Int) {
        for position in positions {
            let t = min(max(position, 0), Float(max(n - 1, 0)))
            if n == 1 {
                index.append(SIMD4(0, 0, 0, 0)); weight.append(SIMD4(1, 0, 0, 0))
            } else if t <= 0 || t >= Float(n - 1) || n < 4 {
                // Linear between the two nearest centres (at an outermost one, its value).
                let i0 = min(max(Int(t.rounded(.down)), 0), n - 2), a = t - Float(i0)
                index.append(SIMD4(i0, i0 + 1, i0, i0)); weight.append(SIMD4(1 - a, a, 0, 0))
            } else {
                let i = min(Int(t), n - 2), a = t - Float(i)
                let c = catmullRomWeights(a)
                index.append(SIMD4(max(i - 1, 0), i, i + 1, min(i + 2, n - 1)))
                weight.append(i == 0 ? SIMD4(0, c[1] + c[0], c[2], c[3]) : (i + 2 > n - 1 ? SIMD4(c[0], c[1], c[2] + c[3], 0) : c))
            }
        }
    }
}

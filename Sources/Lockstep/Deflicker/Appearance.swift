import Foundation
import Tensor

/// The coarse grid on which smooth appearance fields live: one cell per `cell` × `cell` latent
/// samples (32 × 32 pixels at k = 8). Flicker that varies in space (a gain field, a local colour
/// drift) is smooth at this scale; the picture's own content is not.
public struct AppearanceGrid: Sendable, Equatable {
    public static let cell = 4
    /// The latent grid: `factor` pixels per sample, sample 0 at pixel `origin`.
    public let latentWidth: Int, latentHeight: Int
    public let factor: Int
    public let origin: Float
    public var width: Int { (latentWidth + Self.cell - 1) / Self.cell }
    public var height: Int { (latentHeight + Self.cell - 1) / Self.cell }
    public var count: Int { width * height }

    public init(latentWidth: Int, latentHeight: Int, factor: Int, origin: Float) {
        self.latentWidth = latentWidth
        self.latentHeight = latentHeight
        self.factor = factor
        self.origin = origin
    }

    /// The same grid on a picture `scale` times larger, whose `scale` × `scale` pixel blocks are
    /// this grid's pixels (as `averagePooled` makes them): for applying to the full-size frame a
    /// field that was fitted on its downscaled analysis.
    public func scaled(by scale: Int) -> AppearanceGrid {
        AppearanceGrid(latentWidth: latentWidth, latentHeight: latentHeight, factor: factor * scale,
                       origin: Float(scale) * origin + Float(scale - 1) / 2)
    }

    /// Latent coordinate of cell g's centre, along one axis.
    @inline(__always)
    static func latentCentre(_ g: Int) -> Float { Float(g * cell) + Float(cell - 1) / 2 }

    /// Cell coordinate of a latent coordinate.
    @inline(__always)
    static func cellCoordinate(_ latent: Float) -> Float { (latent - Float(cell - 1) / 2) / Float(cell) }

    /// Whether the latent position (x, y) lies on the grid: within half a cell of its outermost
    /// cell centres.
    func contains(latentX x: Float, latentY y: Float) -> Bool {
        let cx = Self.cellCoordinate(x), cy = Self.cellCoordinate(y)
        return cx > -0.5 && cy > -0.5 && cx < Float(width) - 0.5 && cy < Float(height) - 0.5
    }

    /// The four cells around the latent position (x, y), clamped to the grid, with their bilinear
    /// weights: for reading a field there, or for splatting into one.
    func corners(latentX x: Float, latentY y: Float) -> [(cell: Int, weight: Float)] {
        let cx = min(max(Self.cellCoordinate(x), 0), Float(width - 1)), cy = min(max(Self.cellCoordinate(y), 0), Float(height - 1))
        let x0 = min(Int(cx), width - 1), y0 = min(Int(cy), height - 1)
        let x1 = min(x0 + 1, width - 1), y1 = min(y0 + 1, height - 1), ax = cx - Float(x0), ay = cy - Float(y0)
        return [(y0 * width + x0, (1 - ax) * (1 - ay)), (y0 * width + x1, ax * (1 - ay)),
                (y1 * width + x0, (1 - ax) * ay), (y1 * width + x1, ax * ay)]
    }
}

/// How far the consensus leans on the links between references, by how noisy the matches are.
/// With a guide, the matches are refined on the original's pictures and judged sample by sample;
/// blind, on the input's own latent, they are noisier. The links between references are fits,
/// whose error every frame carried across them shares: how much those frames count depends on
/// that noise. (Measured on the eval's cases, local flicker on video: guided, link share 0.6 → 1
/// with the membrane 0.2 → 0.1, 38.9 → 39.3 dB, pans 43.5 → 43.6, global within 0.05 dB; blind,
/// the same change lost 0.3–0.6 dB.) How closely each frame's gain field follows its matches was
/// part of this too (a membrane twice as stiff blind); it is now chosen frame by frame on matches
/// the field was not fitted on (`FrameAppearance.crossValidated`), guided or blind.
public struct FitRegularisation: Sendable {
    /// Share of its weight that a neighbouring reference's frames keep per link crossed
    /// (`FieldConsensus.spanningReferences`).
    public var linkShare: Float

    public init(linkShare: Float) {
        self.linkShare = linkShare
    }

    public static let guided = FitRegularisation(linkShare: 1)
    public static let blind = FitRegularisation(linkShare: 0.6)
}

/// How one frame's colours relate to its reference's, as seen through the correspondence:
///   reference(w(x)) ≈ gain_c(x) · curve_c(frame(x)),
/// a tone curve per channel (global flicker: gain, gamma, offset, colour cast) times a smooth gain
/// field per channel (spatial flicker), plus where each grid cell lies in the reference, so that
/// a correction known in the reference's coordinates can be carried to the frame.
public struct FrameAppearance: Sendable {
    public var curves: [ToneCurve]
    /// 3 × grid, geometric mean 1 over the matched cells.
    public var gain: PlanarImage
    /// Reference latent position of each cell's centre.
    public var referenceX: [Float], referenceY: [Float]
    /// Share of each cell's samples that matched the reference (confidence-weighted), in [0, 1].
    public var coverage: [Float]
    /// 3 × grid: share of each cell's matched samples (as weighted in the fit) whose colour is
    /// clipped at white in that channel, where the gain only bounds the truth (`FieldConsensus`).
    public var clipped: [Float]
    /// Per channel: share of the frame's matched samples (as weighted in the fit) whose colour is
    /// clipped at black (`clipsBlack`).
    public var clippedBlack: [Float]

    /// The reference itself: identity curves, unit gain, every cell where it is.
    public static func identity(_ grid: AppearanceGrid) -> FrameAppearance {
        var xs = [Float](repeating: 0, count: grid.count), ys = xs
        for gy in 0..<grid.height {
            for gx in 0..<grid.width {
                xs[gy * grid.width + gx] = AppearanceGrid.latentCentre(gx)
                ys[gy * grid.width + gx] = AppearanceGrid.latentCentre(gy)
            }
        }
        let ones = [Float](repeating: 1, count: 3 * grid.count)
        return FrameAppearance(curves: Array(repeating: .identity, count: 3),
                               gain: PlanarImage(channels: 3, height: grid.height, width: grid.width, values: ones),
                               referenceX: xs, referenceY: ys, coverage: [Float](repeating: 1, count: grid.count),
                               clipped: [Float](repeating: 0, count: 3 * grid.count))
    }

    /// A colour at or above this (out of 1, averaged over 2 × 2 pixels) is taken as clipped at white,
    /// and one at or below 1 − this at black.
    static let clippedLevel: Float = 0.995

    /// Per channel and sample (3 planes): `usable` 1 where the pair says what the curve is, 0
    /// where the frame's value was clipped and the reference's was not; `bound` there, which
    /// way it bounds the curve (−1: the frame clipped at white, so the curve at its value maps
    /// to at most the reference's; +1 at black, at least).
    ///
    /// The curves map the frame's recorded values to the reference's recorded values (a clipped
    /// one of the reference's included: its white is a value of the reference's, which other
    /// frames map to). A clipped value of the frame's stands for a whole range of what it would
    /// have been, and the second pass estimates it apart (`ConsensusCorrection`, within the
    /// interval the clip leaves), so its pairs are left out of the fit, unless the fitted curve
    /// breaks their bound. Taken as values, a frame's clipped highlights (all at white, matched
    /// to the reference's whole range above the clip) bent the curve's top towards their mean,
    /// and the curvature carried the bend down to the tones below the clip, which came back too
    /// bright: on a static camera's grade under global jitter (`tree.avi`), 7 levels at 224–239,
    /// in the frames that clipped most and not in the others.
    static func unclipped(_ frame: PlanarImage, _ reference: PlanarImage) -> (usable: [Float], bound: [Int8]) {
        let high = clippedLevel, low = 1 - clippedLevel
        var usable = [Float](repeating: 0, count: frame.count), bound = [Int8](repeating: 0, count: frame.count)
        frame.withUnsafeBufferPointer { f in reference.withUnsafeBufferPointer { r in
        usable.withUnsafeMutableBufferPointer { u in bound.withUnsafeMutableBufferPointer { b in
            for i in 0..<u.count {
                let fc: Int8 = f[i] <= low ? -1 : (f[i] >= high ? 1 : 0), rc: Int8 = r[i] <= low ? -1 : (r[i] >= high ? 1 : 0)
                if fc == 0 || rc != 0 { u[i] = 1 } else { b[i] = -fc }
            }
        } } } }
        return (usable, bound)
    }

    /// Whether the frame's colours in `channel` were clipped at black in at least one of the
    /// quantile levels its curve is fitted through, as `clipsWhite` at white: the curve's value
    /// at black then maps the clipped level, a bound.
    public func clipsBlack(_ channel: Int) -> Bool { clippedBlack[channel] >= 1 / Float(ToneCurve.matchingLevels) }

    /// Per channel, the `weight`ed share of `picture`'s samples (3 × H' × W') at or below
    /// 1 − `clippedLevel`.
    static func blackShares(of picture: PlanarImage, weight: [Float]) -> [Float] {
        let n = picture.planeSize, black = 1 - clippedLevel
        var clipped = [Float](repeating: 0, count: 3), total: Float = 0
        picture.withUnsafeBufferPointer { p in
            for i in 0..<n where weight[i] > 0 {
                total += weight[i]
                for c in 0..<3 where p[c &* n &+ i] <= black { clipped[c] += weight[i] }
            }
        }
        return total > 0 ? clipped.map { $0 / total } : clipped
    }

    /// Whether the frame's colours in `channel` were clipped at white in enough of its matches to
    /// reach its curve's top: in at least one of the quantile levels that fit the curve
    /// (`ToneCurve.matchingLevels`), so that the curve's value at white maps the clipped level, a
    /// bound, not white (`ToneCurve.robustMean`).
    /// (Read from the per-cell shares weighted by coverage, which is the share of the fit's weight,
    /// as `blackShares` measures at black.)
    public func clipsWhite(_ channel: Int) -> Bool {
        let cells = coverage.count
        var clippedShare: Float = 0, total: Float = 0
        for cell in 0..<cells {
            clippedShare += coverage[cell] * clipped[channel * cells + cell]
            total += coverage[cell]
        }
        return total > 0 && clippedShare >= total / Float(ToneCurve.matchingLevels)
    }

    /// Per channel and cell, the `weight`ed share of `picture`'s samples (3 × H' × W',
    /// `samplesPerCell` per cell and axis) at or above `clippedLevel`.
    public static func clippedShares(of picture: PlanarImage, weight: [Float]?, samplesPerCell spc: Int, grid: AppearanceGrid) -> [Float] {
        let n = picture.planeSize, cells = grid.count
        var clipped = [Float](repeating: 0, count: 3 * cells), total = [Float](repeating: 0, count: cells)
        picture.withUnsafeBufferPointer { p in
            forEachSample(width: picture.width, height: picture.height, samplesPerCell: spc, grid: grid) { i, cell in
                let wi = weight?[i] ?? 1
                guard wi > 0 else { return }
                total[cell] += wi
                for c in 0..<3 where p[c &* n &+ i] >= clippedLevel { clipped[c &* cells &+ cell] += wi }
            }
        }
        for c in 0..<3 {
            for cell in 0..<cells where total[cell] > 0 { clipped[c * cells + cell] /= total[cell] }
        }
        return clipped
    }

    /// Calls `body(i, cell)` for every sample i of a `width` × `height` grid with `samplesPerCell`
    /// samples per cell and axis, with the cell it lies in (the last row and column of cells
    /// take any samples beyond them).
    @inline(__always)
    static func forEachSample(width w: Int, height h: Int, samplesPerCell spc: Int, grid: AppearanceGrid,
                              _ body: (_ i: Int, _ cell: Int) -> Void) {
        // Each sample's cell column counted along the row rather than divided out at every sample.
        let lastColumn = grid.width - 1
        for y in 0..<h {
            let row = min(y / spc, grid.height - 1) * grid.width
            var column = 0, next = spc
            for x in 0..<w {
                if x == next { column &+= 1; next &+= spc }
                body(y &* w &+ x, row &+ min(column, lastColumn))
            }
        }
    }

    /// Share of the frame that matched the reference.
    public var matchedFraction: Float { Self.matchedFraction(coverage) }

    /// The mean of the cells' coverage.
    static func matchedFraction(_ coverage: [Float]) -> Float { coverage.isEmpty ? 0 : coverage.reduce(0, +) / Float(coverage.count) }

    /// Each cell's coverage: its samples' summed confidence (`GainFieldFit.cellSums`) over the
    /// samples a cell has, at most 1.
    static func coverage(_ cellConfidence: [Float], samplesPerCell: Int) -> [Float] {
        let perCell = Float(samplesPerCell * samplesPerCell)
        return cellConfidence.map { min($0 / perCell, 1) }
    }

    /// The coverage a fit on `confidence` (`width` × `height` samples) would find, without the fit.
    static func coverage(confidence: [Float], width: Int, height: Int, samplesPerCell: Int, grid: AppearanceGrid) -> [Float] {
        let cells = GainFieldFit(grid: grid, width: width, height: height, samplesPerCell: samplesPerCell)
        return coverage(confidence.withUnsafeBufferPointer { cells.cellSums($0.baseAddress!) }, samplesPerCell: samplesPerCell)
    }

    // MARK: - Fitting

    /// The weight a match of this confidence has in a fit. Only confident matches speak for the
    /// frame: a half-trusted match is as likely to pair different content, and different content
    /// reads as a change of tone.
    static func trust(_ confidence: [Float]) -> [Float] {
        let floor: Float = 0.5
        return confidence.map { c in let t = max(0, (c - floor) / (1 - floor)); return t * t }
    }

    /// Fits the model to pairs of colours: the frame's (`frame`) and the reference's carried onto
    /// it (`reference`), both 3 × H' × W' with `samplesPerCell` samples per grid cell along each
    /// axis, weighted by the correspondence's `confidence` (H' × W'). The field gives each cell's
    /// reference position. Curves (quantile matching) and gain (`GainFieldFit`, each sample
    /// speaking for the field at its own place) are fitted in turn; matches that the model cannot
    /// explain (occlusions, moving objects, wrong matches) are down-weighted after each round.
    ///
    /// Which goes first matters: curves and field can each explain part of the other's work, and
    /// the alternation stays near where it starts. Curves fitted first take part of a gain field
    /// away by brightness (where a region's brightness is mostly the field, as on white paper,
    /// they take most of it); a field fitted first takes part of a global tone change in space,
    /// following the picture's bright and dark regions. So the field goes first, unless the field
    /// it ends with follows the picture's brightness (`followsBrightness`): flicker in space does
    /// not know what the picture shows, so such a field is a tone curve's work, and the fit is
    /// redone curves first. (On the eval's cases, guided, pans / video: local flicker
    /// 42.3 / 37.4 → 42.7 / 38.2 dB, global 40.6 / 38.8 → 40.4 / 38.9; with the field always
    /// first, the pencil sketch's global jitter kept 1.3 levels of brightness flicker.)
    public static func fit(frame: PlanarImage, reference: PlanarImage, confidence: [Float], samplesPerCell: Int,
                           field: CorrespondenceField, grid: AppearanceGrid, rounds: Int = 3,
                           clippedAsValues: Bool = false) -> FrameAppearance {
        let fieldFirst = fitInTurn(frame: frame, reference: reference, confidence: confidence, samplesPerCell: samplesPerCell,
                                   field: field, grid: grid, rounds: rounds, fieldFirst: true, clippedAsValues: clippedAsValues)
        guard fieldFirst.followsBrightness(of: reference, samplesPerCell: samplesPerCell, grid: grid) else { return fieldFirst }
        return fitInTurn(frame: frame, reference: reference, confidence: confidence, samplesPerCell: samplesPerCell,
                         field: field, grid: grid, rounds: rounds, fieldFirst: false, clippedAsValues: clippedAsValues)
    }

    /// Correlation, over the cells and weighted by their coverage, beyond which a gain field is
    /// taken to follow the picture's brightness (on the eval's pencil video, in the frames looked
    /// at, fields fitted first reached 0.6–0.7 under global jitter, where they were wrong, and at
    /// most 0.35 under local flicker; 0.4 instead of 0.5 measured within 0.1 dB).
    static let brightnessCorrelationLimit: Float = 0.5

    /// Whether the gain field (its log, mean over the channels) correlates with the brightness of
    /// `picture` (3 × H' × W', `samplesPerCell` samples per cell and axis) cell by cell, beyond
    /// `brightnessCorrelationLimit` either way. A flat field does not.
    public func followsBrightness(of picture: PlanarImage, samplesPerCell spc: Int, grid: AppearanceGrid) -> Bool {
        let n = picture.planeSize, cells = grid.count
        var brightness = [Float](repeating: 0, count: cells), samples = brightness
        picture.withUnsafeBufferPointer { p in
            Self.forEachSample(width: picture.width, height: picture.height, samplesPerCell: spc, grid: grid) { i, cell in
                brightness[cell] += p[i] + p[n &+ i] + p[2 &* n &+ i]
                samples[cell] += 3
            }
        }
        let g = gain.values
        var sw: Float = 0, sx: Float = 0, sy: Float = 0, sxx: Float = 0, syy: Float = 0, sxy: Float = 0
        for cell in 0..<cells where samples[cell] > 0 && coverage[cell] > 0 {
            let w = coverage[cell], x = brightness[cell] / samples[cell]
            let y = (log(max(g[cell], 1e-3)) + log(max(g[cells + cell], 1e-3)) + log(max(g[2 * cells + cell], 1e-3))) / 3
            sw += w; sx += w * x; sy += w * y; sxx += w * x * x; syy += w * y * y; sxy += w * x * y
        }
        guard sw > 0 else { return false }
        let mx = sx / sw, my = sy / sw
        let vx = sxx / sw - mx * mx, vy = syy / sw - my * my, cxy = sxy / sw - mx * my
        // A flat field (kept flat by the fit's test against the curves alone) has no variance.
        guard vx > 1e-8, vy > 1e-8 else { return false }
        return abs(cxy) >= Self.brightnessCorrelationLimit * (vx * vy).squareRoot()
    }

    /// `fit` with one order: the field fitted first (the curves start as the identity), or the curves.
    static func fitInTurn(frame: PlanarImage, reference: PlanarImage, confidence: [Float], samplesPerCell: Int,
                          field: CorrespondenceField, grid: AppearanceGrid, rounds: Int,
                          fieldFirst: Bool, clippedAsValues: Bool) -> FrameAppearance {
        let lw = frame.width, lh = frame.height, n = lw * lh
        precondition(reference.width == lw && reference.height == lh && confidence.count == n)
        let trusted = trust(confidence)
        var weight = trusted
        var curves = [ToneCurve](repeating: .identity, count: 3)
        var gain = PlanarImage(channels: 3, height: grid.height, width: grid.width,
                               values: [Float](repeating: 1, count: 3 * grid.count))
        let a = frame.values, b = reference.values
        var (usable, bound) = clippedAsValues ? ([Float](repeating: 1, count: 3 * n), [Int8](repeating: 0, count: 3 * n))
                                              : unclipped(frame, reference)
        var mapped = [Float](repeating: 0, count: 3 * n), target = mapped, residual = [Float](repeating: 0, count: n)
        var channelWeight = mapped
        let cells = grid.count, spc = samplesPerCell
        let fieldFit = GainFieldFit(grid: grid, width: lw, height: lh, samplesPerCell: spc)
        var strength = Self.firstMembrane
        // Each cell's confidence.
        let cellWeight = confidence.withUnsafeBufferPointer { fieldFit.cellSums($0.baseAddress!) }
        // The loops run over every sample, several times a frame: in parallel, on raw buffers.
        a.withUnsafeBufferPointer { ab in b.withUnsafeBufferPointer { bb in confidence.withUnsafeBufferPointer { cb in
        trusted.withUnsafeBufferPointer { tb in weight.withUnsafeMutableBufferPointer { wb in
        mapped.withUnsafeMutableBufferPointer { mb in target.withUnsafeMutableBufferPointer { yb in residual.withUnsafeMutableBufferPointer { rb in
        usable.withUnsafeMutableBufferPointer { ub in channelWeight.withUnsafeMutableBufferPointer { cwb in bound.withUnsafeBufferPointer { boundBuffer in
            let a = ab.baseAddress!, b = bb.baseAddress!, confidence = cb.baseAddress!, trusted = tb.baseAddress!
            let weight = wb.baseAddress!, mapped = mb.baseAddress!, target = yb.baseAddress!, residual = rb.baseAddress!
            let usable = ub.baseAddress!, channelWeight = cwb.baseAddress!, bound = boundBuffer.baseAddress!
            // Each channel's weights: the sample's, where the pair is a value (`unclipped`).
            func weighChannels() {
                parallelChunks(n, minimumChunk: 4096) { range in
                    for c in 0..<3 { for i in range { channelWeight[c &* n &+ i] = weight[i] * usable[c &* n &+ i] } }
                }
            }
            // The gain field at every sample, kept in step with `gain`.
            var sampleGain = Self.gainAtSamples(gain, grid: grid, width: lw, height: lh, samplesPerCell: spc)
            for round in 0..<rounds {
                weighChannels()
                // Each channel's curve, from the reference divided by the gain field.
                var fitted = curves
                fitted.withUnsafeMutableBufferPointer { fb in
                    let fitted = fb.baseAddress!
                    sampleGain.withUnsafeBufferPointer { gb in
                        let g = gb.baseAddress!
                        DispatchQueue.concurrentPerform(iterations: 3) { c in
                            let t = target + c * n, bc = b + c * n, gc = g + c * n, ac = a + c * n
                            if fieldFirst && round == 0 {
                                (mapped + c * n).update(from: ac, count: n)
                                fitted[c] = .identity
                                return
                            }
                            for i in 0..<n { t[i] = bc[i] / max(gc[i], 1e-3) }
                            let curve = ToneCurve.matching(x: ac, y: t, weight: channelWeight + c * n, count: n).monotone
                            let m = mapped + c * n
                            for i in 0..<n { m[i] = curve(ac[i]) }
                            fitted[c] = curve
                        }
                    }
                }
                curves = fitted
                // The gain field's nodes (`GainFieldFit`). Once the curves and the weights have
                // had a round, the membrane's strength is chosen on held-out matches
                // (`crossValidated`) and kept for the rounds after.
                if round == min(1, rounds - 1) {
                    strength = Self.crossValidated(fieldFit, strengths: membraneLadder, mapped: mapped, frame: a, reference: b,
                                                   weight: weight, usable: usable, flat: nil).strength
                }
                gain = fieldFit.solve(fieldFit.binned(mapped: mapped, reference: b, weight: weight, usable: usable), membrane: strength)
                // Global scale belongs to the curves: the gain keeps geometric mean 1 where matched.
                for c in 0..<3 {
                    var logSum: Float = 0, total: Float = 0
                    for cell in 0..<cells where cellWeight[cell] > 0 {
                        logSum += cellWeight[cell] * log(max(gain.values[c * cells + cell], 1e-3))
                        total += cellWeight[cell]
                    }
                    let scale = total > 0 ? exp(logSum / total) : 1
                    gain.withUnsafeMutableBufferPointer { g in for cell in 0..<cells { g[c * cells + cell] /= scale } }
                    curves[c].values = curves[c].values.map { $0 * scale }
                }
                sampleGain = Self.gainAtSamples(gain, grid: grid, width: lw, height: lh, samplesPerCell: spc)
                if round == rounds - 1 { break }
                let now = curves
                // A clipped pair whose bound the fitted model breaks counts as a value from now on.
                sampleGain.withUnsafeBufferPointer { gb in
                    let g = gb.baseAddress!
                    parallelChunks(n, minimumChunk: 4096) { range in
                        for c in 0..<3 {
                            for i in range where bound[c &* n &+ i] != 0 && usable[c &* n &+ i] == 0 {
                                let j = c &* n &+ i, predicted = g[j] * now[c](a[j])
                                if bound[j] > 0 ? predicted < b[j] : predicted > b[j] { usable[j] = 1 }
                            }
                        }
                    }
                }
                // Robust re-weighting (Cauchy) on the residual of all three channels.
                sampleGain.withUnsafeBufferPointer { gb in
                    let g = gb.baseAddress!
                    parallelChunks(n, minimumChunk: 4096) { range in
                        for i in range {
                            var e: Float = 0
                            for c in 0..<3 { e += usable[c &* n &+ i] * abs(b[c &* n &+ i] - g[c &* n &+ i] * now[c](a[c &* n &+ i])) }
                            residual[i] = e
                        }
                    }
                }
                let scale = max(3 * Self.median(of: UnsafeBufferPointer(start: residual, count: n), where: confidence, above: 0.1), 3.0 / 255)
                parallelChunks(n, minimumChunk: 4096) { range in
                    for i in range {
                        let r = residual[i] / scale
                        weight[i] = trusted[i] / (1 + r * r)
                    }
                }
            }
            // The gain field is kept only where it predicts the matches it was not fitted on
            // better than the curves alone (`crossValidated`): where the flicker is global, a field
            // fits noise and content change, cell by cell, and predicts nothing.
            weighChannels()
            var flat = curves
            flat.withUnsafeMutableBufferPointer { fb in
                let flat = fb.baseAddress!
                DispatchQueue.concurrentPerform(iterations: 3) { c in
                    flat[c] = ToneCurve.matching(x: a + c * n, y: b + c * n, weight: channelWeight + c * n, count: n).monotone
                }
            }
            if !Self.crossValidated(fieldFit, strengths: [strength], mapped: mapped, frame: a, reference: b, weight: weight,
                                    usable: usable, flat: flat).beatsFlat {
                curves = flat
                gain = PlanarImage(channels: 3, height: grid.height, width: grid.width, values: [Float](repeating: 1, count: 3 * grid.count))
            }
        } } } } } } } } } } }
        // Where each cell lies in the reference: where the cell's centre lands (a last, partial
        // cell's centre lies past the latent's last sample: a clamped position put it up to 1.5
        // samples inwards, and the consensus read its gain partly into the cells before it).
        var xs = [Float](repeating: 0, count: grid.count), ys = xs
        for gy in 0..<grid.height {
            for gx in 0..<grid.width {
                let p = field.landing(AppearanceGrid.latentCentre(gx), AppearanceGrid.latentCentre(gy))
                xs[gy * grid.width + gx] = p.x
                ys[gy * grid.width + gx] = p.y
            }
        }
        return FrameAppearance(curves: curves, gain: gain, referenceX: xs, referenceY: ys,
                               coverage: coverage(cellWeight, samplesPerCell: samplesPerCell),
                               clipped: clippedShares(of: frame, weight: weight, samplesPerCell: samplesPerCell, grid: grid),
                               clippedBlack: blackShares(of: frame, weight: weight))
    }

    /// The membrane's strengths the cross-validation chooses among (`GainFieldFit.solve`: relative
    /// to the mean weight of a node's data), stiffest last, and the one the fit starts from,
    /// before the curves have had a round (the strength that was fixed before, guided).
    static let membraneLadder: [Double] = [0.1 / 16, 0.1 / 4, 0.1, 0.4]
    static let firstMembrane = 0.1

    /// Which of `strengths` of the membrane lets a gain field predict the matches best, and
    /// whether it predicts them better than `flat`, the curves fitted alone, by two-fold
    /// cross-validation over a checkerboard of the grid's cells: the field is fitted on the
    /// matches of one colour's cells (`fieldFit`, on `mapped`, the frame through its curves) and
    /// read on the other's, where the membrane carries it from their neighbours; its absolute
    /// residual there, over both folds, is compared with that of `flat`.
    ///
    /// A flicker in space is smooth over more than a cell and carries over; a field fitted to
    /// noise or to content change, cell by cell, does not. The test needs no margin: the field
    /// is judged on matches it did not see, so its freedom to fit them earns it nothing. (It
    /// replaced such a margin, the field kept where it lowered the residual of the matches it was
    /// fitted on by 7%. Guided, local flicker: the evaluation's pans 43.93 → 44.49 dB (the hubble
    /// field's pencil sketch 36.91 → 42.65), the birds' two cases +3.0 and +3.4 dB; global
    /// jitter: the cockatoo 39.19 → 39.71, the coffee's grade +0.58; the static cameras the same.)
    ///
    /// How closely the field may follow its matches is the same question, asked of the same
    /// held-out matches: clean matches (a static camera's, guided or blind) carry a field's
    /// detail between cells, and a stiff membrane smooths away part of the flicker, differently
    /// in every frame, which a still picture shows; noisy ones need their neighbours' help. So
    /// the strength is chosen per frame from `membraneLadder` (the samples are binned once per
    /// fold, and each strength costs a solve on the grid and a reading of the held-out matches).
    static func crossValidated(_ fieldFit: GainFieldFit, strengths: [Double], mapped: UnsafePointer<Float>, frame a: UnsafePointer<Float>,
                               reference b: UnsafePointer<Float>, weight: UnsafePointer<Float>, usable: UnsafePointer<Float>,
                               flat: [ToneCurve]?) -> (strength: Double, beatsFlat: Bool) {
        let w = fieldFit.width, h = fieldFit.height, n = w * h, spc = fieldFit.samplesPerCell, grid = fieldFit.grid
        let count = strengths.count
        // Each sample's cell, by column and by row (two divisions a sample, four times over, were
        // most of this function's time).
        let columnCell = (0..<w).map { min($0 / spc, grid.width - 1) }, rowCell = (0..<h).map { min($0 / spc, grid.height - 1) }
        func fold(x: Int, y: Int) -> Int { (columnCell[x] + rowCell[y]) & 1 }
        // Per fold: the residual under each strength, then the curves' alone.
        var sums = [Float](repeating: 0, count: 2 * (count + 1))
        sums.withUnsafeMutableBufferPointer { sb in
            let sums = sb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 2) { held in
                let out = sums + held * (count + 1)
                // Fitted on the other fold's matches only.
                var seen = [Float](repeating: 0, count: n)
                for y in 0..<h { for x in 0..<w where fold(x: x, y: y) != held { seen[y &* w &+ x] = weight[y &* w &+ x] } }
                let bins = seen.withUnsafeBufferPointer { fieldFit.binned(mapped: mapped, reference: b, weight: $0.baseAddress!, usable: usable) }
                for (s, strength) in strengths.enumerated() {
                    let g = gainAtSamples(fieldFit.solve(bins, membrane: strength), grid: grid, width: w, height: h, samplesPerCell: spc)
                    var withField: Float = 0
                    g.withUnsafeBufferPointer { gb in
                        let g = gb.baseAddress!
                        for y in 0..<h {
                            for x in 0..<w where fold(x: x, y: y) == held {
                                let i = y &* w &+ x
                                guard weight[i] > 0 else { continue }
                                for c in 0..<3 { withField += weight[i] * usable[c &* n &+ i] * abs(b[c &* n &+ i] - g[c &* n &+ i] * mapped[c &* n &+ i]) }
                            }
                        }
                    }
                    out[s] = withField
                }
                guard let flat else { return }
                var without: Float = 0
                for y in 0..<h {
                    for x in 0..<w where fold(x: x, y: y) == held {
                        let i = y &* w &+ x
                        guard weight[i] > 0 else { continue }
                        for c in 0..<3 { without += weight[i] * usable[c &* n &+ i] * abs(b[c &* n &+ i] - flat[c](a[c &* n &+ i])) }
                    }
                }
                out[count] = without
            }
        }
        let total = (0...count).map { sums[$0] + sums[count + 1 + $0] }
        let best = (0..<count).min { total[$0] < total[$1] }!
        return (strengths[best], flat != nil && total[best] < total[count])
    }

    /// The median of `values` (all in [0, 3]) where `mask` exceeds `threshold`, from a histogram
    /// of 3072 bins (a sort of every sample would cost more than the fit).
    static func median(of values: UnsafeBufferPointer<Float>, where mask: UnsafePointer<Float>, above threshold: Float) -> Float {
        let bins = 3072, scale = Float(bins) / 3
        var histogram = [Int](repeating: 0, count: bins)
        var total = 0
        for i in 0..<values.count where mask[i] > threshold {
            histogram[min(max(Int(values[i] * scale), 0), bins - 1)] += 1
            total += 1
        }
        guard total > 0 else { return 0 }
        var seen = 0
        for (bin, count) in histogram.enumerated() {
            seen += count
            if 2 * seen >= total { return (Float(bin) + 0.5) / scale }
        }
        return 3
    }

    /// numerator / denominator per cell and channel, where the data is thin pulled towards the
    /// same ratio over a wide neighbourhood (σ = 2 cells), and `fallback` where there is no data.
    /// The pull weighs as 2% of a typical cell's data: enough to fill holes, little enough not to
    /// flatten the consensus field where the data is good (10% cost 0.1–0.3 dB on local flicker).
    static func smoothRatio(numerator: [Float], denominator: [Float], grid: AppearanceGrid, fallback: Float = 1) -> PlanarImage {
        let count = grid.count
        var out = PlanarImage(uninitializedChannels: 3, height: grid.height, width: grid.width)
        let wideNumerator = blurred(numerator, grid: grid, channels: 3, sigma: 2)
        let wideDenominator = blurred(denominator, grid: grid, channels: 3, sigma: 2)
        for c in 0..<3 {
            let plane = denominator[(c * count)..<((c + 1) * count)]
            let typical = plane.reduce(0, +) / Float(max(plane.filter { $0 > 0 }.count, 1))
            let pull = max(0.02 * typical, 1e-12)
            out.withUnsafeMutableBufferPointer { o in
                for cell in 0..<count {
                    let i = c * count + cell
                    let wide = wideDenominator[i] > 0.01 * typical ? wideNumerator[i] / wideDenominator[i] : fallback
                    o[i] = (numerator[i] + pull * wide) / (denominator[i] + pull)
                }
            }
        }
        return out
    }

    /// Separable Gaussian blur of `channels` planes on the grid, edges clamped.
    static func blurred(_ values: [Float], grid: AppearanceGrid, channels: Int, sigma: Float) -> [Float] {
        let radius = Int((3 * sigma).rounded(.up))
        let taps = (-radius...radius).map { exp(-Float($0 * $0) / (2 * sigma * sigma)) }
        let w = grid.width, h = grid.height
        var temp = values, out = values
        for c in 0..<channels {
            let base = c * w * h
            for y in 0..<h {
                for x in 0..<w {
                    var s: Float = 0
                    for (k, t) in taps.enumerated() { s += t * values[base + y * w + min(max(x + k - radius, 0), w - 1)] }
                    temp[base + y * w + x] = s
                }
            }
            for y in 0..<h {
                for x in 0..<w {
                    var s: Float = 0
                    for (k, t) in taps.enumerated() { s += t * temp[base + min(max(y + k - radius, 0), h - 1) * w + x] }
                    out[base + y * w + x] = s
                }
            }
        }
        return out
    }

    /// `frame` (3 × H' × W', `samplesPerCell` samples per cell and axis) mapped to the reference:
    /// gain_c(x) · curve_c(v), the value the correction takes its consensus from.
    public func mappedToReference(_ frame: PlanarImage, samplesPerCell: Int, grid: AppearanceGrid) -> PlanarImage {
        let w = frame.width, h = frame.height, n = w * h
        var out = PlanarImage(channels: 3, height: h, width: w,
                              values: Self.gainAtSamples(gain, grid: grid, width: w, height: h, samplesPerCell: samplesPerCell))
        let tables = curves.map { $0.table(lower: -0.5, upper: 1.5, count: 8192) }
        frame.withUnsafeBufferPointer { f in out.withUnsafeMutableBufferPointer { o in
            for c in 0..<3 {
                let table = tables[c]
                table.values.withUnsafeBufferPointer { t in
                    for i in (c &* n)..<((c &+ 1) &* n) { o[i] *= t[table.index(f[i])] }
                }
            }
        } }
        return out
    }

    /// The grid gain at every sample of a W' × H' grid with `samplesPerCell` samples per cell
    /// (bilinear between cell centres, constant beyond the outermost ones). Separably: each grid
    /// row across the full width first, then each sample row between two of those, loops the
    /// compiler vectorises (the same sums, in the same order, as the bilinear formula).
    public static func gainAtSamples(_ gain: PlanarImage, grid: AppearanceGrid, width lw: Int, height lh: Int, samplesPerCell: Int) -> [Float] {
        let gw = grid.width, gh = grid.height, spacing = Float(samplesPerCell)
        // Where a sample lies between two cell centres, along one axis.
        func axis(_ count: Int, cells: Int) -> (lower: [Int], upper: [Int], share: [Float]) {
            var lower = [Int](repeating: 0, count: count), upper = lower, share = [Float](repeating: 0, count: count)
            for s in 0..<count {
                let t = min(max((Float(s) + 0.5) / spacing - 0.5, 0), Float(cells - 1))
                lower[s] = min(Int(t), cells - 1)
                upper[s] = min(lower[s] + 1, cells - 1)
                share[s] = t - Float(lower[s])
            }
            return (lower, upper, share)
        }
        let columns = axis(lw, cells: gw), rows = axis(lh, cells: gh)
        var wide = [Float](repeating: 0, count: 3 * gh * lw)
        var out = [Float](repeating: 0, count: 3 * lw * lh)
        gain.withUnsafeBufferPointer { gb in wide.withUnsafeMutableBufferPointer { wb in out.withUnsafeMutableBufferPointer { ob in
            let g = gb.baseAddress!, wide = wb.baseAddress!, o = ob.baseAddress!
            columns.lower.withUnsafeBufferPointer { x0 in columns.upper.withUnsafeBufferPointer { x1 in columns.share.withUnsafeBufferPointer { ax in
                for row in 0..<(3 * gh) {
                    let src = g + row &* gw, dst = wide + row &* lw
                    for x in 0..<lw { dst[x] = src[x0[x]] * (1 - ax[x]) + src[x1[x]] * ax[x] }
                }
            } } }
            parallelChunks(lh, minimumChunk: 8) { range in
                for y in range {
                    let ay = rows.share[y]
                    for c in 0..<3 {
                        let top = wide + (c &* gh &+ rows.lower[y]) &* lw, bottom = wide + (c &* gh &+ rows.upper[y]) &* lw
                        let d = o + (c &* lh &+ y) &* lw
                        for x in 0..<lw { d[x] = top[x] * (1 - ay) + bottom[x] * ay }
                    }
                }
            }
        } } }
        return out
    }

    // MARK: - Storage

    /// Values in a flat record: curves, gain, reference positions, coverage, clipped shares at
    /// white (per cell) and at black (per channel).
    public static func recordLength(_ grid: AppearanceGrid) -> Int { 3 * ToneCurve.knotCount + 9 * grid.count + 3 }

    public var record: [Float] {
        curves.flatMap(\.values) + gain.values + referenceX + referenceY + coverage + clipped + clippedBlack
    }

    public init(record: [Float], grid: AppearanceGrid) {
        precondition(record.count == Self.recordLength(grid))
        let k = ToneCurve.knotCount, g = grid.count
        curves = (0..<3).map { ToneCurve(values: Array(record[($0 * k)..<(($0 + 1) * k)])) }
        var at = 3 * k
        gain = PlanarImage(channels: 3, height: grid.height, width: grid.width, values: Array(record[at..<(at + 3 * g)]))
        at += 3 * g
        referenceX = Array(record[at..<(at + g)]); at += g
        referenceY = Array(record[at..<(at + g)]); at += g
        coverage = Array(record[at..<(at + g)]); at += g
        clipped = Array(record[at..<(at + 3 * g)]); at += 3 * g
        clippedBlack = Array(record[at..<(at + 3)])
    }

    init(curves: [ToneCurve], gain: PlanarImage, referenceX: [Float], referenceY: [Float], coverage: [Float], clipped: [Float],
         clippedBlack: [Float] = [0, 0, 0]) {
        self.curves = curves
        self.gain = gain
        self.referenceX = referenceX
        self.referenceY = referenceY
        self.coverage = coverage
        self.clipped = clipped
        self.clippedBlack = clippedBlack
    }
}

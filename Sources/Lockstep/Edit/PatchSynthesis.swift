import Foundation
import Tensor

/// The edit where the transport cannot carry it (new, turned or deformed content): synthesised
/// from the keyframe by appearance, as image analogies and EbSynth do. Each patch of the frame
/// takes the edit of the keyframe patch that looks most like it, wherever that lies.
///
/// - One patch per half-resolution pixel (8×8 px around its two pixels). Searched are only the
///   patches that the transport does not fully trust and whose transported source is further off
///   than noise and a misalignment of `ImageAlignment.matchSlack` explain: elsewhere no source
///   can do meaningfully better (on the pans, almost none are searched).
/// - The search is PatchMatch (Barnes et al. 2009), colour SSD over 5×5 patches, coarse to fine:
///   on the 4×4-pooled pictures it starts from the transport's correspondence (so confident
///   neighbours seed their uncertain surroundings), tries the neighbours' offsets 8, 4, 2, 1 and 1
///   steps away, and random offsets around the best at radii halving from the whole picture: a
///   global search by appearance. Each half-resolution patch then starts from its parent's answer
///   or its own transport's and searches within two pixels; each full-resolution patch takes the
///   best of the 3×3 whole-pixel offsets around that.
/// - A round reads the previous round's field only (Jacobi, not a raster scan), and the random
///   offsets are a hash of the position: however the rows are split between cores, the field is
///   the same on every run.
/// - Texture that does not boil: given the previous frame's field, each searched patch also tries
///   the source it had there, and keeps it unless another is better by more than noise and a
///   misalignment of `matchSlack` explain (the allowance). Near-equal sources no longer trade
///   places from frame to frame, each bringing its own strokes. Where the old source is itself
///   within the allowance, no other can be better by more, and the patch is not searched at all
///   (as a video codec reuses motion). The field then depends on the frames before it;
///   `EditPropagator` chains it over spans of frames, so that `--frames` chunks still equal the
///   whole run.
/// - Sources to a fraction of a pixel: each searched or kept source is refined by a parabola
///   through the costs one pixel either way, and read bilinearly. In whole pixels (2 px of the
///   frame at 720p, where the search runs on pictures pooled 2 × 2) a source held while the
///   content under it moved stayed put, then stepped.
/// - Each pixel takes the edit of the four nearest patches' sources (bilinear in the patch grid,
///   weighted by each source's predictability): overlapping patches vote, as in EbSynth, so there
///   is no seam between patches that point to different places.
/// - How far a patch takes its source's edit is that source's predictability (how far lookalikes
///   in the keyframe share its edit), not how closely the patch matches it. Attention answers
///   every query with the values of what it matches best: for content the transport does not
///   reach, the edit of the most similar keyframe patch is a better guess than the colour part
///   alone, even where the match is loose (weighting by the match's residual, as before, left
///   the evaluation's cockatoo 0.2–0.5 dB and a screen recording 2 dB lower, other real clips
///   within 0.16 dB). Where the edit belongs to a place (a sticker), the predictability is 0 and
///   the colour part stays alone.
struct PatchSynthesis: Sendable {
    static let radius = 2

    /// The search's pictures are at most this wide: frames wider are `scale`×`scale`-pooled
    /// first. Its work per frame is then bounded whatever the resolution, and a patch covers
    /// about the same share of the picture at any; its offsets are whole pixels there, `scale`
    /// pixels at full size.
    static let workingWidth = 640

    /// Pixels of the frame per pixel of the search's pictures.
    let scale: Int
    /// The frame's size, and the search's pictures'.
    let frameWidth: Int, frameHeight: Int
    let width: Int, height: Int
    /// The half-resolution grid; a half-resolution pixel u covers pixels 2u and 2u + 1.
    let gridWidth: Int, gridHeight: Int
    /// The keyframe's pooled picture, padded (`Padded`), and its full-size one.
    let key: Padded, fineKey: Padded, coarseKey: Padded

    /// Per half-resolution patch of the keyframe: how far its edit can be told from its looks
    /// (`predictability`). The synthesis takes a source's edit only that far. Empty where the
    /// synthesis does not contribute.
    let predictability: [Float]
    /// Per half-resolution patch of the keyframe: the offset to its lookalike (see
    /// `predictability`); empty where the synthesis does not contribute.
    let lookalikes: (dx: [Int32], dy: [Int32])

    /// Per pixel column of the frame: the two patch columns its votes come from, and the weight
    /// of the second (the same for every row and frame, so worked out once).
    let voteColumns: [(Int32, Int32, Float)]
    /// Per patch column: the pixel columns that take it as their first and as their second
    /// (consecutive, as `voteColumns` only grows along the row).
    let votersOf: [(first: Range<Int>, second: Range<Int>)]

    /// Whether the edit has structure for the synthesis to carry: in at least 1% of the keyframe,
    /// what of its edit is predictable from its looks departs from the colour part by 16 levels
    /// of 255 or more (so strokes over a small part of the picture count). Measured on the
    /// evaluation's keyframes and the bench's, this 99th percentile is 4.9–5.3 levels for grades
    /// (and a grade with a sticker): the colour look-up table's own error, which the synthesis
    /// would improve by about 1 dB at about twice the time per frame; 85–111 for stylisations.
    /// Below it no frame pays for the search.
    let contributes: Bool

    /// The keyframe's picture, what is carried of its edit (`EditPropagator.carriedEdit`: three
    /// planes of edit, then the colour part's share) and what of its edit the colour part does
    /// not explain (edited − original − colour part), full size.
    init(original: PlanarImage, carried: PlanarImage, unexplained: PlanarImage) {
        frameWidth = original.width
        frameHeight = original.height
        scale = max(1, original.width / Self.workingWidth)
        let original = scale > 1 ? original.averagePooled(scale) : original
        width = original.width
        height = original.height
        let pooled = original.averagePooled2()
        gridWidth = pooled.width
        gridHeight = pooled.height
        // Frame pixel x is search pixel (x − (s − 1)/2)/s, half-resolution pixel (that − ½)/2
        // (as `synthesise` reads its rows).
        let gw = gridWidth, s = Float(scale), shift = (s - 1) / 2 + s / 2
        voteColumns = (0..<frameWidth).map { x in
            let gx = min(max((Float(x) - shift) / (2 * s), 0), Float(gw - 1))
            let x0 = min(Int(gx), gw - 1), x1 = min(x0 + 1, gw - 1)
            return (Int32(x0), Int32(x1), gx - Float(x0))
        }
        var voters = [(first: Range<Int>, second: Range<Int>)](repeating: (0..<0, 0..<0), count: gw)
        for (x, (first, second, _)) in voteColumns.enumerated() {
            let a = Int(first), b = Int(second)
            voters[a].first = (voters[a].first.isEmpty ? x : voters[a].first.lowerBound)..<(x + 1)
            voters[b].second = (voters[b].second.isEmpty ? x : voters[b].second.lowerBound)..<(x + 1)
        }
        votersOf = voters
        key = Padded(pooled, radius: Self.radius)
        coarseKey = Padded(pooled.averagePooled2(), radius: Self.radius)
        fineKey = Padded(original, radius: Self.finePad)
        // The carried edit's three colour planes (not its fourth, the colour part's share), pooled.
        let pooledCarried = scale > 1 ? carried.averagePooled(scale) : carried
        let reduced = PlanarImage(channels: 3, height: pooledCarried.height, width: pooledCarried.width,
                                  values: pooledCarried.withUnsafeBufferPointer { Array($0[0..<(3 * pooledCarried.planeSize)]) })
        // A picture under two patches across at quarter resolution gives the search nothing to
        // work with (and no quarter-resolution grid at all under 4 px).
        guard gridWidth >= 4 * Self.radius + 2, gridHeight >= 4 * Self.radius + 2 else {
            predictability = []
            lookalikes = ([], [])
            contributes = false
            return
        }
        let departure = (scale > 1 ? unexplained.averagePooled(scale) : unexplained).averagePooled2()
        let n = departure.planeSize, d = departure.values
        let departing = (0..<n).map { u in max(abs(d[u]), abs(d[n + u]), abs(d[2 * n + u])) }
        // An edit that departs from the colour part that far nowhere near 1% of the keyframe (a
        // grade) cannot contribute however predictable it is: the lookalike search is skipped.
        guard departing.filter({ $0 >= 16 / 255 }).count * 100 >= n else {
            predictability = []
            lookalikes = ([], [])
            contributes = false
            return
        }
        (predictability, lookalikes) = Self.predictability(key: key, edit: reduced.averagePooled2(), width: gridWidth, height: gridHeight)
        let predictability = self.predictability
        let predictable = (0..<n).map { u in predictability[u] * departing[u] }
        contributes = predictable.filter { $0 >= 16 / 255 }.count * 100 >= n
    }

    /// Whether lookalikes were edited alike: each keyframe patch is matched with the most
    /// similar patch elsewhere in the keyframe (see `away`), and their edits compared,
    /// 1 − Σ|e_p − e_q|² / (Σ|e_p|² + Σ|e_q|² + noise): 1 where the two carry the same edit (a
    /// style, which is a function of what the content looks like; also where neither carries
    /// any), 0 where one carries an edit the other lacks (a sticker or a painted label, which
    /// belongs to its place and must not be copied onto content that merely looks like what
    /// is under it), in between as their edits correlate.
    static func predictability(key: Padded, edit: PlanarImage, width gw: Int, height gh: Int) -> ([Float], (dx: [Int32], dy: [Int32])) {
        let count = gw * gh, r = radius, side = Int32(2 * r + 1)
        // Lookalikes are sought a quarter of the picture away or more: an edit confined to a
        // smaller region (a sticker, a label, however large its inside) has no lookalike with
        // the same edit there, while a style, or an edit of all the sky, has.
        let away = max(side, Int32(min(gw, gh) / 4))
        var dx = (0..<count).map { u in u % gw + Int(away) < gw ? away : -away }, dy = [Int32](repeating: 0, count: count)
        patchMatch(frame: key, key: key, width: gw, height: gh, dx: &dx, dy: &dy, active: Array(0..<count), exclusion: away)
        let n = edit.planeSize, noise = Float(side * side * 3) * ImageAlignment.matchNoise * ImageAlignment.matchNoise
        var out = [Float](repeating: 1, count: count)
        edit.withUnsafeBufferPointer { e in
            for u in 0..<count {
                let ux = u % gw, uy = u / gw, qx = ux + Int(dx[u]), qy = uy + Int(dy[u])
                var difference: Float = 0, energy: Float = noise
                for j in -r...r { for i in -r...r {
                    let a = min(max(uy + j, 0), gh - 1) * gw + min(max(ux + i, 0), gw - 1)
                    let b = min(max(qy + j, 0), gh - 1) * gw + min(max(qx + i, 0), gw - 1)
                    for ch in 0..<3 {
                        let ea = e[ch * n + a], eb = e[ch * n + b]
                        difference += (ea - eb) * (ea - eb); energy += ea * ea + eb * eb
                    }
                } }
                out[u] = max(0, 1 - difference / energy)
            }
        }
        return (out, (dx, dy))
    }

    /// The full-resolution patch of half-resolution pixel u: 8×8 px, pixels 2u − 3 … 2u + 4 (its
    /// two pixels and three or four around them), read from pictures padded by 4.
    static let finePad = 4

    /// A pooled picture, pixel-major with four floats per pixel (RGB, 0), padded by `radius`
    /// replicated pixels on every side, so a patch is read without bounds checks.
    struct Padded: Sendable {
        let values: [Float]
        let stride: Int

        init(_ image: PlanarImage, radius r: Int) {
            let w = image.width, h = image.height, n = image.planeSize, pw = w + 2 * r
            stride = 4 * pw
            var values = [Float](repeating: 0, count: 4 * pw * (h + 2 * r) + 16)
            image.withUnsafeBufferPointer { sb in values.withUnsafeMutableBufferPointer { vb in
                let src = sb.baseAddress!, dst = vb.baseAddress!
                parallelChunks(h + 2 * r, minimumChunk: 16) { range in
                    for py in range {
                        let line = min(max(py &- r, 0), h &- 1) &* w
                        for px in 0..<pw {
                            let x = line &+ min(max(px &- r, 0), w &- 1), o = 4 &* (py &* pw &+ px)
                            dst[o] = src[x]; dst[o &+ 1] = src[n &+ x]; dst[o &+ 2] = src[2 &* n &+ x]
                        }
                    }
                }
            } }
            self.values = values
        }
    }

    /// The nearest-neighbour field of a frame: per half-resolution pixel, the offset to its source
    /// in the keyframe (whole pixels of the search's pictures, `scale` pixels of the frame) and
    /// how far its source's edit is taken (`quality`, in [0, 1]: the source's predictability).
    struct Field: Sendable {
        let width: Int, height: Int
        var dx: [Int32], dy: [Int32]
        var quality: [Float]
        /// At most how far the transport may be trusted: below 1 where the search found another,
        /// better source whose edit is predictable from its looks; 1 elsewhere.
        var transportCap: [Float]
        /// The source's fraction of a pixel (search pixels, within ±½) beyond `dx`, `dy`, where
        /// the search refined it; 0 elsewhere.
        var fractionX: [Float], fractionY: [Float]
    }

    /// The field for `frame`, starting from the transport's correspondence (`start`: offsets in
    /// whole pixels, `trust` its confidence, per half-resolution pixel). Only patches the
    /// transport does not fully trust are searched; the others keep the transport's offset.
    ///
    /// The search runs on the quarter-resolution pictures, then locally on the half-resolution
    /// ones; each answer is refined to the whole pixel on the search's full-size pictures (the
    /// 3×3 offsets around it, against the transport's). `previous`, the field of the frame
    /// before, makes the search keep its sources where no other is meaningfully better.
    func field(for frame: PlanarImage, start: (dx: [Int32], dy: [Int32]), trust: [Float], previous: Field? = nil) -> Field {
        let gw = gridWidth, gh = gridHeight, count = gw * gh, r = Self.radius
        let frame = scale > 1 ? frame.averagePooled(scale) : frame
        // The transport's own patches, on the search's full-size pictures: their costs, and what
        // noise and a misalignment of `matchSlack` would cost them (the allowance).
        let fine = Padded(frame, radius: Self.finePad)
        let energy = Self.fineEnergies(fine, width: width, height: height, gridWidth: gw, gridHeight: gh)
        let noise = Float(64 * 3) * ImageAlignment.matchNoise * ImageAlignment.matchNoise
        let slack = ImageAlignment.matchSlack * ImageAlignment.matchSlack
        let allowance = energy.map { noise + slack * $0 }
        var field = Field(width: gw, height: gh, dx: start.dx, dy: start.dy,
                          quality: [Float](repeating: 0, count: count), transportCap: [Float](repeating: 1, count: count),
                          fractionX: [Float](repeating: 0, count: count), fractionY: [Float](repeating: 0, count: count))
        var transportCost = [Float](repeating: 0, count: count)
        let w = Int32(width), h = Int32(height)
        fine.values.withUnsafeBufferPointer { fb in fineKey.values.withUnsafeBufferPointer { kb in
        field.dx.withUnsafeMutableBufferPointer { ox in field.dy.withUnsafeMutableBufferPointer { oy in
        transportCost.withUnsafeMutableBufferPointer { tc in
            let fine = FinePatches(frame: fb.baseAddress!, key: kb.baseAddress!, stride: fineKey.stride, gridWidth: gw, width: w, height: h)
            parallelChunks(count, minimumChunk: 256) { range in
                for u in range { (tc[u], ox[u], oy[u]) = fine.cost(u, ox[u], oy[u], bound: .infinity) }
            }
        } } } } }
        // Searched: patches the transport does not fully trust, and whose own source is further
        // off than noise and misalignment explain. Elsewhere no source can do meaningfully better.
        let unexplained = (0..<count).filter {
            trust[$0] < 1 - EditPropagator.negligibleConfidence && transportCost[$0] > allowance[$0]
        }
        // Nor where the source of the frame before is within the allowance: another would have to
        // be better by more than that to replace it (below), and none can be. Those keep it unsearched.
        let kept = previous.map { keptSources(previous: $0, fine: fine, unexplained: unexplained, allowance: allowance) }
            ?? (cost: [Float](repeating: .infinity, count: count), dx: [Int32](repeating: 0, count: count), dy: [Int32](repeating: 0, count: count))
        let active = unexplained.filter { kept.cost[$0] == .infinity }
        var dx = [Int32](repeating: 0, count: count), dy = dx
        let searched = { var mask = [Bool](repeating: false, count: count); for u in active { mask[u] = true }; return mask }()
        if !active.isEmpty {
            // The search runs on the quarter-resolution pictures (where the keyframe fits in a
            // core's cache), from the transport's offsets, then each half-resolution patch
            // refines its parent's answer (the 3×3 offsets around it, and its own transport's).
            let qw = gw / 2, qh = gh / 2
            var qx = [Int32](repeating: 0, count: qw * qh), qy = qx
            var parents = [Bool](repeating: false, count: qw * qh)
            for u in active {
                let c = min(u / gw / 2, qh - 1) * qw + min(u % gw / 2, qw - 1)
                if !parents[c] {
                    parents[c] = true
                    qx[c] = Int32((Float(field.dx[u]) / 4).rounded()); qy[c] = Int32((Float(field.dy[u]) / 4).rounded())
                }
            }
            let half = frame.averagePooled2()
            let coarse = Padded(half.averagePooled2(), radius: r)
            Self.patchMatch(frame: coarse, key: coarseKey, width: qw, height: qh, dx: &qx, dy: &qy,
                            active: (0..<(qw * qh)).filter { parents[$0] })
            // Each half-resolution patch starts from its parent's answer, or its own transport's
            // where that matches better, and searches locally: neighbours' offsets, and random
            // ones within two pixels.
            let padded = Padded(half, radius: r)
            padded.values.withUnsafeBufferPointer { fb in key.values.withUnsafeBufferPointer { kb in
            dx.withUnsafeMutableBufferPointer { ox in dy.withUnsafeMutableBufferPointer { oy in
            field.dx.withUnsafeBufferPointer { sx in field.dy.withUnsafeBufferPointer { sy in
            searched.withUnsafeBufferPointer { searched in qx.withUnsafeBufferPointer { qx in qy.withUnsafeBufferPointer { qy in
                let patches = Patches(frame: fb.baseAddress!, key: kb.baseAddress!, stride: key.stride, width: gw, height: gh)
                parallelChunks(count, minimumChunk: 256) { range in
                    for u in range {
                        let ux = Int32(u % gw), uy = Int32(u / gw)
                        // An offset of the search's full-size pictures, halved and kept inside the picture.
                        @inline(__always) func halved(_ dx: Int32, _ dy: Int32) -> (Int32, Int32) {
                            (min(max(Int32((Float(dx) / 2).rounded()), -ux), Int32(gw - 1) - ux),
                             min(max(Int32((Float(dy) / 2).rounded()), -uy), Int32(gh - 1) - uy))
                        }
                        let own = halved(sx[u], sy[u])
                        (ox[u], oy[u]) = kept.cost[u] < .infinity ? halved(kept.dx[u], kept.dy[u]) : own
                        guard searched[u] else { continue }
                        let c = min(u / gw / 2, qh - 1) * qw + min(u % gw / 2, qw - 1)
                        let parent = (min(max(2 &* qx[c], -ux), Int32(gw - 1) - ux), min(max(2 &* qy[c], -uy), Int32(gh - 1) - uy))
                        var ownCost = patches.distance(u, ux &+ own.0, uy &+ own.1, bound: .infinity)
                        let parentCost = patches.distance(u, ux &+ parent.0, uy &+ parent.1, bound: ownCost)
                        if parentCost < ownCost { ox[u] = parent.0; oy[u] = parent.1; ownCost = parentCost }
                        // The source it had in the previous frame, if that matches better still.
                        if let previous {
                            let kept = halved(previous.dx[u], previous.dy[u])
                            if patches.distance(u, ux &+ kept.0, uy &+ kept.1, bound: ownCost) < ownCost { ox[u] = kept.0; oy[u] = kept.1 }
                        }
                    }
                }
            } } } } } } } } }
            Self.patchMatch(frame: padded, key: key, width: gw, height: gh, dx: &dx, dy: &dy, active: active, steps: [2, 1], searchRadius: 2)
        }
        fine.values.withUnsafeBufferPointer { fb in fineKey.values.withUnsafeBufferPointer { kb in
        field.dx.withUnsafeMutableBufferPointer { ox in field.dy.withUnsafeMutableBufferPointer { oy in
        field.fractionX.withUnsafeMutableBufferPointer { fx in field.fractionY.withUnsafeMutableBufferPointer { fy in
        field.quality.withUnsafeMutableBufferPointer { oq in field.transportCap.withUnsafeMutableBufferPointer { oc in
            let fine = FinePatches(frame: fb.baseAddress!, key: kb.baseAddress!, stride: fineKey.stride, gridWidth: gw, width: w, height: h)
            parallelChunks(count, minimumChunk: 256) { range in
                for u in range {
                    let tx = ox[u], ty = oy[u]
                    var best = transportCost[u]
                    if kept.cost[u] < .infinity { best = kept.cost[u]; ox[u] = kept.dx[u]; oy[u] = kept.dy[u] }
                    if searched[u] {
                        // The search's answer to the whole pixel: the 3×3 offsets around it, the
                        // centre first; the ring only where the centre is further off than noise
                        // and misalignment explain (elsewhere no neighbour can do meaningfully better).
                        let hx = 2 &* dx[u], hy = 2 &* dy[u]
                        let (d, x, y) = fine.cost(u, hx, hy, bound: best)
                        if d < best { best = d; ox[u] = x; oy[u] = y }
                        if best > allowance[u] {
                            for j in Int32(-1)...1 { for i in Int32(-1)...1 where i != 0 || j != 0 {
                                let (d, x, y) = fine.cost(u, hx &+ i, hy &+ j, bound: best)
                                if d < best { best = d; ox[u] = x; oy[u] = y }
                            } }
                        }
                        // The previous frame's source stays unless this one is better by more
                        // than noise and misalignment explain (hysteresis: no boiling).
                        if let previous {
                            let (d, x, y) = fine.cost(u, previous.dx[u], previous.dy[u], bound: .infinity)
                            if d < best || (max(abs(x &- ox[u]), abs(y &- oy[u])) > 1 && d <= best + allowance[u]) {
                                best = d; ox[u] = x; oy[u] = y
                            }
                        }
                    }
                    // The searched and kept sources to a fraction of a pixel: the vertex of the
                    // parabola through the costs one pixel either way. Whole pixels of the search's
                    // pictures are 2 px at 720p: a source held while the content under it moves
                    // would stay put, then step.
                    if searched[u] || kept.cost[u] < .infinity {
                        let cx = ox[u], cy = oy[u]
                        let (l, lx, _) = fine.cost(u, cx &- 1, cy, bound: .infinity), (r, rx, _) = fine.cost(u, cx &+ 1, cy, bound: .infinity)
                        let (t, _, ty) = fine.cost(u, cx, cy &- 1, bound: .infinity), (b, _, by) = fine.cost(u, cx, cy &+ 1, bound: .infinity)
                        let curvatureX = l - 2 * best + r, curvatureY = t - 2 * best + b
                        if lx == cx &- 1 && rx == cx &+ 1 && curvatureX > 0 { fx[u] = min(max(0.5 * (l - r) / curvatureX, -0.5), 0.5) }
                        if ty == cy &- 1 && by == cy &+ 1 && curvatureY > 0 { fy[u] = min(max(0.5 * (t - b) / curvatureY, -0.5), 0.5) }
                    }
                    // The source's edit counts as far as lookalikes in the keyframe share it.
                    let sx = min(max((2 &* (u % gw) &+ Int(ox[u])) / 2, 0), gw &- 1)
                    let sy = min(max((2 &* (u / gw) &+ Int(oy[u])) / 2, 0), gh &- 1)
                    let predictable = predictability[sy &* gw &+ sx]
                    oq[u] = predictable
                    // A source more than a pixel from the transport's is another place, not the
                    // same one refined, and it matched better: the two compete by their costs
                    // (a softmax at the allowance's scale), which the search's source wins.
                    if abs(ox[u] &- tx) > 1 || abs(oy[u] &- ty) > 1 {
                        let yields = 1 - 1 / (1 + exp(min(0.5 * (transportCost[u] - best) / allowance[u], 80)))
                        oc[u] = 1 - predictable * yields
                    }
                }
            }
        } } } } } } } }
        return field
    }

    /// Of the `unexplained` patches, those whose source in the frame before still matches within
    /// the allowance: its cost and offset (as `FinePatches.cost` clamps it); infinity elsewhere.
    func keptSources(previous: Field, fine: Padded, unexplained: [Int], allowance: [Float]) -> (cost: [Float], dx: [Int32], dy: [Int32]) {
        let count = gridWidth * gridHeight
        var cost = [Float](repeating: .infinity, count: count), dx = [Int32](repeating: 0, count: count), dy = dx
        fine.values.withUnsafeBufferPointer { fb in fineKey.values.withUnsafeBufferPointer { kb in
        cost.withUnsafeMutableBufferPointer { kc in dx.withUnsafeMutableBufferPointer { kx in dy.withUnsafeMutableBufferPointer { ky in
        unexplained.withUnsafeBufferPointer { list in
            let patches = FinePatches(frame: fb.baseAddress!, key: kb.baseAddress!, stride: fineKey.stride, gridWidth: gridWidth,
                                      width: Int32(width), height: Int32(height))
            parallelChunks(list.count, minimumChunk: 256) { range in
                for a in range {
                    let u = list[a]
                    let (d, x, y) = patches.cost(u, previous.dx[u], previous.dy[u], bound: allowance[u])
                    if d < allowance[u] { kc[u] = d; kx[u] = x; ky[u] = y }
                }
            }
        } } } } } }
        return (cost, dx, dy)
    }

    /// The frame's and the keyframe's padded full-resolution pictures.
    struct FinePatches {
        let frame: UnsafePointer<Float>, key: UnsafePointer<Float>
        let stride: Int, gridWidth: Int
        let width: Int32, height: Int32

        /// The cost of half-resolution pixel u's 8×8 patch against the keyframe's `offset` away
        /// (whole pixels; the source's centre kept where its whole patch lies in the padding),
        /// with the offset as clamped.
        @inline(__always)
        func cost(_ u: Int, _ sx: Int32, _ sy: Int32, bound: Float) -> (Float, Int32, Int32) {
            let cx = 2 &* Int32(u % gridWidth), cy = 2 &* Int32(u / gridWidth)
            let x = min(max(cx &+ sx, 0), width &- 2), y = min(max(cy &+ sy, 0), height &- 2)
            let d = PatchSynthesis.fineDistance(frame + (Int(cy) &* stride &+ 4 &* Int(cx)), key + (Int(y) &* stride &+ 4 &* Int(x)),
                                                stride: stride, bound: bound)
            return (d, x &- cx, y &- cy)
        }
    }

    /// Per half-resolution pixel, over its full-resolution patch (pixels and channels), the
    /// energy Σ (∂x I)² + (∂y I)² (central differences): what a misalignment of one pixel costs
    /// the patch, to first order. Sums over rows of patches first, then over columns of those (a
    /// patch is 8×8, its step 2).
    static func fineEnergies(_ fine: Padded, width w: Int, height h: Int, gridWidth gw: Int, gridHeight gh: Int) -> [Float] {
        // Per pixel row (all h of them), per patch column.
        var rows = [Float](repeating: 0, count: h * gw)
        let pad = finePad, stride = fine.stride
        fine.values.withUnsafeBufferPointer { vb in rows.withUnsafeMutableBufferPointer { rb in
            let base = UnsafeRawPointer(vb.baseAddress!), out = rb.baseAddress!
            parallelChunks(h, minimumChunk: 16) { range in
              // Each pixel's energy once a row (a patch's eight are summed from there): every
              // pixel lies in four patches.
              withUnsafeTemporaryAllocation(of: Float.self, capacity: w) { terms in
                let term = terms.baseAddress!
                for y in range {
                    // Row y of the padded picture, its pixels as SIMD4 (the fourth lane is 0).
                    let row = base + 4 &* ((y &+ pad) &* stride &+ 4 &* pad)
                    for x in 0..<w {
                        let left = row.loadUnaligned(fromByteOffset: 16 &* max(x &- 1, 0), as: SIMD4<Float>.self)
                        let right = row.loadUnaligned(fromByteOffset: 16 &* min(x &+ 1, w &- 1), as: SIMD4<Float>.self)
                        let up = row.loadUnaligned(fromByteOffset: 16 &* x &- (y > 0 ? 4 &* stride : 0), as: SIMD4<Float>.self)
                        let down = row.loadUnaligned(fromByteOffset: 16 &* x &+ (y < h &- 1 ? 4 &* stride : 0), as: SIMD4<Float>.self)
                        let gx = 0.5 * (right - left), gy = 0.5 * (down - up)
                        term[x] = (gx * gx + gy * gy).sum()
                    }
                    for u in 0..<gw {
                        var sum: Float = 0
                        for x in (2 &* u &- 3)...(2 &* u &+ 4) { sum += term[min(max(x, 0), w &- 1)] }
                        out[y &* gw &+ u] = sum
                    }
                }
              }
            }
        } }
        var energy = [Float](repeating: 0, count: gw * gh)
        rows.withUnsafeBufferPointer { rb in energy.withUnsafeMutableBufferPointer { eb in
            let r = rb.baseAddress!, e = eb.baseAddress!
            parallelChunks(gh, minimumChunk: 8) { range in
                for v in range {
                    for u in 0..<gw {
                        var sum: Float = 0
                        for y in (2 &* v &- 3)...(2 &* v &+ 4) { sum += r[min(max(y, 0), h &- 1) &* gw &+ u] }
                        e[v &* gw &+ u] = sum
                    }
                }
            }
        } }
        return energy
    }

    /// Σ of squared differences over an 8×8 patch of 4-float pixels from its top-left pixel's
    /// centre pointer − (3, 3), stopping early once past `bound`.
    @inline(__always)
    static func fineDistance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, stride: Int, bound: Float) -> Float {
        // `a` and `b` point at the patch's pixel (3, 3) in padded coordinates − 4, i.e. the padded
        // pictures' (cx + 1, cy + 1) is the patch's top-left.
        let pa0 = UnsafeRawPointer(a + (stride &+ 4)), pb0 = UnsafeRawPointer(b + (stride &+ 4)), rowBytes = 4 &* stride
        // Squares gathered in vector lanes (even pixels in one, odd in the other), their sum
        // taken (and checked against the bound) after each half of the patch. One 4-float
        // load per pixel: 8-float loads here were compiled into 8-byte pieces and shuffles.
        var total: Float = 0
        for half in 0..<2 {
            var even = SIMD4<Float>(), odd = SIMD4<Float>()
            for j in (4 &* half)..<(4 &* half &+ 4) {
                let pa = pa0 + j &* rowBytes, pb = pb0 + j &* rowBytes
                for o in Swift.stride(from: 0, to: 128, by: 32) {
                    let d0 = pa.loadUnaligned(fromByteOffset: o, as: SIMD4<Float>.self) - pb.loadUnaligned(fromByteOffset: o, as: SIMD4<Float>.self)
                    let d1 = pa.loadUnaligned(fromByteOffset: o &+ 16, as: SIMD4<Float>.self)
                        - pb.loadUnaligned(fromByteOffset: o &+ 16, as: SIMD4<Float>.self)
                    even.addProduct(d0, d0)
                    odd.addProduct(d1, d1)
                }
            }
            let four = even + odd, two = four.lowHalf + four.highHalf
            total += two[0] + two[1]  // as `lanesSum` of the two as one 8-lane vector
            if total >= bound { return total }
        }
        return total
    }

    /// The transport's correspondence at each half-resolution pixel's centre (bilinear between
    /// feature-grid samples, as `Transport.RowCarrier` interpolates it): offsets in whole
    /// pixels, and the confidence.
    func start(from field: CorrespondenceField, factor: Int, origin: Float) -> (dx: [Int32], dy: [Int32], trust: [Float]) {
        let gw = gridWidth, gh = gridHeight, fw = field.width, fh = field.height, k = Float(factor)
        var dx = [Int32](repeating: 0, count: gw * gh), dy = dx, trust = [Float](repeating: 0, count: gw * gh)
        // Search pixel X sits at frame pixel s·X + (s − 1)/2; a half-resolution pixel u at 2u + ½.
        let s = Float(scale)
        func centre(_ u: Int) -> Float { s * (2 * Float(u) + 0.5) + (s - 1) / 2 }
        for v in 0..<gh {
            let fy = min(max((centre(v) - origin) / k, 0), Float(fh - 1))
            let y0 = min(Int(fy), fh - 1), y1 = min(y0 + 1, fh - 1), ay = fy - Float(y0)
            for u in 0..<gw {
                let fx = min(max((centre(u) - origin) / k, 0), Float(fw - 1))
                let x0 = min(Int(fx), fw - 1), x1 = min(x0 + 1, fw - 1), ax = fx - Float(x0)
                func at(_ values: [Float], _ minus: (Int, Int) -> Float) -> Float {
                    (1 - ay) * ((1 - ax) * (values[y0 * fw + x0] - minus(x0, y0)) + ax * (values[y0 * fw + x1] - minus(x1, y0)))
                        + ay * ((1 - ax) * (values[y1 * fw + x0] - minus(x0, y1)) + ax * (values[y1 * fw + x1] - minus(x1, y1)))
                }
                // Displacement in the search's pixels, to the nearest (held within the picture's
                // extent, which the search clamps to anyway, so that no field can overflow it).
                dx[v * gw + u] = Self.wholeOffset(k * at(field.x) { x, _ in Float(x) } / s, within: gw)
                dy[v * gw + u] = Self.wholeOffset(k * at(field.y) { _, y in Float(y) } / s, within: gh)
                trust[v * gw + u] = at(field.confidence) { _, _ in 0 }
            }
        }
        return (dx, dy, trust)
    }

    /// `offset` rounded to a whole number of pixels and held within ±`extent` (0 if not finite).
    static func wholeOffset(_ offset: Float, within extent: Int) -> Int32 {
        guard offset.isFinite else { return 0 }
        return Int32(min(max(offset.rounded(), -Float(extent)), Float(extent)))
    }

    /// PatchMatch over the `active` pixels of a `width` × `height` picture (`dx`, `dy`: the
    /// offsets to start from, updated), patches 5×5. Rounds are Jacobi steps (see the type's
    /// comment), so the answer does not depend on how the work is split.
    static func patchMatch(frame: Padded, key: Padded, width: Int, height: Int, dx: inout [Int32], dy: inout [Int32], active: [Int],
                           steps: [Int] = [8, 4, 2, 1, 1], searchRadius: Int? = nil, exclusion: Int32 = 0) {
        guard !active.isEmpty else { return }
        let count = width * height
        for u in 0..<count {
            let ux = Int32(u % width), uy = Int32(u / width)
            dx[u] = min(max(dx[u], -ux), Int32(width - 1) - ux)
            dy[u] = min(max(dy[u], -uy), Int32(height - 1) - uy)
        }
        var cost = [Float](repeating: .infinity, count: count)
        frame.values.withUnsafeBufferPointer { fb in key.values.withUnsafeBufferPointer { kb in
            // A constant: a captured variable would be checked for exclusive access at every use.
            let patches = Patches(frame: fb.baseAddress!, key: kb.baseAddress!, stride: key.stride, width: width, height: height,
                                  exclusion: exclusion)
            for u in active { cost[u] = patches.distance(u, Int32(u % width) &+ dx[u], Int32(u / width) &+ dy[u], bound: .infinity) }
            let radius = Int32(searchRadius ?? max(width, height))
            for (round, step) in steps.enumerated() {
                var nextX = dx, nextY = dy, nextCost = cost
                dx.withUnsafeBufferPointer { px in dy.withUnsafeBufferPointer { py in cost.withUnsafeBufferPointer { pc in
                nextX.withUnsafeMutableBufferPointer { nx in nextY.withUnsafeMutableBufferPointer { ny in
                nextCost.withUnsafeMutableBufferPointer { nc in
                active.withUnsafeBufferPointer { list in
                    let previous = (px.baseAddress!, py.baseAddress!, pc.baseAddress!)
                    let next = (nx.baseAddress!, ny.baseAddress!, nc.baseAddress!)
                    parallelChunks(list.count, minimumChunk: 64) { range in
                        for a in range {
                            patches.improve(list[a], round: round, step: step, searchRadius: radius, previous: previous, next: next)
                        }
                    }
                } } } } } } }
                dx = nextX; dy = nextY; cost = nextCost
            }
        } }
    }

    /// The frame's and the keyframe's padded pooled pictures, and one round of PatchMatch.
    struct Patches {
        let frame: UnsafePointer<Float>, key: UnsafePointer<Float>
        let stride: Int, width: Int, height: Int
        /// Offsets shorter than this (either way) are not candidates: a picture matched with
        /// itself must find another place.
        let exclusion: Int32

        init(frame: UnsafePointer<Float>, key: UnsafePointer<Float>, stride: Int, width: Int, height: Int, exclusion: Int32 = 0) {
            self.frame = frame; self.key = key; self.stride = stride
            self.width = width; self.height = height; self.exclusion = exclusion
        }

        /// The cost of the frame's patch at u against the keyframe's at (sx, sy).
        @inline(__always)
        func distance(_ u: Int, _ sx: Int32, _ sy: Int32, bound: Float) -> Float {
            let ux = u % width, uy = u / width
            let a = frame + (uy &* stride &+ 4 &* ux)
            let b = key + (Int(sy) &* stride &+ 4 &* Int(sx))
            return PatchSynthesis.distance(a, b, stride: stride, bound: bound)
        }

        typealias State = (dx: UnsafePointer<Int32>, dy: UnsafePointer<Int32>, cost: UnsafePointer<Float>)
        typealias Output = (dx: UnsafeMutablePointer<Int32>, dy: UnsafeMutablePointer<Int32>, cost: UnsafeMutablePointer<Float>)

        /// Patch u's best offset after trying its neighbours' (`step` away) and random ones.
        @inline(__always)
        func improve(_ u: Int, round: Int, step: Int, searchRadius: Int32, previous: State, next: Output) {
            let gw = Int32(width), gh = Int32(height)
            let ux = Int32(u % width), uy = Int32(u / width)
            // The best so far passed along, not captured: a local function's captured variables
            // were checked for exclusive access at every use (4% of a stylised edit's time).
            var best = (dx: previous.dx[u], dy: previous.dy[u], cost: previous.cost[u])
            @inline(__always) func attempt(_ ox: Int32, _ oy: Int32, _ best: inout (dx: Int32, dy: Int32, cost: Float)) {
                let sx = min(max(ux &+ ox, 0), gw &- 1), sy = min(max(uy &+ oy, 0), gh &- 1)
                if sx &- ux == best.dx && sy &- uy == best.dy { return }
                if max(abs(sx &- ux), abs(sy &- uy)) < exclusion { return }
                let d = distance(u, sx, sy, bound: best.cost)
                if d < best.cost { best = (sx &- ux, sy &- uy, d) }
            }
            // Propagation: the neighbours' offsets, `step` away on each side.
            let s = Int32(step)
            if ux >= s { attempt(previous.dx[u &- step], previous.dy[u &- step], &best) }
            if ux &+ s < gw { attempt(previous.dx[u &+ step], previous.dy[u &+ step], &best) }
            if uy >= s { attempt(previous.dx[u &- step &* width], previous.dy[u &- step &* width], &best) }
            if uy &+ s < gh { attempt(previous.dx[u &+ step &* width], previous.dy[u &+ step &* width], &best) }
            // Random search around the best, at radii halving from the whole picture.
            var radius = searchRadius
            var draw: UInt32 = 0
            while radius >= 1 {
                let h = PatchSynthesis.hash(UInt32(truncatingIfNeeded: u), UInt32(truncatingIfNeeded: round) &* 64 &+ draw)
                let span = UInt32(2 &* radius &+ 1)
                let rx = Int32(h % span) &- radius, ry = Int32((h / span) % span) &- radius
                attempt(best.dx &+ rx, best.dy &+ ry, &best)
                radius /= 2
                draw &+= 1
            }
            next.dx[u] = best.dx; next.dy[u] = best.dy; next.cost[u] = best.cost
        }
    }

    /// Σ of squared differences over a 5×5 patch of 4-float pixels (the fourth is 0 in both),
    /// stopping early once past `bound`. One 4-float load per pixel: SIMD8 loads here were
    /// compiled into 8-byte pieces and shuffles.
    @inline(__always)
    static func distance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, stride: Int, bound: Float) -> Float {
        let rowBytes = 4 &* stride
        var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>()
        @inline(__always) func row(_ j: Int) {
            let pa = UnsafeRawPointer(a) + j &* rowBytes, pb = UnsafeRawPointer(b) + j &* rowBytes
            let d0 = pa.loadUnaligned(as: SIMD4<Float>.self) - pb.loadUnaligned(as: SIMD4<Float>.self)
            let d1 = pa.loadUnaligned(fromByteOffset: 16, as: SIMD4<Float>.self) - pb.loadUnaligned(fromByteOffset: 16, as: SIMD4<Float>.self)
            let d2 = pa.loadUnaligned(fromByteOffset: 32, as: SIMD4<Float>.self) - pb.loadUnaligned(fromByteOffset: 32, as: SIMD4<Float>.self)
            let d3 = pa.loadUnaligned(fromByteOffset: 48, as: SIMD4<Float>.self) - pb.loadUnaligned(fromByteOffset: 48, as: SIMD4<Float>.self)
            let d4 = pa.loadUnaligned(fromByteOffset: 64, as: SIMD4<Float>.self) - pb.loadUnaligned(fromByteOffset: 64, as: SIMD4<Float>.self)
            acc0.addProduct(d0, d0); acc1.addProduct(d1, d1)
            acc0.addProduct(d2, d2); acc1.addProduct(d3, d3)
            acc0.addProduct(d4, d4)
        }
        @inline(__always) func total() -> Float { let s = acc0 + acc1; return (s[0] + s[1]) + (s[2] + s[3]) }
        // The bound checked after the second row and at the end: most candidates are far off,
        // and a sum across lanes costs as much as a row.
        row(0); row(1)
        let partial = total()
        if partial >= bound { return partial }
        row(2); row(3); row(4)
        return total()
    }

    /// A well-mixed 32-bit hash of two numbers (the random search's draws).
    @inline(__always)
    static func hash(_ a: UInt32, _ b: UInt32) -> UInt32 {
        var h = a &* 0x9E37_79B1 ^ (b &* 0x85EB_CA77 &+ 0x27D4_EB2F)
        h ^= h >> 15; h &*= 0x2C1B_3C6D
        h ^= h >> 12; h &*= 0x297A_2D39
        h ^= h >> 15
        return h
    }

    /// Row `y` of the synthesised edit: each pixel's four nearest patches vote with their
    /// sources' values of `carried` (4 channels interleaved, full size: the edit and its colour
    /// share; read bilinearly at the sources' fractions of a pixel), weighted by bilinear
    /// weight × `Field.quality`. Writes the 4 planes (`w` apart),
    /// the quality, and the cap on the transport's trust (`Field.transportCap`, bilinear).
    @inline(__always)
    func synthesise(row y: Int, field: Field, carried: UnsafePointer<Float16>, into out: UnsafeMutablePointer<Float>,
                    quality: UnsafeMutablePointer<Float>, cap: UnsafeMutablePointer<Float>, skip: UnsafePointer<Float>) {
        let w = frameWidth, h = frameHeight, gw = field.width, gh = field.height, scale = self.scale
        // Frame pixel x is search pixel (x − (s − 1)/2)/s, half-resolution pixel (that − ½)/2.
        let s = Float(scale), shift = (s - 1) / 2 + s / 2
        let gy = min(max((Float(y) - shift) / (2 * s), 0), Float(gh - 1))
        let y0 = min(Int(gy), gh - 1), y1 = min(y0 + 1, gh - 1), ay = gy - Float(y0)
        field.dx.withUnsafeBufferPointer { fx in field.dy.withUnsafeBufferPointer { fy in field.quality.withUnsafeBufferPointer { fq in
        field.transportCap.withUnsafeBufferPointer { fcap in
        // Per patch of the two patch rows the row lies between: its offset across, the two
        // source rows in `carried`, the fractions between, and its vote's weight, quality and
        // cap, so that a pixel's vote is two clamps, four loads and its sums.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 6 * gw) { offsets in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 10 * gw) { patches in
            let across = offsets.baseAddress!, above = across + 2 &* gw, below = above + 2 &* gw
            let weight = patches.baseAddress!, q = weight + 2 &* gw, c = q + 2 &* gw, betweenX = c + 2 &* gw, betweenY = betweenX + 2 &* gw
            for k in 0..<2 {
                let row = k == 0 ? y0 : y1
                for i in 0..<gw {
                    let u = row &* gw &+ i, at = k &* gw &+ i
                    // The source's offset in frame pixels, and the two columns and rows it lies between.
                    let ox = s * (Float(fx[u]) + field.fractionX[u]), oy = s * (Float(fy[u]) + field.fractionY[u])
                    let wholeX = ox.rounded(.down), wholeY = oy.rounded(.down)
                    across[at] = Int(wholeX); betweenX[at] = ox - wholeX
                    above[at] = min(max(y &+ Int(wholeY), 0), h &- 1) &* w
                    below[at] = min(max(y &+ Int(wholeY) &+ 1, 0), h &- 1) &* w
                    betweenY[at] = oy - wholeY
                    weight[at] = fq[u] + 1e-6
                    q[at] = fq[u]
                    c[at] = fcap[u]
                }
            }
            // Patch by patch, over the consecutive pixels each votes for, so that its source row
            // is read in order: row y0's patches, then y1's, the left one of a pixel's two before
            // the right, as each pixel's votes were always summed.
            withUnsafeTemporaryAllocation(of: SIMD4<Float>.self, capacity: w) { sums in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * w) { scalars in
                let v = sums.baseAddress!, mass = scalars.baseAddress!, qs = mass + w, cs = qs + w
                v.initialize(repeating: .zero, count: w)
                mass.initialize(repeating: 0, count: 3 * w)
                let trusted = 1 - EditPropagator.negligibleConfidence
                for k in 0..<2 {
                    let by = k == 0 ? 1 - ay : ay
                    for i in 0..<gw {
                        let at = k &* gw &+ i
                        let shift = across[at], tx = betweenX[at], ty = betweenY[at], up = above[at], down = below[at]
                        let pw = weight[at], pq = q[at], pc = c[at]
                        for second in 0..<2 {
                            for x in second == 1 ? votersOf[i].second : votersOf[i].first where skip[x] < trusted {
                                let ax = voteColumns[x].2
                                let b = (second == 1 ? ax : 1 - ax) * by
                                // The source, between four pixels of `carried`.
                                let left = min(max(x &+ shift, 0), w &- 1), right = min(max(x &+ shift &+ 1, 0), w &- 1)
                                @inline(__always) func pixel(_ line: Int, _ column: Int) -> SIMD4<Float> {
                                    SIMD4<Float>(UnsafeRawPointer(carried + 4 &* (line &+ column)).loadUnaligned(as: SIMD4<Float16>.self))
                                }
                                let top = (1 - tx) * pixel(up, left) + tx * pixel(up, right)
                                let bottom = (1 - tx) * pixel(down, left) + tx * pixel(down, right)
                                let vw = b * pw
                                v[x] += vw * ((1 - ty) * top + ty * bottom)
                                mass[x] += vw
                                qs[x] += b * pq
                                cs[x] += b * pc
                            }
                        }
                    }
                }
                for x in 0..<w {
                    // Nothing to fill where the transport is trusted.
                    guard skip[x] < trusted else {
                        out[x] = 0; out[w &+ x] = 0; out[2 &* w &+ x] = 0; out[3 &* w &+ x] = 0; quality[x] = 0; cap[x] = 1
                        continue
                    }
                    let value = v[x] / mass[x]
                    out[x] = value[0]; out[w &+ x] = value[1]; out[2 &* w &+ x] = value[2]; out[3 &* w &+ x] = value[3]
                    quality[x] = qs[x]
                    cap[x] = cs[x]
                }
            } }
        } }
        } } } }
    }
}

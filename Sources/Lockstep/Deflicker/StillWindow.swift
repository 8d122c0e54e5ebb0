import Foundation
import Tensor

/// With a guide, after `ToneWindow`: where the guide holds still, each corrected frame brought to
/// the frames before it by a smooth field, as far as the field is the correction's error.
///
/// The correction's error is not only a tone: the gain field fitted on each frame errs anew in
/// every frame, and its curves err with the picture's brightness, which changes within a frame.
/// Where the camera holds still that is what flickers (the corpus's `motion.mov` graded under
/// the local gain field: an E_warp ratio of 1.59 to the truth). Where a pixel's guide shows in a
/// frame of the window what it shows now (within `tolerance`, every channel), the content is the
/// same, and the difference between the two frames' outputs there is the error, moved by the
/// change of guide value times the frame's own tone's slope. Those differences, summed over
/// cells of `cell` sampled pixels and smoothed over their neighbours, make a field that is added
/// to the frame:
/// - less its mean over the frame: the frame's tone is `ToneWindow`'s, whose own share keeps a
///   slow change of the picture's level (a sketch's paper darkening over a second), which a
///   window of the frames before would drag behind;
/// - each frame of the window counted in a cell as far as the cell holds still in it (the share
///   of its samples that do): where the picture moves, the few samples whose guide shows by
///   chance what it showed there are another content's (a sketch's stroke beside its paper), and
///   their difference is the current frame's own detail, not its error;
/// - scaled, per channel, by the share of it that the two halves of a fine checkerboard (squares
///   of `square` sampled pixels) agree on, (S − N) / S as `ToneReliability` has it. The
///   correction's error is smooth and shows in both; an edit that answers to what moves
///   elsewhere in the frame (a pencil sketch's strokes over still pixels change when a leaf
///   nearby moves) changes pixel by pixel, and the halves differ: on the corpus's `tree.avi`'s
///   sketch the share is about 0.13, on `motion.mov`'s grade 0.98 (measured in Python on the
///   outputs, before the step was built);
/// - and by the share of it that is new in every frame (`Sums.newShare`): an edit that answers
///   to what lies nearby (a stylisation's smoothing spreads a moving subject over the still
///   background beside it) leaves a trail that changes as smoothly as the picture, smooth in
///   space too, which the halves cannot tell from the correction's error and the frames before
///   would hold back (the stylised cockatoo: −0.5 dB without it). As `ToneReliability` does
///   for the tone.
///
/// Only the frames before count (up to `DeflickerPlan.window`, in the shot), as `ToneWindow`
/// left them: a run that starts inside a shot sees the same once given
/// `DeflickerPlan.recalled(before:)`. Each frame is kept sampled (every `stride`-th pixel: the
/// plan takes every other pixel of the analysis's size) in half precision: 12 bytes a sample,
/// 10 MB for a window at 720p or 1080p.
public struct StillWindow {
    public init() {}

    /// Within this of a pixel's guide value in another frame (every channel), it shows the same:
    /// two levels of 255, the guide's own rounding and a little noise.
    public static let tolerance: Float = 2 / 255
    /// Cells of this many samples a side: at every other pixel of the analysis's size, 16 of its
    /// pixels, half the appearance grid's (the gain field's), since the curves' error changes with
    /// the picture's brightness within a gain cell. One cell is one vector of eight samples.
    public static let cell = 8
    /// The checkerboard's squares, in samples: four to a cell's side.
    public static let square = 2
    /// A cell's mean leans to none as if this many of its 64 samples in each frame had shown no
    /// difference: a cell with a handful of still pixels says little.
    static let prior: Float = 1

    /// A frame as kept: its guide's and its output's samples, three planes each.
    struct Sampled {
        var index: Int
        var guide: [Float16], value: [Float16]
    }

    private var frames: [Sampled] = []
    /// Storage reused from frame to frame (a fresh allocation of megabytes is pages the kernel
    /// zeroes): a frame that left the window, the current frame's samples and their slopes.
    private var spare: Sampled?
    private var guides = [Float](), values = [Float](), slopes = [Float]()

    /// Brings `output` (frame `index`, corrected, its tone `tone` against `guide` as
    /// `ToneWindow` measured it) to the frames from `lower` before it where the guide holds still,
    /// and keeps its samples for the frames after. `stride`: every `stride`-th pixel along both
    /// axes is sampled.
    public mutating func steady(_ output: inout PlanarImage, guide: PlanarImage, tone: ToneRelation, index: Int, lower: Int, stride: Int) {
        precondition(output.channels == 3 && guide.count == output.count && stride > 0)
        let sw = (output.width + stride - 1) / stride, sh = (output.height + stride - 1) / stride, count = 3 * sw * sh
        for (k, frame) in frames.enumerated().reversed() where !(frame.index >= lower && frame.index < index) {
            spare = frames.remove(at: k)
        }
        if guides.count != count { guides = [Float](repeating: 0, count: count); values = guides }
        Self.sample(output, guide: guide, stride: stride, guides: &guides, values: &values)
        defer {
            var kept = spare.flatMap { $0.guide.count == count ? $0 : nil }
                ?? Sampled(index: index, guide: [Float16](repeating: 0, count: count), value: [Float16](repeating: 0, count: count))
            spare = nil
            kept.index = index
            Self.halve(guides, into: &kept.guide)
            Self.halve(values, into: &kept.value)
            frames.append(kept)
        }
        guard !frames.isEmpty else { return }
        if slopes.count != count { slopes = [Float](repeating: 0, count: count) }
        Self.slopes(tone, of: guides, into: &slopes)
        let sums = Self.differences(current: (guides, values), slopes: slopes, window: frames, width: sw, height: sh)
        Self.add(sums.field(frames: frames.count), to: &output, stride: stride)
    }

    /// Every `stride`-th pixel of `guide` and `picture` into `guides` and `values`, planes of
    /// `ceil(w / stride)` × `ceil(h / stride)`.
    static func sample(_ picture: PlanarImage, guide: PlanarImage, stride: Int, guides: inout [Float], values: inout [Float]) {
        let w = picture.width, h = picture.height, sw = (w + stride - 1) / stride, sh = (h + stride - 1) / stride
        precondition(guides.count == 3 * sw * sh && values.count == guides.count)
        picture.withUnsafeBufferPointer { p in guide.withUnsafeBufferPointer { q in
        guides.withUnsafeMutableBufferPointer { gb in values.withUnsafeMutableBufferPointer { vb in
            let p = p.baseAddress!, q = q.baseAddress!, g = gb.baseAddress!, v = vb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 3) { c in
                for sy in 0..<sh {
                    let row = c &* w &* h &+ sy &* stride &* w, out = (c &* sh &+ sy) &* sw
                    for sx in 0..<sw {
                        g[out &+ sx] = q[row &+ sx &* stride]
                        v[out &+ sx] = p[row &+ sx &* stride]
                    }
                }
            }
        } } } }
    }

    /// `values` in half precision, eight at a time, into `out` (as many).
    static func halve(_ values: [Float], into out: inout [Float16]) {
        precondition(out.count == values.count)
        values.withUnsafeBufferPointer { vb in out.withUnsafeMutableBufferPointer { ob in
            let v = vb.baseAddress!, o = ob.baseAddress!
            var i = 0
            while i &+ 8 <= values.count {
                UnsafeMutableRawPointer(o + i).storeBytes(of: SIMD8<Float16>(UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)),
                                                          as: SIMD8<Float16>.self)
                i &+= 8
            }
            while i < values.count { o[i] = Float16(v[i]); i &+= 1 }
        } }
    }

    /// Per sample and channel, the slope of the frame's tone (output per guide value) at its guide
    /// value: the tone linear between its known levels, level by level, flat beyond them.
    static func slopes(_ tone: ToneRelation, of guide: [Float], into slopes: inout [Float]) {
        precondition(slopes.count == guide.count)
        let levels = ToneRelation.levels, last = levels - 1, plane = guide.count / 3
        var segments = [Float](repeating: 0, count: 3 * last)
        for c in 0..<3 {
            let known = (0...last).filter { tone.values[c * levels + $0].isFinite }
            for (a, b) in zip(known, known.dropFirst()) {
                let slope = (tone.values[c * levels + b] - tone.values[c * levels + a]) * Float(last) / Float(b - a)
                for k in a..<b { segments[c * last + k] = slope }
            }
        }
        guide.withUnsafeBufferPointer { gb in slopes.withUnsafeMutableBufferPointer { sb in segments.withUnsafeBufferPointer { tb in
            let g = gb.baseAddress!, out = sb.baseAddress!, segments = tb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 3) { c in
                let table = segments + c &* last, top = Float(last - 1)
                for i in (c &* plane)..<((c &+ 1) &* plane) {
                    // The level below the guide's value, by adding 2²³ (no checked conversion).
                    let t = min(max(g[i] * Float(last) - 0.5, 0), top)
                    out[i] = table[Int((t + 0x1p23).bitPattern & 0x7F_FFFF)]
                }
            }
        } } }
    }

    /// Per half of the checkerboard, channel and cell: the sum of the still samples' differences
    /// (a window frame's output less the current one's, less the slope times the guide's change),
    /// and per half and cell, how many samples were still; each frame's counted as far as the
    /// cell holds still in it.
    struct Sums {
        let cellsWide: Int, cellsHigh: Int
        /// [half][channel][cell], then [half][cell].
        var differences: [Float], counts: [Float]
        /// Each frame's of the window, in order, both halves: [frame][channel, then count][cell].
        var perFrame: [Float]

        var cells: Int { cellsWide * cellsHigh }

        /// The field per channel on the cells: its mean difference, smoothed over the
        /// neighbouring cells, less its mean over the frame, times the share of it that is the
        /// correction's error.
        func field(frames: Int) -> [Float] {
            let n = cells, prior = StillWindow.prior * Float(frames)
            var field = [Float](repeating: 0, count: 3 * n)
            func counted(_ half: Int) -> [Float] { Array(counts[(half * n)..<((half + 1) * n)]) }
            func summed(_ half: Int, _ c: Int) -> [Float] { Array(differences[((half * 3 + c) * n)..<((half * 3 + c + 1) * n)]) }
            let weights = smoothed((0..<n).map { counts[$0] + counts[n + $0] })
            for c in 0..<3 {
                let share = Self.share(summed(0, c), counted(0), summed(1, c), counted(1), prior: prior / 2) * newShare(c, frames: frames)
                guard share > 0 else { continue }
                let sums = smoothed((0..<n).map { differences[c * n + $0] + differences[(3 + c) * n + $0] })
                let mean = StillWindow.centred((0..<n).map { sums[$0] / (weights[$0] + prior) }, weights: weights)
                for i in 0..<n { field[c * n + i] = share * mean[i] }
            }
            return field
        }

        /// The share of channel c's differences that is new in each frame of the window: each
        /// frame's field (its mean difference per cell, without its mean over the frame) against
        /// the next one's, 2 (V − C) / V, V their mean square, C their mean product. The
        /// current frame's error is in every one of them (each is a frame's error less the
        /// current one's), so errors new in every frame make C half of V, and the share 1; a
        /// change that moves as smoothly as the picture (a stylisation's halo trailing what
        /// moves nearby) makes neighbouring frames' fields alike, and the share 0.
        func newShare(_ c: Int, frames: Int) -> Float {
            let n = cells
            var previous: [Float]?, v = 0.0, shared = 0.0
            for k in 0..<frames {
                let counts = Array(perFrame[((k * 4 + 3) * n)..<((k * 4 + 4) * n)])
                let mean = StillWindow.centred((0..<n).map { perFrame[(k * 4 + c) * n + $0] / (counts[$0] + StillWindow.prior) }, weights: counts)
                if let previous {
                    for g in 0..<n {
                        v += Double(mean[g] * mean[g] + previous[g] * previous[g]) / 2
                        shared += Double(mean[g] * previous[g])
                    }
                }
                previous = mean
            }
            return v > 0 ? Float(min(max(2 * (v - shared) / v, 0), 1)) : 1
        }

        /// (S − N) / S in [0, 1] between two estimates of the cells' means (each without its mean
        /// over the frame): S their mean product, N half their mean squared difference.
        static func share(_ a: [Float], _ countsA: [Float], _ b: [Float], _ countsB: [Float], prior: Float) -> Float {
            let meanA = StillWindow.centred(a.indices.map { a[$0] / (countsA[$0] + prior) }, weights: countsA)
            let meanB = StillWindow.centred(b.indices.map { b[$0] / (countsB[$0] + prior) }, weights: countsB)
            var shared = 0.0, apart = 0.0
            for i in a.indices {
                shared += Double(meanA[i] * meanB[i])
                apart += Double((meanA[i] - meanB[i]) * (meanA[i] - meanB[i])) / 2
            }
            return shared > 0 ? Float(min(max((shared - apart) / shared, 0), 1)) : 0
        }

        /// `values` over the cells smoothed by a 3 × 3 binomial, the border's cells repeated.
        func smoothed(_ values: [Float]) -> [Float] {
            PlanarImage(channels: 1, height: cellsHigh, width: cellsWide, values: values).binomialSmoothed().values
        }
    }

    /// `values` less their mean weighted by `weights`.
    static func centred(_ values: [Float], weights: [Float]) -> [Float] {
        var sum = 0.0, total = 0.0
        for i in values.indices { sum += Double(values[i] * weights[i]); total += Double(weights[i]) }
        let mean = total > 0 ? Float(sum / total) : 0
        return values.map { $0 - mean }
    }

    /// The still samples' differences between each frame of `window` and `current`, summed by
    /// cell and half. Each row of cells is one task: it alone writes its cells, in the same order
    /// whatever the threads.
    static func differences(current: (guide: [Float], value: [Float]), slopes: [Float], window: [Sampled], width: Int, height: Int) -> Sums {
        let cellsWide = (width + cell - 1) / cell, cellsHigh = (height + cell - 1) / cell, n = cellsWide * cellsHigh
        var differences = [Float](repeating: 0, count: 2 * 3 * n), counts = [Float](repeating: 0, count: 2 * n)
        var perFrame = [Float](repeating: 0, count: window.count * 4 * n)
        let plane = width * height, tolerance = Self.tolerance
        current.guide.withUnsafeBufferPointer { gt in current.value.withUnsafeBufferPointer { vt in slopes.withUnsafeBufferPointer { st in
        differences.withUnsafeMutableBufferPointer { db in counts.withUnsafeMutableBufferPointer { nb in perFrame.withUnsafeMutableBufferPointer { fb in
            let gt = gt.baseAddress!, vt = vt.baseAddress!, st = st.baseAddress!, sums = db.baseAddress!, counts = nb.baseAddress!
            // Each frame's sums per cell before they are weighted: per half and channel, then
            // per half the count.
            let raw = UnsafeMutablePointer<Float>.allocate(capacity: window.count * 8 * n)
            defer { raw.deallocate() }
            DispatchQueue.concurrentPerform(iterations: cellsHigh) { cy in
                // One frame's sums over this row of cells, before they are weighted.
                let frameSums = UnsafeMutablePointer<Float>.allocate(capacity: 2 * 3 * cellsWide)
                let frameCounts = UnsafeMutablePointer<Float>.allocate(capacity: 2 * cellsWide)
                // The vector loop's sums, per band of squares, channel (then count) and cell: eight
                // lanes, one cell's row of four squares, two lanes each (folded into halves below).
                let lanes = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: 2 * 4 * cellsWide)
                defer { frameSums.deallocate(); frameCounts.deallocate(); lanes.deallocate() }
                let rows = (cy * cell)..<min((cy + 1) * cell, height)
                for (k, frame) in window.enumerated() {
                    frameSums.initialize(repeating: 0, count: 2 * 3 * cellsWide)
                    frameCounts.initialize(repeating: 0, count: 2 * cellsWide)
                    lanes.initialize(repeating: SIMD8(), count: 2 * 4 * cellsWide)
                    frame.guide.withUnsafeBufferPointer { gj in frame.value.withUnsafeBufferPointer { vj in
                        let gj = gj.baseAddress!, vj = vj.baseAddress!
                        for y in rows {
                            let band = (y / square) & 1, line = y &* width
                            // Eight samples at a time: one cell's row, four squares.
                            var x = 0
                            while x &+ 8 <= width {
                                let i = line &+ x
                                @inline(__always) func delta(_ c: Int) -> SIMD8<Float> {
                                    let j = c &* plane &+ i
                                    return SIMD8<Float>(UnsafeRawPointer(gj + j).loadUnaligned(as: SIMD8<Float16>.self))
                                        - UnsafeRawPointer(gt + j).loadUnaligned(as: SIMD8<Float>.self)
                                }
                                let deltas = (delta(0), delta(1), delta(2))
                                let still = (deltas.0 .<= tolerance) .& (deltas.0 .>= -tolerance) .& (deltas.1 .<= tolerance)
                                    .& (deltas.1 .>= -tolerance) .& (deltas.2 .<= tolerance) .& (deltas.2 .>= -tolerance)
                                if any(still) {
                                    let at = band &* 4 &* cellsWide &+ x / cell
                                    lanes[at &+ 3 &* cellsWide] += SIMD8<Float>(repeating: 0).replacing(with: 1, where: still)
                                    for c in 0..<3 {
                                        let j = c &* plane &+ i
                                        let change = c == 0 ? deltas.0 : (c == 1 ? deltas.1 : deltas.2)
                                        let d = (SIMD8<Float>(UnsafeRawPointer(vj + j).loadUnaligned(as: SIMD8<Float16>.self))
                                            - UnsafeRawPointer(vt + j).loadUnaligned(as: SIMD8<Float>.self)
                                            - UnsafeRawPointer(st + j).loadUnaligned(as: SIMD8<Float>.self) * change).replacing(with: 0, where: .!still)
                                        lanes[at &+ c &* cellsWide] += d
                                    }
                                }
                                x &+= 8
                            }
                            while x < width {
                                let i = line &+ x
                                var still = true
                                for c in 0..<3 where abs(Float(gj[c &* plane &+ i]) - gt[c &* plane &+ i]) > tolerance { still = false }
                                if still {
                                    let half = ((x / square) &+ band) & 1, at = x / cell
                                    frameCounts[half &* cellsWide &+ at] += 1
                                    for c in 0..<3 {
                                        let j = c &* plane &+ i
                                        frameSums[(half &* 3 &+ c) &* cellsWide &+ at] += Float(vj[j]) - vt[j] - st[j] * (Float(gj[j]) - gt[j])
                                    }
                                }
                                x &+= 1
                            }
                        }
                    } }
                    // A cell's first square is even: its lanes 0, 1, 4 and 5 lie in the band's half,
                    // 2, 3, 6 and 7 in the other.
                    for band in 0..<2 {
                        for at in 0..<cellsWide {
                            let even = band, odd = band ^ 1
                            for k in 0..<4 {
                                let v = lanes[(band &* 4 &+ k) &* cellsWide &+ at], pairs = v.lowHalf + v.highHalf
                                if k == 3 {
                                    frameCounts[even &* cellsWide &+ at] += pairs.lowHalf.sum()
                                    frameCounts[odd &* cellsWide &+ at] += pairs.highHalf.sum()
                                } else {
                                    frameSums[(even &* 3 &+ k) &* cellsWide &+ at] += pairs.lowHalf.sum()
                                    frameSums[(odd &* 3 &+ k) &* cellsWide &+ at] += pairs.highHalf.sum()
                                }
                            }
                        }
                    }
                    for at in 0..<cellsWide {
                        let g = at &+ cy &* cellsWide
                        for slot in 0..<6 { raw[(k &* 8 &+ slot) &* n &+ g] = frameSums[slot * cellsWide + at] }
                        for half in 0..<2 { raw[(k &* 8 &+ 6 &+ half) &* n &+ g] = frameCounts[half * cellsWide + at] }
                    }
                }
            }
            // Each frame's samples in a cell weighted by the share of them that hold still:
            // where the picture moves, the few samples whose guide shows by chance what it
            // showed there are another content's (a sketch's stroke beside its paper), and their
            // difference is the current frame's own detail, not its error.
            for k in window.indices {
                for g in 0..<n {
                    let x = g % cellsWide, y = g / cellsWide
                    let samples = Float((min((y + 1) * cell, height) - y * cell) * (min((x + 1) * cell, width) - x * cell))
                    let still = (raw[(k * 8 + 6) * n + g] + raw[(k * 8 + 7) * n + g]) / samples
                    guard still > 0 else { continue }
                    for half in 0..<2 {
                        counts[half * n + g] += still * raw[(k * 8 + 6 + half) * n + g]
                        fb[(k * 4 + 3) * n + g] += still * raw[(k * 8 + 6 + half) * n + g]
                        for c in 0..<3 {
                            sums[(half * 3 + c) * n + g] += still * raw[(k * 8 + half * 3 + c) * n + g]
                            fb[(k * 4 + c) * n + g] += still * raw[(k * 8 + half * 3 + c) * n + g]
                        }
                    }
                }
            }
        } } } } } }
        return Sums(cellsWide: cellsWide, cellsHigh: cellsHigh, differences: differences, counts: counts, perFrame: perFrame)
    }

    /// Adds the cells' field to every pixel of `output`, linear between the cells' centres
    /// (held beyond the outermost), each value held in [0, 1].
    static func add(_ field: [Float], to output: inout PlanarImage, stride: Int) {
        let w = output.width, h = output.height, plane = output.planeSize
        let cellsWide = ((w + stride - 1) / stride + cell - 1) / cell, cellsHigh = ((h + stride - 1) / stride + cell - 1) / cell
        let n = cellsWide * cellsHigh
        guard field.contains(where: { $0 != 0 }) else { return }
        // Pixel p lies at sample p / stride; cell g's centre at sample g · cell + (cell − 1) / 2.
        func place(_ p: Int, cells: Int) -> (lower: Int, upper: Int, weight: Float) {
            let u = min(max((Float(p) / Float(stride) - Float(cell - 1) / 2) / Float(cell), 0), Float(cells - 1))
            let k = min(Int(u), cells - 1)
            return (k, min(k + 1, cells - 1), u - Float(k))
        }
        let columns = (0..<w).map { place($0, cells: cellsWide) }
        output.withUnsafeMutableBufferPointer { o in field.withUnsafeBufferPointer { f in columns.withUnsafeBufferPointer { cb in
            let out = o.baseAddress!, f = f.baseAddress!, columns = cb.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 3 * h) { task in
                let c = task / h, y = task % h, (a, b, t) = place(y, cells: cellsHigh)
                // The row's field at the cells' centres, then each pixel's between two of them.
                withUnsafeTemporaryAllocation(of: Float.self, capacity: cellsWide) { cb in
                    let centres = cb.baseAddress!, row = out + (c &* plane &+ y &* w)
                    for g in 0..<cellsWide {
                        let top = f[c &* n &+ a &* cellsWide &+ g], bottom = f[c &* n &+ b &* cellsWide &+ g]
                        centres[g] = top + t * (bottom - top)
                    }
                    var x = 0
                    while x &+ 8 <= w {
                        var line = SIMD8<Float>()
                        for k in 0..<8 {
                            let (l, r, s) = columns[x &+ k]
                            line[k] = centres[l] + s * (centres[r] - centres[l])
                        }
                        let sum = UnsafeRawPointer(row + x).loadUnaligned(as: SIMD8<Float>.self) + line
                        let held = sum.replacing(with: 0, where: sum .< 0).replacing(with: 1, where: sum .> 1)
                        UnsafeMutableRawPointer(row + x).storeBytes(of: held, as: SIMD8<Float>.self)
                        x &+= 8
                    }
                    while x < w {
                        let (l, r, s) = columns[x]
                        row[x] = min(max(row[x] + centres[l] + s * (centres[r] - centres[l]), 0), 1)
                        x &+= 1
                    }
                }
            }
        } } }
    }
}

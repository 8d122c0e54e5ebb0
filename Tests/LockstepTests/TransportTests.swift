import Foundation
import Lockstep
import Tensor
import Testing
import TestSupport

@Suite struct TransportTests {
    /// A field that says "every point comes from (0.3, −0.2) feature samples away" carries a
    /// smooth image by (2.4, −1.6) pixels at factor 8, to within the interpolation's error.
    @Test func carriesByTheFieldsDisplacementInPixels() {
        let image = texture(channels: 3, width: 128, height: 96, seed: 21)
        let expected = texture(channels: 3, width: 128, height: 96, dx: -2.4, dy: 1.6, seed: 21)
        let field = CorrespondenceField(width: 16, height: 12,
                                        x: (0..<192).map { Float($0 % 16) + 0.3 },
                                        y: (0..<192).map { Float($0 / 16) - 0.2 },
                                        confidence: [Float](repeating: 0.75, count: 192))
        let (carried, confidence) = Transport.carry(image, along: field, factor: 8, origin: 3.5)
        var se = 0.0, n = 0.0, peak: Float = 0
        for c in 0..<3 { for y in 8..<88 { for x in 8..<120 {
            let d = Double(carried[c, y, x] - expected[c, y, x]); se += d * d; n += 1
            peak = max(peak, abs(expected[c, y, x]))
        } } }
        let quality = 10 * log10(Double(peak * peak) / (se / n))
        #expect(quality > 30, "PSNR \(quality) dB against the peak")
        #expect(confidence.values.allSatisfy { abs($0 - 0.75) < 1e-6 })
    }

    /// A field that moves nothing gives the image back exactly, its border pixels included: the
    /// sampler reads the coefficients beyond the edges as the prefilter mirrored them. (Read
    /// clamped, a frame's outermost pixels of fine detail came back up to 120 levels off, and a
    /// keyframe's own frame was not the keyframe.)
    @Test func aStillFieldGivesTheImageBackToItsBorders() {
        let w = 61, h = 45, fw = 8, fh = 6
        var random = SeededRandom(5)
        let field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { Float($0 % fw) }, y: (0..<(fw * fh)).map { Float($0 / fw) },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        for channels in [3, 4] {
            // Pixel noise: the detail that a wrong border coefficient changes most.
            let image = PlanarImage(channels: channels, height: h, width: w,
                                    values: (0..<(channels * w * h)).map { _ in Float(random.uniform()) })
            let carried = Transport.carry(image, along: field, factor: 8, origin: 3.5).image
            var worst: Float = 0, at = (0, 0)
            for c in 0..<channels { for y in 0..<h { for x in 0..<w {
                let d = abs(carried[c, y, x] - image[c, y, x])
                if d > worst { worst = d; at = (x, y) }
            } } }
            #expect(worst < 1e-4, "\(channels) channels: largest difference \(worst) at \(at)")
        }
    }

    /// Four channels are carried interleaved (one pixel's taps adjacent, as the edit carries its
    /// three planes and colour share): the same as each plane carried alone, in the interior and
    /// where the field reaches past the borders.
    @Test func fourChannelsCarryAsEachPlaneAlone() {
        let w = 72, h = 56, fw = 9, fh = 7
        let image = texture(channels: 4, width: w, height: h, seed: 33)
        // A rotating, expanding field: displacements of up to 5 px, out of the picture at its edges.
        let field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { i in Float(i % fw) * 1.12 - Float(i / fw) * 0.08 - 0.3 },
                                        y: (0..<(fw * fh)).map { i in Float(i / fw) * 1.1 + Float(i % fw) * 0.07 + 0.2 },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        let together = Transport.carry(image, along: field, factor: 8, origin: 3.5).image
        var worst: Float = 0
        for c in 0..<4 {
            let alone = Transport.carry(image.channels(c..<(c + 1)), along: field, factor: 8, origin: 3.5).image
            for y in 0..<h { for x in 0..<w { worst = max(worst, abs(together[c, y, x] - alone[0, y, x])) } }
        }
        #expect(worst < 1e-5, "largest difference \(worst)")
    }
}

@Suite struct ImageAlignmentTests {
    /// A field 0.4 px off on an exactly shifted image is brought to the true shift: the
    /// pixel-level step removes what the grid-level match leaves.
    @Test func refinesToTheTrueSubpixelShift() {
        var (reference, frame, field) = Self.shiftedPair { _, _ in (0.4, -0.4) }
        ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5)
        #expect(Self.worstError(field) < 0.06, "worst error \(Self.worstError(field)) px")
    }

    /// A textured reference, the frame that shows it at p + (1.3, −0.7) px at pixel p, and a field
    /// on their 8-px grid that starts `offset(i, j)` px away from that displacement.
    static func shiftedPair(offset: (Int, Int) -> (Float, Float)) -> (reference: PlanarImage, frame: PlanarImage, field: CorrespondenceField) {
        let raw = texture(channels: 3, width: 128, height: 96, seed: 8)
        let reference = PlanarImage(channels: 3, height: 96, width: 128, values: raw.values.map { 0.5 + 0.08 * $0 })
        let shifted = texture(channels: 3, width: 128, height: 96, dx: -1.3, dy: 0.7, seed: 8)
        let frame = PlanarImage(channels: 3, height: 96, width: 128, values: shifted.values.map { 0.5 + 0.08 * $0 })
        let (fw, fh) = (16, 12)
        let field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { Float($0 % fw) + (1.3 + offset($0 % fw, $0 / fw).0) / 8 },
                                        y: (0..<(fw * fh)).map { Float($0 / fw) + (-0.7 + offset($0 % fw, $0 / fw).1) / 8 },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        return (reference, frame, field)
    }

    /// The largest error (px) of the field's displacement against (1.3, −0.7), two samples in from the edges.
    static func worstError(_ field: CorrespondenceField) -> Float {
        var worst: Float = 0
        for j in 2..<(field.height - 2) { for i in 2..<(field.width - 2) {
            let index = j * field.width + i
            worst = max(worst, abs(8 * (field.x[index] - Float(i)) - 1.3), abs(8 * (field.y[index] - Float(j)) + 0.7))
        } }
        return worst
    }

    /// Starting 5 px off, beyond what one level of Lucas–Kanade on this texture can pull in, the
    /// coarse-to-fine refinement still lands on the true shift.
    @Test func refinesFromSeveralPixelsOff() {
        var (reference, frame, field) = Self.shiftedPair { _, _ in (5, -4) }
        ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5)
        #expect(Self.worstError(field) < 0.06, "worst error \(Self.worstError(field)) px")
    }

    /// The answer does not depend on how much the start is trusted overall, only on how much
    /// each sample is against the others: with every confidence 10⁻²⁴ (a tracked field whose
    /// trust has all but vanished), the refinement lands where it does at 1. (Its equations'
    /// terms then underflowed single precision: the field stayed put or was thrown millions of
    /// pixels away, and a patch search reading it crashed.)
    @Test(arguments: [Float(1), 1e-24])
    func refinesTheSameWhateverTheConfidencesScale(_ scale: Float) {
        var (reference, frame, field) = Self.shiftedPair { _, _ in (1.5, -1) }
        field.confidence = field.confidence.map { $0 * scale }
        ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5)
        #expect(Self.worstError(field) < 0.06, "worst error \(Self.worstError(field)) px")
    }

    /// Where the attention answered wildly wrong on a patch of samples (its own guess, up to 20 px
    /// away), the refinement replaces it with the motion the rest of the picture shows.
    @Test func mendsAWrongPatchFromItsNeighbours() {
        var random = SeededRandom(3)
        let wrong = (0..<(16 * 12)).map { _ in (Float(random.uniform() * 40 - 20), Float(random.uniform() * 40 - 20)) }
        var (reference, frame, field) = Self.shiftedPair { i, j in (5...9).contains(i) && (4...7).contains(j) ? wrong[j * 16 + i] : (0, 0) }
        ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5)
        #expect(Self.worstError(field) < 0.06, "worst error \(Self.worstError(field)) px")
    }

    /// On 2×2-pooled pictures (as `deflicker` refines), with the grid's pooled geometry, a 5%
    /// zoom, whose displacement depends on the place, is read at each sample's own place: the
    /// mean displacement agrees with the full-resolution refinement's within 0.02 px on each
    /// axis (0.005 measured). An origin off by one pooled pixel reads it 2 px away: 0.1 px off.
    @Test func refinesOnPooledPicturesAtEachSamplesPlace() {
        let (w, h, zoom) = (160, 128, Float(1.05))
        let (cx, cy) = (Float(w) / 2, Float(h) / 2)
        // A smooth pattern that can be sampled anywhere: a few oblique waves.
        func pattern(_ x: Float, _ y: Float) -> Float {
            0.5 + 0.1 * sin(0.31 * x + 0.17 * y) + 0.08 * sin(-0.23 * x + 0.29 * y + 1) + 0.06 * sin(0.13 * x - 0.41 * y + 2)
        }
        func picture(_ at: (Float, Float) -> (Float, Float)) -> PlanarImage {
            var image = PlanarImage(channels: 3, height: h, width: w, values: [Float](repeating: 0, count: 3 * w * h))
            for y in 0..<h { for x in 0..<w {
                let (u, v) = at(Float(x), Float(y))
                for c in 0..<3 { image[c, y, x] = pattern(u + Float(c), v) }
            } }
            return image
        }
        // The frame at p shows the reference at c + zoom·(p − c).
        let reference = picture { ($0, $1) }
        let frame = picture { (cx + zoom * ($0 - cx), cy + zoom * ($1 - cy)) }
        let (fw, fh) = (w / 8, h / 8)
        let start = CorrespondenceField(width: fw, height: fh, x: (0..<(fw * fh)).map { Float($0 % fw) },
                                        y: (0..<(fw * fh)).map { Float($0 / fw) }, confidence: [Float](repeating: 1, count: fw * fh))
        /// The mean error against the true displacement (zoom − 1)(p − c), two samples in from the edges.
        func meanError(_ field: CorrespondenceField) -> (x: Float, y: Float) {
            var sx: Float = 0, sy: Float = 0, n: Float = 0
            for j in 2..<(fh - 2) { for i in 2..<(fw - 2) {
                let index = j * fw + i
                sx += 8 * (field.x[index] - Float(i)) - (zoom - 1) * (3.5 + 8 * Float(i) - cx)
                sy += 8 * (field.y[index] - Float(j)) - (zoom - 1) * (3.5 + 8 * Float(j) - cy)
                n += 1
            } }
            return (sx / n, sy / n)
        }
        var full = start, half = start
        ImageAlignment(reference: reference).refine(&full, frame: frame, factor: 8, origin: 3.5)
        let pooled = ImageAlignment.pooledGeometry(factor: 8, origin: 3.5)
        ImageAlignment(reference: reference.averagePooled2()).refine(&half, frame: frame.averagePooled2(), factor: pooled.factor, origin: pooled.origin)
        let (a, b) = (meanError(full), meanError(half))
        #expect(abs(a.x - b.x) < 0.02 && abs(a.y - b.y) < 0.02, "full resolution \(a), pooled \(b)")
    }

    /// A texture that can be sampled anywhere: `count` random waves in octaves up to 0.2
    /// cycles/px. The function returned renders it at `width` × `height`, pixel (x, y) showing
    /// the texture at `at(x, y)`.
    static func waves(width w: Int, height h: Int, count: Int, seed: UInt64) -> ((Float, Float) -> (Float, Float)) -> PlanarImage {
        var random = SeededRandom(seed)
        let waves = (0..<count).map { n in
            let band = Float(0.025) * Float(1 << (n % 4))
            return (fx: Float(random.uniform() - 0.5) * 2 * band, fy: Float(random.uniform() - 0.5) * 2 * band,
                    phase: Float(random.uniform()) * 2 * .pi, amplitude: Float(0.5 + random.uniform()) * 0.02)
        }
        return { at in
            var image = PlanarImage(channels: 3, height: h, width: w, values: [Float](repeating: 0, count: 3 * w * h))
            for y in 0..<h { for x in 0..<w {
                let (u, v) = at(Float(x), Float(y))
                var value: Float = 0.5
                for wave in waves { value += wave.amplitude * sin(2 * .pi * (wave.fx * u + wave.fy * v) + wave.phase) }
                for c in 0..<3 { image[c, y, x] = value }
            } }
            return image
        }
    }

    /// A pan whose frame shows, along its left edge, what lies beyond the reference's edge as a
    /// clamped read gives it (the edge column repeated): the blocks there, whose displaced
    /// samples fall up to 6.4 px past the reference, are matched as any other, at the true shift
    /// and with full quality. (Their samples come from the reference padded with its edge
    /// values; read as zeros, or from the wrong place, they would not match.)
    @Test func blocksReachingPastTheReferencesEdgeReadItsEdge() {
        let (w, h, shift) = (128, 96, Float(6.4))
        let picture = Self.waves(width: w, height: h, count: 10, seed: 31)
        let reference = picture { ($0, $1) }
        let frame = picture { (max($0 - shift, 0), $1) }
        let (fw, fh) = (w / 8, h / 8)
        var field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { Float($0 % fw) - 0.5 * shift / 8 }, y: (0..<(fw * fh)).map { Float($0 / fw) },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        let quality = ImageAlignment(reference: reference).refine(&field, frame: frame, factor: 8, origin: 3.5, measuringMatch: true)
        var worst: Float = 0, poorest: Float = 1
        for j in 0..<fh { for i in 0..<2 {
            let index = j * fw + i
            worst = max(worst, abs(8 * (field.x[index] - Float(i)) + shift), abs(8 * (field.y[index] - Float(j))))
            poorest = min(poorest, quality[index])
        } }
        #expect(worst < 0.2, "worst error \(worst) px in the two left columns")
        #expect(poorest > 0.8, "poorest match quality \(poorest) in the two left columns")
    }

    /// A zoom (the frame at p shows the reference at c + (p − c) / 1.12), from a start that finds
    /// half of it (as the attention's answer under a zoom does), is found at every sample, those
    /// on the frame's edges included, within half a pixel, and every block matches there. (A
    /// plain membrane pulled each edge sample towards its inner neighbour's displacement: the
    /// corners stayed 2.3 px off, and their blocks matched at 0.43.)
    @Test func aZoomIsFoundOutToTheFramesEdges() {
        let (w, h, zoom) = (192, 128, Float(1.12))
        let (cx, cy) = (Float(w) / 2, Float(h) / 2)
        let picture = Self.waves(width: w, height: h, count: 12, seed: 12)
        let reference = picture { ($0, $1) }
        let frame = picture { (cx + ($0 - cx) / zoom, cy + ($1 - cy) / zoom) }
        let (fw, fh) = (w / 8, h / 8)
        /// The true displacement of sample (i, j), in pixels.
        func truth(_ i: Int, _ j: Int) -> (Float, Float) { ((1 / zoom - 1) * (3.5 + 8 * Float(i) - cx), (1 / zoom - 1) * (3.5 + 8 * Float(j) - cy)) }
        var field = CorrespondenceField(width: fw, height: fh,
                                        x: (0..<(fw * fh)).map { Float($0 % fw) + 0.5 * truth($0 % fw, $0 / fw).0 / 8 },
                                        y: (0..<(fw * fh)).map { Float($0 / fw) + 0.5 * truth($0 % fw, $0 / fw).1 / 8 },
                                        confidence: [Float](repeating: 1, count: fw * fh))
        let quality = ImageAlignment(reference: reference, followingSlope: true)
            .refine(&field, frame: frame, factor: 8, origin: 3.5, measuringMatch: true)
        var worst: Float = 0, worstAt = (0, 0), poorest: Float = 1
        for j in 0..<fh { for i in 0..<fw {
            let index = j * fw + i, (tx, ty) = truth(i, j)
            let error = max(abs(8 * (field.x[index] - Float(i)) - tx), abs(8 * (field.y[index] - Float(j)) - ty))
            if error > worst { worst = error; worstAt = (i, j) }
            poorest = min(poorest, quality[index])
        } }
        #expect(worst < 0.5, "worst error \(worst) px at sample \(worstAt)")
        #expect(poorest > 0.5, "poorest match quality \(poorest)")
    }

    /// The alignment's relaxation takes four rows at once, each a sample behind the row above,
    /// for speed: its values must be those of relaxing the samples row by row, each after its
    /// left neighbour, to the last bit, on grids whose rows are not a multiple of four and
    /// narrower than the skew. (Taken a sample ahead instead of behind, a row reads its upper
    /// neighbour before that is relaxed, and the values differ.)
    @Test(arguments: [(1, 1), (2, 5), (3, 4), (7, 9), (16, 13), (33, 8)])
    func relaxationTakesTheRowByRowOrder(size: (width: Int, height: Int)) {
        let (fw, fh) = size, n = fw * fh, lambda: Float = 0.7
        var random = SeededRandom(UInt64(fw * 100 + fh))
        func values(_ count: Int, scale: Float = 1) -> [Float] { (0..<count).map { _ in scale * Float(random.uniform() * 2 - 1) } }
        var inverse = [Float](repeating: 0, count: 4 * n)
        for i in 0..<n {
            let a = 1 + Float(random.uniform()), d = 1 + Float(random.uniform()), c = 0.5 * Float(random.uniform() - 0.5)
            inverse[4 * i] = d / (a * d - c * c); inverse[4 * i + 1] = -c / (a * d - c * c)
            inverse[4 * i + 2] = a / (a * d - c * c); inverse[4 * i + 3] = 1.8
        }
        let rx = values(n, scale: 3), ry = values(n, scale: 3), startX = values(n), startY = values(n)
        var ux = startX, uy = startY
        ImageAlignment.relax(&ux, &uy, inverse: inverse, rx: rx, ry: ry, width: fw, height: fh, lambda: lambda, sweeps: 3)
        var vx = startX, vy = startY
        for _ in 0..<3 { for j in 0..<fh { for i in 0..<fw {
            let index = j * fw + i
            var sx: Float = 0, sy: Float = 0
            if i > 0 { sx += vx[index - 1]; sy += vy[index - 1] }
            if i + 1 < fw { sx += vx[index + 1]; sy += vy[index + 1] }
            if j > 0 { sx += vx[index - fw]; sy += vy[index - fw] }
            if j + 1 < fh { sx += vx[index + fw]; sy += vy[index + fw] }
            let px = rx[index] + lambda * sx, py = ry[index] + lambda * sy, k = 4 * index
            let nx = inverse[k] * px + inverse[k + 1] * py, ny = inverse[k + 1] * px + inverse[k + 2] * py
            vx[index] += inverse[k + 3] * (nx - vx[index])
            vy[index] += inverse[k + 3] * (ny - vy[index])
        } } }
        #expect(ux == vx && uy == vy, "largest difference \(zip(ux + uy, vx + vy).map { abs($0 - $1) }.max() ?? 0)")
        #expect(ux != startX, "the relaxation moved nothing")
    }

    /// The match quality is high where the frame shows the reference, moved, and low on a patch
    /// where it shows something else.
    @Test func matchQualityTellsMatchedFromChangedContent() {
        var (reference, frame, field) = Self.shiftedPair { _, _ in (0, 0) }
        let other = texture(channels: 3, width: 128, height: 96, seed: 99)
        for c in 0..<3 { for y in 32..<72 { for x in 40..<88 { frame[c, y, x] = 0.5 + 0.08 * other[c, y, x] } } }
        let quality = ImageAlignment(reference: reference, followingSlope: true)
            .refine(&field, frame: frame, factor: 8, origin: 3.5, measuringMatch: true)
        var matched: [Float] = [], changed: [Float] = []
        for j in 1..<11 { for i in 1..<15 {
            let (x, y) = (3.5 + 8 * Float(i), 3.5 + 8 * Float(j))
            if x > 52 && x < 76 && y > 44 && y < 60 { changed.append(quality[j * 16 + i]) }
            if x < 28 || x > 100 || y < 20 || y > 84 { matched.append(quality[j * 16 + i]) }
        } }
        #expect(matched.min()! > 0.9, "matched \(matched.min()!)")
        #expect(changed.max()! < 0.2, "changed \(changed.max()!)")
    }
}

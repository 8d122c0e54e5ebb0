import Foundation
import Lockstep
import Tensor
import Testing
import TestSupport

/// `StillWindow`: where the guide holds still, a corrected frame brought to the frames before it
/// by a smooth field, as far as the field is the correction's error and not the picture's.
@Suite struct StillWindowTests {
    /// Each output through `ToneWindow`'s step and this one in order, as the second pass takes
    /// them, over a window of 16 frames; the tone at every pixel, the still pixels at every other (as the
    /// plan takes them at the analysis's size).
    /// `still` false: `ToneWindow`'s step alone.
    static func steadied(_ outputs: [PlanarImage], guides: [PlanarImage], still: Bool = true) -> [PlanarImage] {
        var tones = ToneWindow(), window = StillWindow()
        return outputs.indices.map { t in
            var out = outputs[t]
            let tone = tones.steady(&out, guide: guides[t], index: t, lower: max(t - 15, 0), stride: 1, block: 32)
            if still { window.steady(&out, guide: guides[t], tone: tone, index: t, lower: max(t - 15, 0), stride: 2) }
            return out
        }
    }

    /// The mean absolute difference, value by value, of each frame of `a` from `b`'s, in levels.
    static func moved(_ a: [PlanarImage], from b: [PlanarImage]) -> [Double] {
        zip(a, b).map { a, b in zip(a.values, b.values).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(a.count) * 255 }
    }

    /// A still camera's picture, graded (a gamma of 0.8), the same in every frame.
    static let guide = DeflickerTests.scene(0)
    static let truth = PlanarImage(channels: 3, height: guide.height, width: guide.width, values: guide.values.map { pow($0, 0.8) })

    /// `picture` times a smooth gain field: a 4 × 3 grid of gains 1 ± `amount`, drawn from
    /// `random`, bilinear between the grid's points.
    static func field(on picture: PlanarImage, amount: Float, random: inout SeededRandom) -> PlanarImage {
        let points = (0..<12).map { _ in 1 + amount * Float(2 * random.uniform() - 1) }
        let w = picture.width, h = picture.height, n = picture.planeSize
        return PlanarImage(channels: 3, height: h, width: w, values: picture.values.indices.map { i in
            let u = Float((i % n) % w) / Float(w - 1) * 3, v = Float((i % n) / w) / Float(h - 1) * 2
            let x = min(Int(u), 2), y = min(Int(v), 1), s = u - Float(x), t = v - Float(y)
            let top = points[y * 4 + x] + s * (points[y * 4 + x + 1] - points[y * 4 + x])
            let bottom = points[(y + 1) * 4 + x] + s * (points[(y + 1) * 4 + x + 1] - points[(y + 1) * 4 + x])
            return min(max(picture.values[i] * (top + t * (bottom - top)), 0), 1)
        })
    }

    /// A still camera whose correction left a gain field that errs anew in every frame (±4%,
    /// smooth over the frame): its frames wobble by about 3 levels from one to the next; brought
    /// to the window's, by under half of that. (Fails if the step adds nothing, or counts the
    /// field as the picture's own.)
    @Test func aStillCamerasPerFrameFieldErrorIsTakenOut() {
        var random = SeededRandom(3)
        let outputs = (0..<24).map { _ in Self.field(on: Self.truth, amount: 0.04, random: &random) }
        let guides = [PlanarImage](repeating: Self.guide, count: 24), truths = [PlanarImage](repeating: Self.truth, count: 24)
        let before = ToneWindowTests.wobble(outputs, truth: truths)
        let after = ToneWindowTests.wobble(Self.steadied(outputs, guides: guides), truth: truths)
        #expect(before > 2, "the outputs wobble by \(before) levels")
        #expect(after < before / 2, "wobble \(before) → \(after) levels")
    }

    /// The picture's own change is kept, where the guide holds still:
    /// - a change of level over the whole frame (0.4 levels brighter each frame), which is the
    ///   frame's tone and `ToneWindow`'s to judge: the field's mean over the frame is taken out,
    ///   and the change is smooth in time, so the share new in every frame is small too (each
    ///   alone keeps it here; with neither, the step held it back by up to 2 levels);
    /// - a change block by block (each 4 × 4 px block moved by its own random offset of up to
    ///   ±20 levels, anew in every frame), as a pencil sketch's strokes change over still pixels
    ///   when something moves nearby: a cell's mean of it moves by about 3 levels, which a window
    ///   of the frames before would take for the frame's error (without the share both halves
    ///   of the checkerboard have, it is pulled to the window's by up to 1.3 levels on average).
    /// Each output stays within a quarter of a level on average of what `ToneWindow`'s step
    /// alone makes of it.
    @Test(arguments: [true, false]) func aPicturesOwnChangeIsKept(smooth: Bool) {
        var random = SeededRandom(11)
        let w = Self.truth.width, n = Self.truth.planeSize, blocks = ((w + 3) / 4) * ((Self.truth.height + 3) / 4)
        let outputs = (0..<24).map { t in
            let offsets = (0..<(3 * blocks)).map { _ in Float(random.uniform() - 0.5) * 40 / 255 }
            return PlanarImage(channels: 3, height: Self.truth.height, width: w, values: Self.truth.values.indices.map { i in
                let x = (i % n) % w, y = (i % n) / w
                return Self.truth.values[i] + (smooth ? 0.4 / 255 * Float(t) : offsets[(i / n) * blocks + (y / 4) * ((w + 3) / 4) + x / 4])
            })
        }
        let guides = [PlanarImage](repeating: Self.guide, count: 24)
        let moved = Self.moved(Self.steadied(outputs, guides: guides), from: Self.steadied(outputs, guides: guides, still: false))
        #expect(moved.max()! < 0.25, "moved by \(moved.map { ($0 * 100).rounded() / 100 }) levels")
    }

    /// Where the guide moves (a pan), little is the same content: only samples whose guide shows
    /// by chance within two levels what another frame showed there. The output carries detail of
    /// its own that moves with the picture and is no function of the guide's value (as a
    /// stylisation's strokes are), so such a sample's difference between frames is not an
    /// error, and the output is left within a quarter of a level on average of what
    /// `ToneWindow`'s step alone makes of it. (The guide's texture is kept clear of black and
    /// white: a clipped region shows the same whatever moves under it.)
    @Test func aMovingPicturesOwnDetailIsLeftAlone() {
        let size = DeflickerTests.size
        func picture(_ t: Int, seed: UInt64) -> [Float] {
            texture(channels: 3, width: size.width, height: size.height, dx: 2.1 * Double(t), dy: 1.2 * Double(t), seed: seed).values
                .map { 0.5 + 0.05 * $0 }
        }
        let frames = (0..<16).map { t in
            (guide: PlanarImage(channels: 3, height: size.height, width: size.width, values: picture(t, seed: 17)), detail: picture(t, seed: 99))
        }
        let outputs = frames.map { frame in
            PlanarImage(channels: 3, height: size.height, width: size.width, values: frame.guide.values.indices.map { i in
                pow(frame.guide.values[i], 0.8) + 0.5 * (frame.detail[i] - 0.5)
            })
        }
        let guides = frames.map(\.guide)
        let moved = Self.moved(Self.steadied(outputs, guides: guides), from: Self.steadied(outputs, guides: guides, still: false))
        #expect(moved.max()! < 0.25, "moved by \(moved.map { ($0 * 100).rounded() / 100 }) levels")
    }

    /// A still camera and something that moves across it (a bright square, 3 px a frame), under
    /// an edit that answers to what lies nearby: a halo of up to 10 levels around the square,
    /// over the still background, moving with it (as a stylisation's smoothing spreads a subject
    /// over its surroundings). That is the picture's, not the correction's: the output is left
    /// within a quarter of a level on average of what `ToneWindow`'s step alone makes of it.
    /// (Without the share of the field new in every frame, the halo's trail is held back: 0.37
    /// levels on average.)
    @Test func whatMovesNearbyIsLeftToTheEdit() {
        let w = Self.guide.width, h = Self.guide.height, n = Self.guide.planeSize
        func square(_ t: Int) -> (x: Float, y: Float) { (Float(20 + 3 * t), Float(h / 2)) }
        let frames = (0..<24).map { t -> (guide: PlanarImage, output: PlanarImage) in
            let centre = square(t)
            var guide = Self.guide, output = Self.truth
            for i in 0..<(3 * n) {
                let dx = Float((i % n) % w) - centre.x, dy = Float((i % n) / w) - centre.y
                if abs(dx) <= 6 && abs(dy) <= 6 {
                    guide.withUnsafeMutableBufferPointer { $0[i] = 0.95 }
                    output.withUnsafeMutableBufferPointer { $0[i] = pow(0.95, 0.8) }
                } else {
                    let halo = 10 / 255 * exp(-(dx * dx + dy * dy) / (2 * 12 * 12))
                    output.withUnsafeMutableBufferPointer { $0[i] += halo }
                }
            }
            return (guide, output)
        }
        let guides = frames.map(\.guide), outputs = frames.map(\.output)
        let moved = Self.moved(Self.steadied(outputs, guides: guides), from: Self.steadied(outputs, guides: guides, still: false))
        #expect(moved.max()! < 0.25, "moved by \(moved.map { ($0 * 100).rounded() / 100 }) levels")
    }
}

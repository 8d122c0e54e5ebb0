import Foundation
import Lockstep
import Tensor
import Testing
import TestSupport

/// `ToneWindow`: a corrected frame's tone against its guide brought to the frames' before it, as
/// far as the difference is the correction's error (new in the frame, the same over the frame)
/// and not the picture's own.
@Suite struct ToneWindowTests {
    /// Each output through `steady` in order, over a window of 16 frames; 16 px squares.
    static func steadied(_ outputs: [PlanarImage], guides: [PlanarImage]) -> [PlanarImage] {
        var window = ToneWindow()
        return outputs.indices.map { t in
            var out = outputs[t]
            window.steady(&out, guide: guides[t], index: t, lower: max(t - 15, 0), stride: 1, block: 16)
            return out
        }
    }

    /// The mean over frames 8 on of the rms change, pixel by pixel, of each frame's difference
    /// from `truth` against the frame before's, in levels of 255.
    static func wobble(_ frames: [PlanarImage], truth: [PlanarImage]) -> Double {
        let changes = (8..<frames.count).map { t in
            let a = frames[t].values, b = frames[t - 1].values, x = truth[t].values, y = truth[t - 1].values
            return (a.indices.reduce(0.0) { sum, i in
                let d = Double((a[i] - x[i]) - (b[i] - y[i])); return sum + d * d
            } / Double(a.count)).squareRoot() * 255
        }
        return changes.reduce(0, +) / Double(changes.count)
    }

    /// A grade whose correction erred differently in every frame: each output is its moving
    /// guide through a gamma drawn anew (0.9 to 1.1), a curve of the guide's value. Its tone
    /// wobbles from frame to frame by about 2.5 levels; brought to the window's, under a
    /// quarter of that. (Fails if the step adds nothing, or counts the error as the picture's.)
    @Test func aGradesPerFrameToneErrorIsTakenOut() {
        var random = SeededRandom(5)
        let guides = (0..<24).map { DeflickerTests.scene($0) }
        let outputs = guides.map { guide in
            let gamma = Float(0.9 + 0.2 * random.uniform())
            return PlanarImage(channels: 3, height: guide.height, width: guide.width, values: guide.values.map { pow($0, gamma) })
        }
        let before = Self.wobble(outputs, truth: guides), after = Self.wobble(Self.steadied(outputs, guides: guides), truth: guides)
        #expect(before > 1.5, "the outputs wobble by \(before) levels")
        #expect(after < before / 4, "wobble \(before) → \(after) levels")
    }

    /// The picture's own change of tone is kept. A change as smooth as the picture's (every
    /// frame 0.4 levels brighter than the one before, over the whole frame), and one that
    /// differs from place to place (each 16 px square of the frame moved by its own random
    /// offset of up to ±5 levels, anew in every frame): neither is the correction's error, and
    /// each output stays within half a level of itself on average (the most at the shot's start, where
    /// two or three frames are all there is to judge by). (Without the share new in each
    /// frame, the smooth change is held back by up to 3 levels; without the share both halves
    /// have, the squares' offsets are pulled together.)
    @Test(arguments: [true, false]) func aPicturesOwnChangeOfToneIsKept(smooth: Bool) {
        var random = SeededRandom(9)
        let guides = (0..<24).map { DeflickerTests.scene($0) }
        let outputs = guides.enumerated().map { t, guide in
            let w = guide.width, n = guide.planeSize, squares = ((w + 15) / 16) * ((guide.height + 15) / 16)
            let offsets = (0..<squares).map { _ in Float(random.uniform() - 0.5) * 10 / 255 }
            return PlanarImage(channels: 3, height: guide.height, width: w, values: guide.values.indices.map { i in
                let x = (i % n) % w, y = (i % n) / w
                return guide.values[i] + (smooth ? 0.4 / 255 * Float(t) : offsets[(y / 16) * ((w + 15) / 16) + x / 16])
            })
        }
        let steadied = Self.steadied(outputs, guides: guides)
        let moved = zip(steadied, outputs).map { a, b in
            zip(a.values, b.values).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(a.count) * 255
        }
        #expect(moved.max()! < 0.5, "moved by \(moved.map { ($0 * 100).rounded() / 100 }) levels")
    }
}

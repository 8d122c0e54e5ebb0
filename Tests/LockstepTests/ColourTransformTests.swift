import Foundation
import Lockstep
import Tensor
import Testing
import TestSupport

@Suite struct ColourTransformTests {
    /// A grade like the evaluation's (tone curve, saturation, warm tint): smooth in colour.
    static func grade(_ image: PlanarImage) -> PlanarImage {
        var out = image
        out.withUnsafeMutableBufferPointer { p in
            let n = image.planeSize
            for i in 0..<n {
                let (r, g, b) = (p[i], p[n + i], p[2 * n + i])
                let y = 0.299 * r + 0.587 * g + 0.114 * b
                func curve(_ v: Float) -> Float { min(max(v * v * (3 - 2 * v), 0), 1) }
                let sat: Float = 1.3
                p[i] = curve(min(max(y + sat * (r - y) + 0.04, 0), 1))
                p[n + i] = curve(min(max(y + sat * (g - y) + 0.01, 0), 1))
                p[2 * n + i] = curve(min(max(y + sat * (b - y) - 0.03, 0), 1))
            }
        }
        return out
    }

    static func add(_ a: PlanarImage, _ b: PlanarImage) -> PlanarImage {
        PlanarImage(channels: a.channels, height: a.height, width: a.width, values: zip(a.values, b.values).map(+))
    }

    /// Learned on one frame, the grade is reproduced on another frame with other content.
    @Test func learnsAColourFunctionAndAppliesItElsewhere() {
        let key = SyntheticClip.movingPattern(t: 0, width: 160, height: 120)
        let other = SyntheticClip.movingPattern(t: 37, width: 160, height: 120)
        let transform = ColourTransform(original: key, edited: Self.grade(key))
        let predicted = Self.add(other, transform.delta(for: other))
        let quality = psnr(predicted, Self.grade(other))
        #expect(quality > 38, "PSNR \(quality) dB")
        // Without the transform, the frame is far from its graded self.
        #expect(psnr(other, Self.grade(other)) < 25)
    }

    /// A grade is a function of colour, and the lattice fitted to it reproduces it to well below
    /// an 8-bit level, on the keyframe and on a frame with other content: the least-squares
    /// lattice, not each point's local average of the examples (which misses every example
    /// where the function bends: 41 dB on the evaluation's graded cockatoo, this 58).
    @Test func aGradeIsFittedExactly() {
        let key = SyntheticClip.movingPattern(t: 0, width: 160, height: 120)
        let other = SyntheticClip.movingPattern(t: 37, width: 160, height: 120)
        let transform = ColourTransform(original: key, edited: Self.grade(key))
        let onKey = psnr(Self.add(key, transform.delta(for: key)), Self.grade(key))
        let elsewhere = psnr(Self.add(other, transform.delta(for: other)), Self.grade(other))
        #expect(onKey > 50, "PSNR on the keyframe \(onKey) dB")
        #expect(elsewhere > 48, "PSNR on another frame \(elsewhere) dB")
    }

    /// A grade learned on a keyframe of dark colours, applied to a frame of bright ones that the
    /// keyframe never showed: the lattice's points out there follow the grade's trend in colour
    /// (`AffineColourTrend`), not the delta of the brightest colours the keyframe had (held
    /// towards those, measured: 25.1 dB).
    @Test func colourTheKeyframeNeverShowedFollowsTheGradesTrend() {
        func scaled(_ image: PlanarImage, _ a: Float, _ b: Float) -> PlanarImage {
            PlanarImage(channels: 3, height: image.height, width: image.width, values: image.values.map { a + b * min(max($0, 0), 1) })
        }
        func graded(_ image: PlanarImage) -> PlanarImage {
            var out = image
            out.withUnsafeMutableBufferPointer { p in
                let n = image.planeSize
                for i in 0..<n { p[i] = 0.95 * p[i] + 0.04; p[n + i] = 0.9 * p[n + i] + 0.03; p[2 * n + i] *= 0.8 }
            }
            return out
        }
        let key = scaled(SyntheticClip.movingPattern(t: 0, width: 160, height: 120), 0, 0.5)
        let other = scaled(SyntheticClip.movingPattern(t: 37, width: 160, height: 120), 0.5, 0.5)
        let transform = ColourTransform(original: key, edited: graded(key))
        let quality = psnr(Self.add(other, transform.delta(for: other)), graded(other))
        #expect(quality > 40, "PSNR on colours the keyframe never showed: \(quality) dB")
    }

    /// The function is evaluated eight pixels at a time (their lattice cells and weights as
    /// vectors) and pixel by pixel for a row's last few: both give the same value, bit for bit,
    /// for any colour, out-of-range ones included.
    @Test func eightAtATimeIsPixelByPixel() {
        let key = SyntheticClip.movingPattern(t: 0, width: 96, height: 64)
        let transform = ColourTransform(original: key, edited: Self.grade(key))
        var random = SeededRandom(17)
        let n = 203  // not a multiple of eight: the last three go pixel by pixel
        let colours = PlanarImage(channels: 3, height: 1, width: n, values: (0..<(3 * n)).map { _ in Float(random.uniform()) * 1.4 - 0.2 })
        let together = transform.delta(for: colours)
        var differing = 0
        for x in 0..<n {
            let alone = transform.delta(for: PlanarImage(channels: 3, height: 1, width: 1,
                                                         values: (0..<3).map { colours[$0, 0, x] }))
            for c in 0..<3 where together[c, 0, x] != alone[c, 0, 0] { differing += 1 }
        }
        #expect(differing == 0, "\(differing) of \(3 * n) values differ")
    }

    /// Colours the examples never showed get the nearest learned behaviour, smoothly and within
    /// the range of what was learned: no wild extrapolation.
    @Test func unseenColoursStayBounded() {
        let dark = SyntheticClip.flat(level: 40, width: 16, height: 16)
        var brighter = dark
        brighter.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] += 0.1 } }
        let transform = ColourTransform(original: dark, edited: brighter)
        let delta = transform.delta(for: SyntheticClip.flat(level: 250, width: 4, height: 4))
        for v in delta.values { #expect(abs(v - 0.1) < 1e-4) }
    }
}

import Foundation
import Lockstep
import Tensor
import Testing
import TestSupport

/// Test features: RGB and luma gradients, 4×4 average-pooled. Enough to test the propagator's
/// mechanics apart from the latent's.
struct PooledFeatures: FeatureEncoder {
    var factor: Int { 4 }
    var origin: Float { 1.5 }
    func features(_ image: PlanarImage) -> PlanarImage {
        let w = image.width, h = image.height
        var values = image.values
        var gx = [Float](repeating: 0, count: w * h), gy = gx
        for y in 0..<h {
            for x in 0..<w {
                func luma(_ x: Int, _ y: Int) -> Float {
                    let (xx, yy) = (min(max(x, 0), w - 1), min(max(y, 0), h - 1))
                    return (image[0, yy, xx] + image[1, yy, xx] + image[2, yy, xx]) / 3
                }
                gx[y * w + x] = luma(x + 1, y) - luma(x - 1, y)
                gy[y * w + x] = luma(x, y + 1) - luma(x, y - 1)
            }
        }
        values += gx + gy
        return PlanarImage(channels: 5, height: h, width: w, values: values).averagePooled2().averagePooled2()
    }
}

@Suite struct EditPropagatorTests {
    static let size = (width: 160, height: 120)
    /// Frame t of a non-repeating colour texture drifting by (1, ½) px per frame. (A periodic
    /// pattern would be matched a period away: no method can tell those matches apart.)
    static func frame(_ t: Int) -> PlanarImage {
        let raw = texture(channels: 3, width: size.width, height: size.height, dx: Double(t), dy: 0.5 * Double(t), seed: 17)
        return PlanarImage(channels: 3, height: raw.height, width: raw.width, values: raw.values.map { min(max(0.5 + 0.08 * $0, 0), 1) })
    }

    /// A soft round blob (a "sticker") of radius 6 at a sub-pixel position, added to an image.
    static func withSticker(_ image: PlanarImage, x cx: Double, y cy: Double) -> PlanarImage {
        var out = image
        out.withUnsafeMutableBufferPointer { p in
            let n = image.planeSize
            for y in 0..<image.height {
                for x in 0..<image.width {
                    let d2 = (Double(x) - cx) * (Double(x) - cx) + (Double(y) - cy) * (Double(y) - cy)
                    let a = Float(exp(-d2 / (2 * 16)))
                    p[y * image.width + x] += 0.5 * a * (1 - p[y * image.width + x])
                    p[n + y * image.width + x] *= 1 - 0.5 * a
                }
            }
        }
        return out
    }

    @Test func strengthZeroIsTheIdentity() {
        let key = Self.frame(0)
        let propagator = EditPropagator(keyframes: [Keyframe(index: 0, original: key, edited: ColourTransformTests.grade(key))],
                                        encoder: PooledFeatures(), strength: 0)
        let other = Self.frame(4)
        #expect(propagator.apply(to: other).isIdentical(to: other))
    }

    /// A grade made on frame 0 is reproduced on a later frame.
    @Test func gradeIsRecoveredOnOtherFrames() {
        let key = Self.frame(0)
        let propagator = EditPropagator(keyframes: [Keyframe(index: 0, original: key, edited: ColourTransformTests.grade(key))],
                                        encoder: PooledFeatures())
        let later = Self.frame(6)
        let quality = psnr(propagator.apply(to: later), ColourTransformTests.grade(later))
        #expect(quality > 35, "PSNR \(quality) dB")
    }

    /// A local edit (a sticker on the content) moves with the content: content drifts by
    /// (1, ½) px per frame, so the sticker painted at (60, 50) on frame 0 is at (65, 52.5) on frame 5.
    @Test func localEditFollowsTheMotion() {
        let key = Self.frame(0)
        let propagator = EditPropagator(keyframes: [Keyframe(index: 0, original: key, edited: Self.withSticker(key, x: 60, y: 50))],
                                        encoder: PooledFeatures())
        let later = Self.frame(5)
        let output = propagator.apply(to: later)
        let truth = Self.withSticker(later, x: 65, y: 52.5)
        let moved = psnr(output, truth), stuck = psnr(output, Self.withSticker(later, x: 60, y: 50))
        #expect(moved > 32, "PSNR against the moved sticker \(moved) dB")
        #expect(moved > stuck + 6, "moved \(moved) dB vs stuck \(stuck) dB")
    }

    /// Two keyframes: a frame between them takes each edit where it matches that reference.
    @Test func severalKeyframesCombine() {
        let first = Self.frame(0), second = Self.frame(10)
        let propagator = EditPropagator(keyframes: [
            Keyframe(index: 0, original: first, edited: Self.withSticker(first, x: 40, y: 40)),
            Keyframe(index: 10, original: second, edited: Self.withSticker(second, x: 120, y: 80)),
        ], encoder: PooledFeatures())
        let middle = Self.frame(5)
        let truth = Self.withSticker(Self.withSticker(middle, x: 45, y: 42.5), x: 115, y: 77.5)
        let quality = psnr(propagator.apply(to: middle), truth)
        #expect(quality > 30, "PSNR \(quality) dB")
    }
}

import Foundation
import Tensor

/// The warping error E_warp of Lai et al. 2018 ("Learning Blind Video Temporal Consistency"), as
/// DESIGN.md defines it: for consecutive frames, the motion between the guide frames (or the
/// input itself), O_{t−1} warped onto t, occlusions and motion boundaries masked,
///   E_t = Σ_p M(p) ‖O_t(p) − O_{t−1}(p + w(p))‖² / Σ_p M(p),  RGB in [0, 1], ‖·‖² averaged over
/// the three channels; E_warp is the mean over t. The long-range term compares O_t with the first
/// frame (Deep Video Prior), masked where the match to the first frame is not confident.
///
/// The motion is Lockstep's own correspondence: attention on the alias-free latent, finished by
/// Lucas–Kanade on the guide frames. Frames are fed one at a time; only the previous and the
/// first frame are kept.
public final class WarpingErrorMeter {
    /// Per output judged (see `add(guide:outputs:)`), E_t for consecutive frames and against the first.
    private var consecutive: [[Double]] = []
    private var againstFirst: [[Double]] = []
    let codec: AliasFreeCodec
    /// Frames wider than this are 2×2-pooled until they are not (0: full resolution).
    let maximumWidth: Int
    private var previous: (guide: PlanarImage, features: PlanarImage, alignment: ImageAlignment, outputs: [PlanarImage])?
    private var first: (attention: CrossFrameAttention, alignment: ImageAlignment, outputs: [PlanarImage])?

    public init(factor: Int = 8, maximumWidth: Int = 0) {
        codec = AliasFreeCodec(factor: factor)
        self.maximumWidth = maximumWidth
    }

    /// The per-pair series of the first output.
    public var series: [Double] { consecutive.first ?? [] }
    public var firstSeries: [Double] { againstFirst.first ?? [] }
    /// Mean E_warp over consecutive pairs (0 with fewer than two frames), of output `output`.
    public func ewarp(output: Int = 0) -> Double { Self.mean(output < consecutive.count ? consecutive[output] : []) }
    /// Mean E_warp against the first frame, of output `output`.
    public func ewarpFirst(output: Int = 0) -> Double { Self.mean(output < againstFirst.count ? againstFirst[output] : []) }
    public var ewarp: Double { ewarp() }
    public var ewarpFirst: Double { ewarpFirst() }

    static func mean(_ values: [Double]) -> Double { values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count) }

    /// Adds frame t: its guide (where motion is measured) and the output being judged.
    public func add(guide: PlanarImage, output: PlanarImage) { add(guide: guide, outputs: [output]) }

    /// Adds frame t with several outputs judged on the same motion (e.g. before and after).
    public func add(guide: PlanarImage, outputs: [PlanarImage]) {
        let guide = reduced(guide), outputs = outputs.map(reduced)
        if consecutive.isEmpty {
            consecutive = Array(repeating: [], count: outputs.count)
            againstFirst = consecutive
        }
        let features = codec.encode(guide)
        let alignment = ImageAlignment(reference: guide)
        if let previous {
            // w: from t to t−1, and back from t−1 to t, for the occlusion test.
            var forward = CrossFrameAttention(reference: previous.features).correspondenceWithoutConsistencyCheck(for: features)
            previous.alignment.refine(&forward, frame: guide, factor: codec.factor, origin: codec.origin)
            var backward = CrossFrameAttention(reference: features).correspondenceWithoutConsistencyCheck(for: previous.features)
            alignment.refine(&backward, frame: previous.guide, factor: codec.factor, origin: codec.origin)
            for (i, output) in outputs.enumerated() {
                consecutive[i].append(Self.error(output, previous.outputs[i], forward: forward, backward: backward, factor: codec.factor, origin: codec.origin))
            }
        }
        if let first {
            var field = first.attention.correspondence(for: features)
            first.alignment.refine(&field, frame: guide, factor: codec.factor, origin: codec.origin)
            for (i, output) in outputs.enumerated() {
                againstFirst[i].append(Self.error(output, first.outputs[i], forward: field, backward: nil, factor: codec.factor, origin: codec.origin))
            }
        } else {
            first = (CrossFrameAttention(reference: features), alignment, outputs)
        }
        previous = (guide, features, alignment, outputs)
    }

    /// The image 2×2-pooled until it is at most `maximumWidth` wide.
    func reduced(_ image: PlanarImage) -> PlanarImage {
        var image = image
        while maximumWidth > 0, image.width > maximumWidth, image.height >= 2 { image = image.averagePooled2() }
        return image
    }

    /// Displacement in pixels at pixel (x, y) from a grid field (bilinear between grid samples).
    static func displacement(_ field: CorrespondenceField, _ x: Float, _ y: Float, factor: Float, origin: Float) -> (Float, Float, Float) {
        let gx = min(max((x - origin) / factor, 0), Float(field.width - 1))
        let gy = min(max((y - origin) / factor, 0), Float(field.height - 1))
        let x0 = min(Int(gx), field.width - 1), y0 = min(Int(gy), field.height - 1)
        let x1 = min(x0 + 1, field.width - 1), y1 = min(y0 + 1, field.height - 1)
        let ax = gx - Float(x0), ay = gy - Float(y0)
        let i00 = y0 * field.width + x0, i01 = y0 * field.width + x1, i10 = y1 * field.width + x0, i11 = y1 * field.width + x1
        let w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay
        let dx = w00 * (field.x[i00] - Float(x0)) + w01 * (field.x[i01] - Float(x1)) + w10 * (field.x[i10] - Float(x0)) + w11 * (field.x[i11] - Float(x1))
        let dy = w00 * (field.y[i00] - Float(y0)) + w01 * (field.y[i01] - Float(y0)) + w10 * (field.y[i10] - Float(y1)) + w11 * (field.y[i11] - Float(y1))
        let c = w00 * field.confidence[i00] + w01 * field.confidence[i01] + w10 * field.confidence[i10] + w11 * field.confidence[i11]
        return (factor * dx, factor * dy, c)
    }

    /// E between `current` and `earlier` warped onto it. With `backward`, Lai et al.'s occlusion
    /// and motion-boundary masks; without, the match's confidence (> ½) is the mask.
    static func error(_ current: PlanarImage, _ earlier: PlanarImage, forward: CorrespondenceField,
                      backward: CorrespondenceField?, factor: Int, origin: Float) -> Double {
        let w = current.width, h = current.height, n = w * h, k = Float(factor)
        // The forward flow at every pixel, once.
        var fx = [Float](repeating: 0, count: n), fy = fx, fc = fx
        fx.withUnsafeMutableBufferPointer { px in fy.withUnsafeMutableBufferPointer { py in fc.withUnsafeMutableBufferPointer { pc in
            parallelChunks(h, minimumChunk: 8) { rows in
                for y in rows {
                    for x in 0..<w {
                        let (dx, dy, c) = displacement(forward, Float(x), Float(y), factor: k, origin: origin)
                        px[y &* w &+ x] = dx; py[y &* w &+ x] = dy; pc[y &* w &+ x] = c
                    }
                }
            }
        } } }
        let rowsPerChunk = 8
        let chunks = (h + rowsPerChunk - 1) / rowsPerChunk
        var sums = [Double](repeating: 0, count: chunks), weights = sums
        current.withUnsafeBufferPointer { cur in earlier.withUnsafeBufferPointer { old in
        fx.withUnsafeBufferPointer { fxp in fy.withUnsafeBufferPointer { fyp in fc.withUnsafeBufferPointer { fcp in
        sums.withUnsafeMutableBufferPointer { sumOut in weights.withUnsafeMutableBufferPointer { weightOut in
            parallelChunks(chunks) { range in
                for chunk in range {
                    var sum = 0.0, weight = 0.0
                    for y in (chunk * rowsPerChunk)..<min((chunk + 1) * rowsPerChunk, h) {
                        for x in 0..<w {
                            let i = y &* w &+ x
                            let dx = fxp[i], dy = fyp[i]
                            let sx = Float(x) + dx, sy = Float(y) + dy
                            guard sx >= 0, sy >= 0, sx <= Float(w - 1), sy <= Float(h - 1) else { continue }
                            if let backward {
                                let (bx, by, _) = displacement(backward, sx, sy, factor: k, origin: origin)
                                let sumX = dx + bx, sumY = dy + by
                                if sumX * sumX + sumY * sumY > 0.01 * (dx * dx + dy * dy + bx * bx + by * by) + 0.5 { continue }
                                // Motion boundary: the flow's gradient is large.
                                let xr = min(x + 1, w - 1), yd = min(y + 1, h - 1)
                                let gxx = fxp[y &* w &+ xr] - dx, gxy = fyp[y &* w &+ xr] - dy
                                let gyx = fxp[yd &* w &+ x] - dx, gyy = fyp[yd &* w &+ x] - dy
                                if gxx * gxx + gxy * gxy + gyx * gyx + gyy * gyy > 0.01 * (dx * dx + dy * dy) + 0.002 { continue }
                            } else if fcp[i] < 0.5 {
                                continue
                            }
                            let x0 = min(Int(sx), max(w - 2, 0)), y0 = min(Int(sy), max(h - 2, 0))
                            let x1 = min(x0 + 1, w - 1), y1 = min(y0 + 1, h - 1)
                            let ax = sx - Float(x0), ay = sy - Float(y0)
                            var e: Float = 0
                            for c in 0..<3 {
                                let p = old.baseAddress! + c &* n
                                let warped = (1 - ax) * (1 - ay) * p[y0 &* w &+ x0] + ax * (1 - ay) * p[y0 &* w &+ x1]
                                    + (1 - ax) * ay * p[y1 &* w &+ x0] + ax * ay * p[y1 &* w &+ x1]
                                let d = cur[c &* n &+ i] - warped
                                e += d * d
                            }
                            sum += Double(e / 3)
                            weight += 1
                        }
                    }
                    sumOut[chunk] = sum
                    weightOut[chunk] = weight
                }
            }
        } } } } } } }
        let sum = sums.reduce(0, +), weight = weights.reduce(0, +)
        return weight > 0 ? sum / weight : 0
    }
}

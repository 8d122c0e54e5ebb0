import Foundation
import Tensor

/// Carries a full-resolution image (an edit's detail) along a correspondence found on a coarser
/// feature grid: out(X) = image(X + D(X)), where D is the field's displacement scaled to pixels
/// and interpolated to every pixel. The image is sampled with Catmull–Rom interpolation, which
/// keeps sub-pixel motion smooth where nearest or bilinear sampling would shimmer or blur.
public enum Transport {
    /// - Parameters:
    ///   - image: what to carry, at full resolution (C × H × W), in reference coordinates.
    ///   - field: for each feature-grid position of the current frame, its reference position.
    ///   - factor: pixels per feature-grid sample.
    ///   - origin: the pixel position of feature sample 0 (the grid's phase, e.g. (k − 1)/2).
    /// - Returns: the carried image and the field's confidence at every pixel (1 × H × W).
    public static func carry(_ image: PlanarImage, along field: CorrespondenceField, factor: Int,
                             origin: Float) -> (image: PlanarImage, confidence: PlanarImage) {
        let h = image.height, w = image.width, c = image.channels
        var out = PlanarImage(uninitializedChannels: c, height: h, width: w)
        var confidence = PlanarImage(uninitializedChannels: 1, height: h, width: w)
        let k = Float(factor)
        image.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBufferPointer { dst in
        confidence.withUnsafeMutableBufferPointer { conf in
        field.x.withUnsafeBufferPointer { fx in
        field.y.withUnsafeBufferPointer { fy in
        field.confidence.withUnsafeBufferPointer { fc in
            let s = src.baseAddress!, d = dst.baseAddress!, cp = conf.baseAddress!
            let fw = field.width, fh = field.height, plane = h &* w
            parallelChunks(h, minimumChunk: 8) { rows in
                for y in rows {
                    // Feature-grid row of this pixel row, and its bilinear weights.
                    let gy = min(max((Float(y) - origin) / k, 0), Float(fh - 1))
                    let y0 = min(Int(gy), fh - 1), y1 = min(y0 + 1, fh - 1), ay = gy - Float(y0)
                    for x in 0..<w {
                        let gx = min(max((Float(x) - origin) / k, 0), Float(fw - 1))
                        let x0 = min(Int(gx), fw - 1), x1 = min(x0 + 1, fw - 1), ax = gx - Float(x0)
                        let i00 = y0 &* fw &+ x0, i01 = y0 &* fw &+ x1, i10 = y1 &* fw &+ x0, i11 = y1 &* fw &+ x1
                        let w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay
                        // Displacement in feature samples, interpolated, then in pixels.
                        let dx = w00 * (fx[i00] - Float(x0)) + w01 * (fx[i01] - Float(x1))
                            + w10 * (fx[i10] - Float(x0)) + w11 * (fx[i11] - Float(x1))
                        let dy = w00 * (fy[i00] - Float(y0)) + w01 * (fy[i01] - Float(y0))
                            + w10 * (fy[i10] - Float(y1)) + w11 * (fy[i11] - Float(y1))
                        cp[y &* w &+ x] = w00 * fc[i00] + w01 * fc[i01] + w10 * fc[i10] + w11 * fc[i11]
                        let sx = Float(x) + k * dx, sy = Float(y) + k * dy
                        sampleCubic(s, width: w, height: h, channels: c, plane: plane, x: sx, y: sy, into: d.advanced(by: y &* w &+ x))
                    }
                }
            }
        } } } } } }
        return (out, confidence)
    }

    /// Catmull–Rom sample of every channel at (x, y), edges clamped; writes out[c·plane].
    @inline(__always)
    static func sampleCubic(_ s: UnsafePointer<Float>, width w: Int, height h: Int, channels c: Int, plane: Int,
                            x: Float, y: Float, into out: UnsafeMutablePointer<Float>) {
        let cx = min(max(x, 0), Float(w - 1)), cy = min(max(y, 0), Float(h - 1))
        let ix = Int(cx), iy = Int(cy)
        let wx = catmullRomWeights(cx - Float(ix)), wy = catmullRomWeights(cy - Float(iy))
        let x0 = max(ix &- 1, 0), x1 = ix, x2 = min(ix &+ 1, w &- 1), x3 = min(ix &+ 2, w &- 1)
        let r0 = max(iy &- 1, 0) &* w, r1 = iy &* w, r2 = min(iy &+ 1, h &- 1) &* w, r3 = min(iy &+ 2, h &- 1) &* w
        var p = s
        for ch in 0..<c {
            let a = wx[0] * p[r0 &+ x0] + wx[1] * p[r0 &+ x1] + wx[2] * p[r0 &+ x2] + wx[3] * p[r0 &+ x3]
            let b = wx[0] * p[r1 &+ x0] + wx[1] * p[r1 &+ x1] + wx[2] * p[r1 &+ x2] + wx[3] * p[r1 &+ x3]
            let d = wx[0] * p[r2 &+ x0] + wx[1] * p[r2 &+ x1] + wx[2] * p[r2 &+ x2] + wx[3] * p[r2 &+ x3]
            let e = wx[0] * p[r3 &+ x0] + wx[1] * p[r3 &+ x1] + wx[2] * p[r3 &+ x2] + wx[3] * p[r3 &+ x3]
            out[ch &* plane] = wy[0] * a + wy[1] * b + wy[2] * d + wy[3] * e
            p += plane
        }
    }
}

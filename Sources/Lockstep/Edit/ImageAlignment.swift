import Foundation
import Tensor

/// The last step of the correspondence, on the images themselves. Matching on the latent's grid
/// leaves about a twentieth of a grid sample of error (0.4 px at k = 8): invisible for a colour
/// change, but enough to blur line-art and texture. Here each grid sample's displacement is
/// refined by Gauss–Newton on Σ |frame(p) − reference(p + d)|² over the pixels of its block
/// (Lucas–Kanade), starting from the attention's answer.
public struct ImageAlignment: Sendable {
    /// The reference image and its central-difference gradients, kept with the reference.
    let reference: PlanarImage
    let gradientX: PlanarImage
    let gradientY: PlanarImage

    public init(reference: PlanarImage) {
        self.reference = reference
        (gradientX, gradientY) = Self.gradients(reference)
    }

    /// Refines `field` (reference positions per grid sample, `factor` pixels per sample, sample 0
    /// at pixel `origin`) so that `frame` around each sample matches the reference.
    /// Samples whose confidence, and that of all eight neighbours, is below `minimumConfidence`
    /// are left as they are: a caller that weights by the interpolated confidence and ignores
    /// what falls below it never sees them.
    public func refine(_ field: inout CorrespondenceField, frame: PlanarImage, factor: Int, origin: Float,
                       iterations: Int = 3, minimumConfidence: Float = 0) {
        let w = frame.width, h = frame.height, c = frame.channels
        let rw = reference.width, rh = reference.height
        let k = Float(factor), radius = factor  // the block: ±k pixels around the sample, every other pixel
        let fw = field.width, fh = field.height
        frame.withUnsafeBufferPointer { fb in reference.withUnsafeBufferPointer { rb in
        gradientX.withUnsafeBufferPointer { gxb in gradientY.withUnsafeBufferPointer { gyb in
        field.x.withUnsafeMutableBufferPointer { fx in field.y.withUnsafeMutableBufferPointer { fy in
        field.confidence.withUnsafeBufferPointer { fc in
            let f = fb.baseAddress!, r = rb.baseAddress!, gxp = gxb.baseAddress!, gyp = gyb.baseAddress!
            let plane = w &* h, rplane = rw &* rh
            parallelChunks(fh, minimumChunk: 1) { rows in
                for j in rows {
                    for i in 0..<fw {
                        let index = j &* fw &+ i
                        if minimumConfidence > 0 {
                            var trusted = false
                            for jj in max(j &- 1, 0)...min(j &+ 1, fh &- 1) {
                                for ii in max(i &- 1, 0)...min(i &+ 1, fw &- 1) where fc[jj &* fw &+ ii] >= minimumConfidence {
                                    trusted = true
                                }
                            }
                            if !trusted { continue }
                        }
                        let cx = origin + k * Float(i), cy = origin + k * Float(j)
                        // Displacement in pixels from the attention's answer.
                        var dx = k * (fx[index] - Float(i)), dy = k * (fy[index] - Float(j))
                        for _ in 0..<iterations {
                            var hxx: Float = 0, hxy: Float = 0, hyy: Float = 0, bx: Float = 0, by: Float = 0
                            let xLo = Int(cx) &- radius, xHi = Int(cx) &+ radius
                            let yLo = Int(cy) &- radius, yHi = Int(cy) &+ radius
                            if xLo >= 0 && xHi < w && yLo >= 0 && yHi < h && Float(xLo) + dx >= 0 && Float(yLo) + dy >= 0
                                && Float(xHi) + dx < Float(rw - 1) && Float(yHi) + dy < Float(rh - 1) {
                                // The whole block inside both images: p + d needs no clamping, so its
                                // bilinear weights are the same at every pixel of the block.
                                let fdx = dx.rounded(.down), fdy = dy.rounded(.down)
                                let ax = dx - fdx, ay = dy - fdy
                                let w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay
                                let shift = Int(fdy) &* rw &+ Int(fdx)
                                var py = yLo
                                while py <= yHi {
                                    var px = xLo
                                    while px <= xHi {
                                        let o = py &* rw &+ px &+ shift
                                        var rp = r + o, gxq = gxp + o, gyq = gyp + o, fq = f + (py &* w &+ px)
                                        for _ in 0..<c {
                                            let value = w00 * rp[0] + w01 * rp[1] + w10 * rp[rw] + w11 * rp[rw &+ 1]
                                            let gx = w00 * gxq[0] + w01 * gxq[1] + w10 * gxq[rw] + w11 * gxq[rw &+ 1]
                                            let gy = w00 * gyq[0] + w01 * gyq[1] + w10 * gyq[rw] + w11 * gyq[rw &+ 1]
                                            let residual = fq[0] - value
                                            hxx += gx * gx; hxy += gx * gy; hyy += gy * gy
                                            bx += gx * residual; by += gy * residual
                                            rp += rplane; gxq += rplane; gyq += rplane; fq += plane
                                        }
                                        px &+= 2
                                    }
                                    py &+= 2
                                }
                            } else {  // near a border: clamp each sample
                                var py = Int(cy) &- radius
                                while py <= Int(cy) &+ radius {
                                    if py >= 0 && py < h {
                                        var px = Int(cx) &- radius
                                        while px <= Int(cx) &+ radius {
                                            if px >= 0 && px < w {
                                                // Bilinear sample of the reference and its gradient at p + d.
                                                let sx = min(max(Float(px) + dx, 0), Float(rw - 1))
                                                let sy = min(max(Float(py) + dy, 0), Float(rh - 1))
                                                let x0 = min(Int(sx), rw &- 2 < 0 ? 0 : rw &- 2), y0 = min(Int(sy), rh &- 2 < 0 ? 0 : rh &- 2)
                                                let ax = sx - Float(x0), ay = sy - Float(y0)
                                                let w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay
                                                let o = y0 &* rw &+ x0
                                                for ch in 0..<c {
                                                    let base = ch &* rplane &+ o
                                                    let value = w00 * r[base] + w01 * r[base &+ 1] + w10 * r[base &+ rw] + w11 * r[base &+ rw &+ 1]
                                                    let gx = w00 * gxp[base] + w01 * gxp[base &+ 1] + w10 * gxp[base &+ rw] + w11 * gxp[base &+ rw &+ 1]
                                                    let gy = w00 * gyp[base] + w01 * gyp[base &+ 1] + w10 * gyp[base &+ rw] + w11 * gyp[base &+ rw &+ 1]
                                                    let residual = f[ch &* plane &+ py &* w &+ px] - value
                                                    hxx += gx * gx; hxy += gx * gy; hyy += gy * gy
                                                    bx += gx * residual; by += gy * residual
                                                }
                                            }
                                            px &+= 2
                                        }
                                    }
                                    py &+= 2
                                }
                            }
                            let det = hxx * hyy - hxy * hxy
                            // Flat or one-dimensional content (no texture, or a single edge) leaves
                            // the displacement undetermined: keep the attention's answer.
                            guard det > 1e-4 * (hxx + hyy) * (hxx + hyy) && det > 1e-12 else { break }
                            let stepX = (hyy * bx - hxy * by) / det, stepY = (hxx * by - hxy * bx) / det
                            guard abs(stepX) <= k, abs(stepY) <= k else { break }
                            dx += stepX; dy += stepY
                            if stepX * stepX + stepY * stepY < 1e-4 { break }
                        }
                        fx[index] = Float(i) + dx / k
                        fy[index] = Float(j) + dy / k
                    }
                }
            }
        } } } } } } }
    }

    /// Central differences (one-sided at the borders), per channel.
    static func gradients(_ image: PlanarImage) -> (PlanarImage, PlanarImage) {
        let w = image.width, h = image.height, c = image.channels
        var gx = PlanarImage(uninitializedChannels: c, height: h, width: w)
        var gy = PlanarImage(uninitializedChannels: c, height: h, width: w)
        image.withUnsafeBufferPointer { src in gx.withUnsafeMutableBufferPointer { ox in gy.withUnsafeMutableBufferPointer { oy in
            let s = src.baseAddress!, px = ox.baseAddress!, py = oy.baseAddress!
            parallelChunks(c &* h, minimumChunk: 16) { rows in
                for row in rows {
                    let ch = row / h, y = row % h
                    let line = s + (ch &* h &+ y) &* w
                    let up = s + (ch &* h &+ max(y - 1, 0)) &* w, down = s + (ch &* h &+ min(y + 1, h - 1)) &* w
                    let outX = px + (ch &* h &+ y) &* w, outY = py + (ch &* h &+ y) &* w
                    let ny: Float = (y == 0 || y == h - 1) ? 1 : 0.5
                    for x in 0..<w {
                        let l = line[max(x - 1, 0)], rr = line[min(x + 1, w - 1)]
                        outX[x] = (rr - l) * ((x == 0 || x == w - 1) ? 1 : 0.5)
                        outY[x] = (down[x] - up[x]) * ny
                    }
                }
            }
        } } }
        return (gx, gy)
    }
}

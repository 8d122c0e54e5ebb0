import CFFmpeg
import Foundation
import Tensor

/// Converts between a coded pixel format and planar float RGB in [0, 1], with no scaling.
///
/// swscale does the colour work (YUV matrix and range, chroma interpolation, packing) into
/// planar integer RGB (GBRP, or GBRP16 above 8 bits); the step between integers and floats is
/// done here, exactly: v/255 on the way in, round(v·255) on the way out. swscale's own float
/// output was off by up to one level (128 came back as 127.47), which breaks lossless round trips.
/// One context per stream: `sws_getCachedContext` rebuilt it on every frame here.
final class PixelConverter {
    enum Direction { case toFloat, fromFloat }

    let width: Int
    let height: Int
    let codedFormat: AVPixelFormat
    let direction: Direction
    private let context: OpaquePointer
    /// The one-pass path for 8-bit 4:2:0 and 4:4:4 YUV; swscale handles everything else.
    private let yuv: YUVConversion?
    private let wide: Bool
    private let planes: UnsafeMutableRawPointer
    private let planeStride: Int
    private let lock = NSLock()

    /// `color` says which matrix and range the coded side uses; ignored for RGB formats.
    /// `bits` is the depth of the integer RGB in between: 8, or 16 for deeper sources.
    init(width: Int, height: Int, codedFormat: AVPixelFormat, direction: Direction, color: ColorInfo,
         bits: Int = 8, path: String) throws {
        self.width = width
        self.height = height
        self.codedFormat = codedFormat
        self.direction = direction
        wide = bits > 8
        let integerFormat = wide ? AV_PIX_FMT_GBRP16LE : AV_PIX_FMT_GBRP
        let (src, dst) = direction == .toFloat ? (codedFormat, integerFormat) : (integerFormat, codedFormat)
        // Accurate rounding and full chroma interpolation: the defaults trade precision for speed.
        let flags = Int32(SWS_POINT | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP)
        guard let ctx = sws_getContext(Int32(width), Int32(height), src, Int32(width), Int32(height), dst, flags, nil, nil, nil) else {
            let name = av_get_pix_fmt_name(codedFormat).map { String(cString: $0) } ?? "\(codedFormat.rawValue)"
            throw MediaError(.unsupported, path: path, "cannot convert pixel format \(name) to RGB")
        }
        context = ctx
        yuv = YUVConversion(format: codedFormat, color: color)
        if Self.isYUV(codedFormat) {
            let coefficients = sws_getCoefficients(Self.swsColorspace(color.matrix))
            let codedFull: Int32 = color.range == Int32(AVCOL_RANGE_JPEG.rawValue) || Self.isJPEGFormat(codedFormat) ? 1 : 0
            if direction == .toFloat {
                sws_setColorspaceDetails(ctx, coefficients, codedFull, coefficients, 1, 0, 1 << 16, 1 << 16)
            } else {
                sws_setColorspaceDetails(ctx, coefficients, 1, coefficients, codedFull, 0, 1 << 16, 1 << 16)
            }
        }
        let bytes = wide ? 2 : 1
        planeStride = (width * bytes + 63) & ~63
        planes = UnsafeMutableRawPointer.allocate(byteCount: 3 * planeStride * height, alignment: 64)
    }

    deinit {
        sws_freeContext(context)
        planes.deallocate()
    }

    /// Integer planes in swscale's GBRP order: G, B, R.
    private func planePointer(_ k: Int) -> UnsafeMutablePointer<UInt8> {
        (planes + k * planeStride * height).assumingMemoryBound(to: UInt8.self)
    }

    /// `toFloat` then `averagePooled(factor)` in one pass, without the full-size picture, where
    /// the direct YUV conversion handles the frame's format; false (and `pooled` untouched)
    /// elsewhere.
    func toFloatPooled(_ frame: UnsafePointer<AVFrame>, factor: Int, into pooled: inout PlanarImage) -> Bool {
        precondition(direction == .toFloat)
        guard let yuv else { return false }
        yuv.toFloatPooled(frame, width: width, height: height, factor: factor, into: &pooled)
        return true
    }

    /// Converts a decoded frame into `image` (3 × height × width, R, G, B planes). Frames are
    /// converted where they are used, so two threads may ask at once; the planes in between are
    /// one per converter.
    func toFloat(_ frame: UnsafePointer<AVFrame>, into image: inout PlanarImage) {
        precondition(direction == .toFloat)
        lock.lock()
        defer { lock.unlock() }
        if let yuv { return yuv.toFloat(frame, into: &image) }
        var dst: [UnsafeMutablePointer<UInt8>?] = [planePointer(0), planePointer(1), planePointer(2), nil]
        var dstStride: [Int32] = [Int32(planeStride), Int32(planeStride), Int32(planeStride), 0]
        withUnsafeBytes(of: frame.pointee.data) { srcData in
            withUnsafeBytes(of: frame.pointee.linesize) { srcStride in
                _ = sws_scale(context, srcData.bindMemory(to: UnsafePointer<UInt8>?.self).baseAddress!,
                              srcStride.bindMemory(to: Int32.self).baseAddress!, 0, Int32(height), &dst, &dstStride)
            }
        }
        let w = width, h = height, stride = planeStride, wide = self.wide
        let sources = [planePointer(2), planePointer(0), planePointer(1)]  // R, G, B
        image.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            parallelChunks(3 * h, minimumChunk: 32) { rows in
                for row in rows {
                    let c = row / h, y = row % h
                    let out = base + (c &* h &+ y) &* w
                    let line = UnsafeRawPointer(sources[c]) + y &* stride
                    if wide {
                        let p = line.assumingMemoryBound(to: UInt16.self)
                        for x in 0..<w { out[x] = Float(UInt16(littleEndian: p[x])) * (1 / 65535) }
                    } else {
                        let p = line.assumingMemoryBound(to: UInt8.self)
                        for x in 0..<w { out[x] = Float(p[x]) / 255 }
                    }
                }
            }
        }
    }

    /// Converts `image` into `frame`, whose buffers are already allocated in `codedFormat`.
    func fromFloat(_ image: PlanarImage, into frame: UnsafeMutablePointer<AVFrame>) {
        precondition(direction == .fromFloat)
        lock.lock()
        defer { lock.unlock() }
        if let yuv { return yuv.fromFloat(image, into: frame) }
        let w = width, h = height, stride = planeStride, wide = self.wide
        let targets = [planePointer(2), planePointer(0), planePointer(1)]  // R, G, B
        image.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress!
            parallelChunks(3 * h, minimumChunk: 32) { rows in
                for row in rows {
                    let c = row / h, y = row % h
                    let input = base + (c &* h &+ y) &* w
                    let line = UnsafeMutableRawPointer(targets[c]) + y &* stride
                    if wide {
                        let p = line.assumingMemoryBound(to: UInt16.self)
                        for x in 0..<w {
                            let v = min(max(input[x], 0), 1) * 65535 + 0.5
                            p[x] = UInt16(v).littleEndian
                        }
                    } else {
                        let p = line.assumingMemoryBound(to: UInt8.self)
                        for x in 0..<w {
                            let v = min(max(input[x], 0), 1) * 255 + 0.5
                            p[x] = UInt8(v)
                        }
                    }
                }
            }
        }
        let src: [UnsafePointer<UInt8>?] = [UnsafePointer(planePointer(0)), UnsafePointer(planePointer(1)), UnsafePointer(planePointer(2)), nil]
        let srcStride: [Int32] = [Int32(planeStride), Int32(planeStride), Int32(planeStride), 0]
        withUnsafeMutableBytes(of: &frame.pointee.data) { dstData in
            withUnsafeMutableBytes(of: &frame.pointee.linesize) { dstStride in
                _ = sws_scale(context, src, srcStride, 0, Int32(height),
                              dstData.bindMemory(to: UnsafeMutablePointer<UInt8>?.self).baseAddress!,
                              dstStride.bindMemory(to: Int32.self).baseAddress!)
            }
        }
    }

    static func isYUV(_ format: AVPixelFormat) -> Bool {
        guard let desc = av_pix_fmt_desc_get(format) else { return false }
        return desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_RGB) == 0 && desc.pointee.nb_components >= 3
            && desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_PAL) == 0
    }

    /// Whether frames in `format` carry an alpha channel.
    static func hasAlpha(_ format: AVPixelFormat) -> Bool {
        av_pix_fmt_desc_get(format).map { $0.pointee.flags & UInt64(AV_PIX_FMT_FLAG_ALPHA) != 0 } ?? false
    }

    static func isJPEGFormat(_ format: AVPixelFormat) -> Bool {
        [AV_PIX_FMT_YUVJ420P, AV_PIX_FMT_YUVJ422P, AV_PIX_FMT_YUVJ444P, AV_PIX_FMT_YUVJ440P, AV_PIX_FMT_YUVJ411P].contains(format)
    }

    /// The layout of a JPEG-range format (FFmpeg's deprecated yuvj*) without its range, which is
    /// said by the frame's colour range instead; any other format as it is.
    static func plainTwin(of format: AVPixelFormat) -> AVPixelFormat {
        switch format {
        case AV_PIX_FMT_YUVJ420P: AV_PIX_FMT_YUV420P
        case AV_PIX_FMT_YUVJ422P: AV_PIX_FMT_YUV422P
        case AV_PIX_FMT_YUVJ444P: AV_PIX_FMT_YUV444P
        case AV_PIX_FMT_YUVJ440P: AV_PIX_FMT_YUV440P
        case AV_PIX_FMT_YUVJ411P: AV_PIX_FMT_YUV411P
        default: format
        }
    }

    /// AVColorSpace → the SWS_CS_* constant that sws_getCoefficients takes.
    static func swsColorspace(_ matrix: Int32) -> Int32 {
        switch UInt32(bitPattern: matrix) {
        case AVCOL_SPC_BT709.rawValue: return SWS_CS_ITU709
        case AVCOL_SPC_FCC.rawValue: return SWS_CS_FCC
        case AVCOL_SPC_SMPTE240M.rawValue: return SWS_CS_SMPTE240M
        case AVCOL_SPC_BT2020_NCL.rawValue, AVCOL_SPC_BT2020_CL.rawValue: return SWS_CS_BT2020
        default: return SWS_CS_ITU601
        }
    }
}

import CFFmpeg
import Foundation
import Tensor

/// Single still images (png, jpg, bmp, tiff, webp), decoded and encoded through FFmpeg's image codecs.
public enum ImageFile {
    /// File extensions read as frames, lower case.
    public static let extensions: Set<String> = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"]
    /// The same, as said in messages.
    public static let extensionList = "png, jpg, bmp, tiff or webp"

    /// Decodes the image at `path` into RGB in [0, 1]. `bits` is its bit depth per component.
    public static func read(_ path: String) throws -> (image: PlanarImage, bits: Int) {
        let decoded = try decode(path)
        return (decoded.image, decoded.bits)
    }

    /// `read`, with the image's alpha channel (1 × H × W in [0, 1]) when it has one: a layer
    /// exported from an image editor is transparent where nothing was painted.
    public static func readWithAlpha(_ path: String) throws -> (image: PlanarImage, bits: Int, alpha: PlanarImage?) {
        let decoded = try decode(path, keepingAlpha: true)
        return (decoded.image, decoded.bits, decoded.alpha)
    }

    /// `read`, with whether the image had an alpha channel (which the image leaves out), and
    /// that channel itself with `keepingAlpha`.
    static func decode(_ path: String, keepingAlpha: Bool = false) throws -> (image: PlanarImage, bits: Int, hasAlpha: Bool, alpha: PlanarImage?) {
        FFmpegLog.install()
        try VideoReader.checkReadableFile(path, kind: "an image")
        let handles = CodecHandles()
        var options: OpaquePointer?
        av_dict_set(&options, "pattern_type", "none", 0)  // a '%' in a file name is not a pattern
        defer { av_dict_free(&options) }
        var ctx: UnsafeMutablePointer<AVFormatContext>?
        let opened = avformat_open_input(&ctx, path, av_find_input_format("image2"), &options)
        guard opened >= 0 else {
            throw MediaError(.notMedia, path: path, "not an image FFmpeg can read (\(FFmpegError(code: opened, operation: "open").message))")
        }
        handles.format = ctx
        guard avformat_find_stream_info(ctx, nil) >= 0, ctx!.pointee.nb_streams > 0 else {
            throw MediaError(.notMedia, path: path, "not an image FFmpeg can read")
        }
        let parameters = ctx!.pointee.streams[0]!.pointee.codecpar!
        guard let codec = avcodec_find_decoder(parameters.pointee.codec_id),
              let dec = avcodec_alloc_context3(codec) else {
            throw MediaError(.unsupported, path: path, "no decoder for this image format")
        }
        handles.codec = dec
        guard avcodec_parameters_to_context(dec, parameters) >= 0, avcodec_open2(dec, codec, nil) >= 0 else {
            throw MediaError(.unsupported, path: path, "cannot open the \(String(cString: codec.pointee.name)) decoder")
        }
        let packet = handles.packet, frame = handles.frame
        var got = false
        while !got {
            let read = av_read_frame(ctx, packet)
            _ = avcodec_send_packet(dec, read < 0 ? nil : packet)
            av_packet_unref(packet)
            let received = avcodec_receive_frame(dec, frame)
            if received >= 0 { got = true; break }
            if read < 0 && received != lockstep_averror_eagain() { break }
        }
        guard got, frame.pointee.width > 0, frame.pointee.height > 0 else {
            let reason = FFmpegLog.takeLastError().map { " (\($0))" } ?? ""
            throw MediaError(.damaged, path: path, "the image could not be decoded\(reason)")
        }
        let format = AVPixelFormat(rawValue: frame.pointee.format)
        let width = Int(frame.pointee.width), height = Int(frame.pointee.height)
        var color = ColorInfo.defaultFor(height: height)
        color.range = Int32(AVCOL_RANGE_JPEG.rawValue)  // JPEG stills are full range
        if frame.pointee.colorspace != AVCOL_SPC_UNSPECIFIED { color.matrix = Int32(frame.pointee.colorspace.rawValue) }
        let bits = av_pix_fmt_desc_get(format).map { Int($0.pointee.comp.0.depth) } ?? 8
        let converter = try PixelConverter(width: width, height: height, codedFormat: format, direction: .toFloat,
                                           color: color, bits: bits, path: path)
        var image = PlanarImage(uninitializedChannels: 3, height: height, width: width)
        converter.toFloat(UnsafePointer(frame), into: &image)
        var hasAlpha = PixelConverter.hasAlpha(format), alpha: PlanarImage?
        if let desc = av_pix_fmt_desc_get(format), desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_PAL) != 0 {
            // FFmpeg flags every palette format as having alpha; a palette image has it only
            // where a pixel's palette entry is not opaque (a PNG's tRNS chunk).
            let paletteAlpha = paletteAlphaPlane(of: frame)
            hasAlpha = paletteAlpha.values.contains { $0 < 1 }
            alpha = hasAlpha && keepingAlpha ? paletteAlpha : nil
        } else if hasAlpha && keepingAlpha {
            alpha = try alphaPlane(of: frame, path: path)
        }
        // Shown as a viewer shows it: the orientation a camera or a phone's photo editor stored
        // (EXIF, which FFmpeg's decoder gives as a display matrix) applied.
        if let orientation = Orientation(frame) {
            image = orientation.applied(to: image)
            alpha = alpha.map(orientation.applied)
        }
        return (image, bits, hasAlpha, alpha)
    }

    /// How a decoded picture is to be turned and mirrored for display: its display matrix's
    /// rotation in quarter turns clockwise, then a left–right mirror where the matrix has one.
    struct Orientation {
        let quarterTurns: Int, mirrored: Bool

        /// Nil where the frame has no display matrix, or one that leaves it as it is.
        init?(_ frame: UnsafeMutablePointer<AVFrame>) {
            guard let side = av_frame_get_side_data(frame, AV_FRAME_DATA_DISPLAYMATRIX),
                  side.pointee.size >= 9 * MemoryLayout<Int32>.size else { return nil }
            var m = [Int32](repeating: 0, count: 9)
            m.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: side.pointee.data, count: 36)) }
            // A mirror (negative determinant) is FFmpeg's `av_display_matrix_flip` of the first
            // column, after the rotation: undone before the rotation is read.
            mirrored = Int64(m[0]) * Int64(m[4]) - Int64(m[1]) * Int64(m[3]) < 0
            if mirrored { m[0] = -m[0]; m[3] = -m[3] }
            let degrees = -av_display_rotation_get(m)
            guard degrees.isFinite else { return nil }
            quarterTurns = ((Int((degrees / 90).rounded()) % 4) + 4) % 4
            if quarterTurns == 0 && !mirrored { return nil }
        }

        func applied(to image: PlanarImage) -> PlanarImage {
            let turned = image.rotatedClockwise(quarterTurns: quarterTurns)
            return mirrored ? turned.mirroredHorizontally() : turned
        }
    }

    /// The alpha of a palette picture: each pixel's palette entry's (FFmpeg's palette is 256
    /// native-endian 0xAARRGGBB words after the indices).
    static func paletteAlphaPlane(of frame: UnsafeMutablePointer<AVFrame>) -> PlanarImage {
        let width = Int(frame.pointee.width), height = Int(frame.pointee.height)
        var alpha = PlanarImage(uninitializedChannels: 1, height: height, width: width)
        let indices = frame.pointee.data.0!, stride = Int(frame.pointee.linesize.0)
        let palette = UnsafeRawPointer(frame.pointee.data.1!)
        alpha.withUnsafeMutableBufferPointer { out in
            for y in 0..<height {
                for x in 0..<width {
                    let entry = palette.loadUnaligned(fromByteOffset: 4 &* Int(indices[y &* stride &+ x]), as: UInt32.self)
                    out[y &* width &+ x] = Float(entry >> 24) / 255
                }
            }
        }
        return alpha
    }

    /// The alpha channel of a decoded picture, in [0, 1]: its last component, read row by row
    /// as integers of its own depth (no conversion of the colour, which `toFloat` has made).
    static func alphaPlane(of frame: UnsafeMutablePointer<AVFrame>, path: String) throws -> PlanarImage {
        let width = Int(frame.pointee.width), height = Int(frame.pointee.height)
        guard let desc = av_pix_fmt_desc_get(AVPixelFormat(rawValue: frame.pointee.format)),
              desc.pointee.flags & UInt64(AV_PIX_FMT_FLAG_FLOAT) == 0 else {
            throw MediaError(.unsupported, path: path, "cannot read the image's alpha channel")
        }
        let component = Int(desc.pointee.nb_components) - 1
        let depth = withUnsafeBytes(of: desc.pointee.comp) { $0.bindMemory(to: AVComponentDescriptor.self)[component].depth }
        let scale = 1 / Float((1 << depth) - 1)
        var alpha = PlanarImage(uninitializedChannels: 1, height: height, width: width)
        var line = [UInt16](repeating: 0, count: width)
        alpha.withUnsafeMutableBufferPointer { out in
            withUnsafeBytes(of: &frame.pointee.data) { data in withUnsafeBytes(of: &frame.pointee.linesize) { strides in
                let planes = data.bindMemory(to: UnsafePointer<UInt8>?.self).baseAddress!
                let lineSizes = strides.bindMemory(to: Int32.self).baseAddress!
                for y in 0..<height {
                    av_read_image_line2(&line, UnsafeMutablePointer(mutating: planes), lineSizes, desc, 0, Int32(y), Int32(component), Int32(width), 0, 2)
                    for x in 0..<width { out[y * width + x] = Float(line[x]) * scale }
                }
            } }
        }
        return alpha
    }

    /// Encodes `image` as PNG (8 bits per component, or 16 with `bits > 8`) and returns the bytes.
    public static func pngData(_ image: PlanarImage, bits: Int = 8) throws -> Data {
        let encoder = try PNGEncoder(width: image.width, height: image.height, bits: bits)
        return try encoder.encode(image)
    }

    /// Writes `image` as a PNG at `path`, through a temporary name.
    public static func writePNG(_ image: PlanarImage, to path: String, overwrite: Bool = false, bits: Int = 8) throws {
        let target = try OutputTarget(path: path, inputs: [], overwrite: overwrite)
        try target.write(try pngData(image, bits: bits))
    }
}

/// FFmpeg's PNG encoder, reused frame after frame.
final class PNGEncoder {
    private let handles = CodecHandles()
    private let converter: PixelConverter

    /// `sampleAspectRatio` goes into the PNG's pHYs chunk (for anamorphic video's frames).
    init(width: Int, height: Int, bits: Int, sampleAspectRatio: Rational = Rational(1, 1)) throws {
        guard let codec = avcodec_find_encoder(AV_CODEC_ID_PNG), let enc = avcodec_alloc_context3(codec) else {
            throw MediaError(.unsupported, path: "png", "this FFmpeg has no PNG encoder")
        }
        handles.codec = enc
        let format = bits > 8 ? AV_PIX_FMT_RGB48BE : AV_PIX_FMT_RGB24
        enc.pointee.width = Int32(width)
        enc.pointee.height = Int32(height)
        enc.pointee.pix_fmt = format
        enc.pointee.time_base = AVRational(num: 1, den: 25)
        if sampleAspectRatio.isValid && sampleAspectRatio != Rational(1, 1) { enc.pointee.sample_aspect_ratio = sampleAspectRatio.av }
        guard avcodec_open2(enc, codec, nil) >= 0 else {
            throw MediaError(.unsupported, path: "png", "cannot open the PNG encoder")
        }
        converter = try PixelConverter(width: width, height: height, codedFormat: format, direction: .fromFloat,
                                       color: .defaultFor(height: height), bits: bits, path: "png")
        let f = handles.frame
        f.pointee.format = format.rawValue
        f.pointee.width = Int32(width)
        f.pointee.height = Int32(height)
        guard av_frame_get_buffer(f, 0) >= 0 else { throw MediaError(.io, path: "png", "out of memory") }
    }

    func encode(_ image: PlanarImage) throws -> Data {
        let f = handles.frame, packet = handles.packet
        try check(av_frame_make_writable(f), "make frame writable")
        converter.fromFloat(image, into: f)
        try check(avcodec_send_frame(handles.codec, f), "encode png")
        try check(avcodec_receive_packet(handles.codec, packet), "encode png")
        defer { av_packet_unref(packet) }
        return Data(bytes: packet.pointee.data, count: Int(packet.pointee.size))
    }
}

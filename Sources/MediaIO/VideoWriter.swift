import CFFmpeg
import Foundation
import Tensor

/// How the video is encoded. Unset values take the container's sensible default
/// (H.264 via libx264 at CRF 18, preset medium, where the container allows H.264).
public struct EncoderOptions: Sendable {
    public var codec: String?
    public var crf: Int?
    public var preset: String?
    /// The container, by FFmpeg's muxer name (as `ffmpeg -f`); by default from the file name.
    /// Needed for standard output.
    public var format: String?

    public init(codec: String? = nil, crf: Int? = nil, preset: String? = nil, format: String? = nil) {
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.format = format
    }
}

/// Encodes frames and muxes them into a file whose container follows the extension (or
/// `EncoderOptions.format`), or into standard output, copying the input's audio and subtitle
/// streams. Follows FFmpeg's doc/examples/transcode.c: timestamps
/// rescaled at every time-base boundary, packet durations set, flush in order, then the trailer.
public final class VideoWriter: FrameSink {
    public var path: String { target.finalPath }
    /// How the output is named in messages ("stdout" for "-").
    private var shownPath: String { target.shownName }
    /// The encoder actually used, e.g. "libx264".
    public let encoderName: String
    /// Streams of the input that could not be copied into this container, one line each.
    public private(set) var warnings: [String] = []

    private let target: OutputTarget
    private let info: StreamInfo
    private let handles = CodecHandles()
    private var output: UnsafeMutablePointer<AVFormatContext> { handles.format! }
    private var encoder: UnsafeMutablePointer<AVCodecContext> { handles.codec! }
    private let videoStream: UnsafeMutablePointer<AVStream>
    private let converter: PixelConverter
    private let encoderTimeBase: AVRational
    private var copier: StreamCopier?
    private var durations: [Int64: Int64] = [:]
    private var lastEncoderPts = Int64.min
    /// End of the last frame written, in seconds: where a segment's copied audio stops.
    private var endSeconds = 0.0
    private var closed = false
    /// The buffers of frames converted ahead of `write` (`prepare`), reused once the encoder is done with them.
    private var framePool: OpaquePointer?
    /// Whether the output is one image file (the image2 muxer, named by an image's extension).
    private var isSingleImage = false
    /// Set by `inputEnded`: the copied streams run to the input's end.
    private var copiesToEnd = false

    public func inputEnded() { copiesToEnd = true }

    /// Opens the encoder and writes the container header under a temporary name.
    public init(target: OutputTarget, info: StreamInfo, options: EncoderOptions = EncoderOptions()) throws {
        FFmpegLog.install()
        self.target = target
        self.info = info
        let path = target.shownName
        let outputFormat = try Self.chooseContainer(options.format, target: target)
        let codec = try Self.chooseEncoder(options.codec, format: outputFormat, path: path)
        encoderName = String(cString: codec.pointee.name)

        var oc: UnsafeMutablePointer<AVFormatContext>?
        try checkOutput(avformat_alloc_output_context2(&oc, outputFormat, nil, target.temporaryPath), "create output", path: path)
        handles.format = oc
        // yuv4mpegpipe writes formats past 8 bits (C420p10) only when told that an unofficial
        // extension is fine, as `ffmpeg -strict -1` does; every reader of it in FFmpeg reads them.
        if String(cString: outputFormat.pointee.name) == "yuv4mpegpipe" { oc!.pointee.strict_std_compliance = FF_COMPLIANCE_UNOFFICIAL }
        // The muxer holds packets back to interleave the streams by time, until every stream has
        // one later or what it holds spans `max_interleave_delta` (10 s by default). Where a
        // stream ends early (audio shorter than the video) it held up to that much video: raw
        // 1080p out, audio ending at 5 s, 506 MB on a 10-second input and 908 MB on a 30-second
        // one. A second interleaves as well for playback (212 MB on both).
        oc!.pointee.max_interleave_delta = 1_000_000

        guard let enc = avcodec_alloc_context3(codec) else { throw MediaError(.io, path: path, "out of memory") }
        handles.codec = enc
        let pixelFormat = try Self.choosePixelFormat(codec, info: info, path: path)
        enc.pointee.width = Int32(info.width)
        enc.pointee.height = Int32(info.height)
        enc.pointee.pix_fmt = pixelFormat
        enc.pointee.sample_aspect_ratio = info.sampleAspectRatio.av
        enc.pointee.framerate = info.frameRate.av
        enc.pointee.thread_count = 0
        // Codecs of the MPEG family only store whole frame rates as their time base.
        // So do yuv4mpegpipe, which has no timestamps and writes the time base as the frame rate,
        // and AVI, whose header declares it as the rate (a 1/1000 base read as 1000 frames/s).
        let constantRateOnly = [AV_CODEC_ID_MPEG1VIDEO, AV_CODEC_ID_MPEG2VIDEO, AV_CODEC_ID_MPEG4, AV_CODEC_ID_MSMPEG4V3, AV_CODEC_ID_H263].contains(codec.pointee.id)
            || ["yuv4mpegpipe", "avi"].contains(String(cString: outputFormat.pointee.name))
        encoderTimeBase = constantRateOnly ? AVRational(num: info.frameRate.denominator, den: info.frameRate.numerator) : info.timeBase.av
        enc.pointee.time_base = encoderTimeBase
        let isYUV = PixelConverter.isYUV(pixelFormat)
        let color = isYUV ? Self.yuvColor(for: info) : info.color
        enc.pointee.colorspace = isYUV ? AVColorSpace(rawValue: UInt32(color.matrix)) : AVCOL_SPC_RGB
        // MJPEG is full-range YUV by definition, and so is a JPEG-range source's layout kept as
        // its plain twin (raw video).
        let source = info.pixelFormat.map { av_get_pix_fmt($0) } ?? AV_PIX_FMT_NONE
        let twinOfJPEG = PixelConverter.isJPEGFormat(source) && pixelFormat == PixelConverter.plainTwin(of: source)
        let fullRange = PixelConverter.isJPEGFormat(pixelFormat) || !isYUV || codec.pointee.id == AV_CODEC_ID_MJPEG || twinOfJPEG
        enc.pointee.color_range = fullRange ? AVCOL_RANGE_JPEG : AVColorRange(rawValue: UInt32(color.range))
        enc.pointee.color_primaries = AVColorPrimaries(rawValue: UInt32(color.primaries))
        enc.pointee.color_trc = AVColorTransferCharacteristic(rawValue: UInt32(color.transfer))
        if outputFormat.pointee.flags & AVFMT_GLOBALHEADER != 0 {
            enc.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER
        }
        try Self.openEncoder(enc, codec, options: options, path: path)

        var encodedColor = color
        encodedColor.range = Int32(enc.pointee.color_range.rawValue)
        converter = try PixelConverter(width: info.width, height: info.height, codedFormat: pixelFormat,
                                       direction: .fromFloat, color: encodedColor, bits: info.bitsPerComponent, path: path)

        guard let stream = avformat_new_stream(oc, nil) else { throw MediaError(.io, path: path, "out of memory") }
        videoStream = stream
        try checkOutput(avcodec_parameters_from_context(stream.pointee.codecpar, enc), "copy encoder parameters", path: path)
        stream.pointee.time_base = encoderTimeBase
        stream.pointee.avg_frame_rate = info.frameRate.av
        stream.pointee.sample_aspect_ratio = info.sampleAspectRatio.av
        // The one video track is the one to play (Matroska marks none by default, as FFmpeg's does).
        stream.pointee.disposition = AV_DISPOSITION_DEFAULT

        // A still image (one frame exported to edit) has no room for audio, and needs no word on it.
        isSingleImage = String(cString: outputFormat.pointee.name) == "image2"
        if let source = info.sourceFile, !isSingleImage {
            let copier = try StreamCopier(inputPath: source, output: oc!, video: stream)
            warnings = copier.skipped
            self.copier = copier
        }

        do {
            try Self.begin(oc!, target: target)
        } catch {
            abort()
            throw error
        }

        let f = handles.frame
        f.pointee.format = pixelFormat.rawValue
        f.pointee.width = Int32(info.width)
        f.pointee.height = Int32(info.height)
        try checkOutput(av_frame_get_buffer(f, 0), "allocate frame", path: path)
    }

    deinit {
        if !closed { abort() }
        // Buffers still held elsewhere keep the pool until they are let go.
        av_buffer_pool_uninit(&framePool)
    }

    /// Converts the frame to the encoder's pixel format (into a picture of its own, so that
    /// several can wait for `write`).
    public func prepare(_ frame: inout VideoFrame) throws {
        try checkSize(frame)
        guard let f = av_frame_alloc() else { throw MediaError(.io, path: shownPath, "out of memory") }
        let picture = OwnedFrame(f)
        f.pointee.format = handles.frame.pointee.format
        f.pointee.width = Int32(info.width)
        f.pointee.height = Int32(info.height)
        try checkOutput(lockstep_frame_get_pooled_buffer(f, &framePool, handles.frame), "allocate frame", path: shownPath)
        converter.fromFloat(frame.image, into: f)
        frame.replaceImage(by: picture)
    }

    private func checkSize(_ frame: VideoFrame) throws {
        guard frame.image.width == info.width, frame.image.height == info.height, frame.image.channels == 3 else {
            throw MediaError(.sizeMismatch, path: shownPath, "frame \(frame.index) is \(frame.image.width)×\(frame.image.height), the output is \(info.width)×\(info.height)")
        }
    }

    public func write(_ frame: VideoFrame) throws {
        // A single image (x.png) holds one frame; FFmpeg's image muxer refuses the second.
        if isSingleImage && lastEncoderPts != Int64.min {
            throw MediaError(.invalidArgument, path: shownPath, "is one image, and the video has more frames: give a directory (ending in /) for every frame, or --frames N:N+1 for one")
        }
        let f: UnsafeMutablePointer<AVFrame>
        if let encoded = frame.encoded {
            f = encoded.frame
        } else {
            try checkSize(frame)
            f = handles.frame
            try checkOutput(av_frame_make_writable(f), "make frame writable", path: shownPath)
            converter.fromFloat(frame.image, into: f)
        }
        var pts = av_rescale_q(frame.pts, info.timeBase.av, encoderTimeBase)
        if lastEncoderPts != Int64.min && pts <= lastEncoderPts { pts = lastEncoderPts + 1 }
        lastEncoderPts = pts
        f.pointee.pts = pts
        let duration = max(1, av_rescale_q(frame.duration, info.timeBase.av, encoderTimeBase))
        lockstep_frame_set_duration(f, duration)
        durations[pts] = duration
        // A segment's audio starts with its first frame; the first segment keeps what comes
        // before (an encoder's priming packets), as the whole run does, so segments join into it.
        if let segment = info.segment, segment.start > 0, let copier, copier.startSeconds == nil {
            copier.startSeconds = Double(frame.pts) * info.timeBase.value
        }
        endSeconds = Double(frame.pts + frame.duration) * info.timeBase.value
        try send(f)
    }

    /// Drains the encoder, copies the rest of the other streams, writes the trailer, and moves
    /// the file to its final name.
    public func finish() throws {
        guard !closed else { return }
        do {
            try send(nil)
            // A whole input keeps all its audio; a segment keeps the audio of its own time span,
            // the last one (reaching the input's end) all that runs on past its last frame.
            try copier?.copy(until: info.segment == nil || copiesToEnd ? nil : endSeconds.nextDown, into: output)
            try check(av_write_trailer(output), "write trailer")
            try closeFile()
            try target.commit()
            closed = true
        } catch let error as FFmpegError {
            abort()
            throw error.forOutput(shownPath)
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !closed else { return }
        closed = true
        if let oc = handles.format, oc.pointee.pb != nil { avio_closep(&oc.pointee.pb) }
        target.discard()
    }

    private func closeFile() throws {
        guard let oc = handles.format, oc.pointee.pb != nil else { return }
        try checkWriteError()
        // avio_closep flushes the last buffer: a full disk can show up only here.
        try check(avio_closep(&oc.pointee.pb), "close")
    }

    private func checkWriteError() throws {
        if let pb = output.pointee.pb, pb.pointee.error < 0 {
            throw FFmpegError(code: pb.pointee.error, operation: "write")
        }
    }

    private func send(_ frame: UnsafeMutablePointer<AVFrame>?) throws {
        do {
            try check(avcodec_send_frame(encoder, frame), "encode")
            let packet = handles.packet
            while true {
                let received = avcodec_receive_packet(encoder, packet)
                if received == lockstep_averror_eagain() || received == lockstep_averror_eof() { return }
                try check(received, "encode")
                packet.pointee.duration = durations.removeValue(forKey: packet.pointee.pts) ?? packet.pointee.duration
                packet.pointee.stream_index = videoStream.pointee.index
                av_packet_rescale_ts(packet, encoderTimeBase, videoStream.pointee.time_base)
                // Interleave the copied streams up to this packet's time, so the muxer's buffer stays small.
                if let copier, packet.pointee.dts != lockstep_nopts_value() {
                    let until = Double(packet.pointee.dts) * Rational(videoStream.pointee.time_base).value
                    try copier.copy(until: until, into: output)
                }
                copier?.fixOffset(of: output)
                try check(av_interleaved_write_frame(output, packet), "write")
                try checkWriteError()
            }
        } catch let error as FFmpegError {
            throw error.forOutput(shownPath)
        }
    }

    // MARK: - Choices

    /// The muxer: by name when given (FFmpeg's, as `ffmpeg -f`), otherwise from the file name.
    /// `framesAllowed`: the command can write a frame directory instead (not `concat`).
    static func chooseContainer(_ name: String?, target: OutputTarget, framesAllowed: Bool = true) throws -> UnsafePointer<AVOutputFormat> {
        let path = target.shownName
        let format: UnsafePointer<AVOutputFormat>
        if let name {
            guard let named = av_guess_format(name, nil, nil) else {
                throw MediaError(.badOption, path: path, "unknown format '\(name)' (FFmpeg's muxer names, as ffmpeg -f: nut, yuv4mpegpipe, matroska, mp4, mpegts)")
            }
            format = named
        } else {
            let needsFormat = "needs --format: nut or yuv4mpegpipe (raw video, for a pipe into ffmpeg), matroska, mpegts, mp4"
            if target.isStandardOutput {
                throw MediaError(.badOption, path: path, "writing to stdout \(needsFormat)")
            }
            guard let guessed = av_guess_format(nil, target.finalPath, nil) else {
                if target.writesInPlace {
                    throw MediaError(.badOption, path: path, "is a pipe or a device: writing to it \(needsFormat)")
                }
                let ext = URL(fileURLWithPath: path).pathExtension
                throw MediaError(.invalidArgument, path: path, ext.isEmpty
                    ? "no container: give the output a file extension such as .mp4 or .mkv" + (framesAllowed ? ", or write to a directory that does not exist yet" : "")
                    : "unknown container '.\(ext)' (try .mp4, .mkv, .mov or .webm)")
            }
            format = guessed
        }
        let muxer = String(cString: format.pointee.name)
        if muxer == "null" {
            throw MediaError(.invalidArgument, path: path, "the null format writes nothing; to time a command, write to -o - --format nut > /dev/null")
        }
        if manyFiles.contains(muxer) {
            throw MediaError(.invalidArgument, path: path, "the \(muxer) format writes several files, which Lockstep cannot write under one temporary name: write one file (e.g. .mp4), then split it with ffmpeg -f \(muxer)")
        }
        if format.pointee.video_codec == AV_CODEC_ID_NONE {
            throw MediaError(.invalidArgument, path: path, "the \(muxer) format holds no video; choose a video container (e.g. .mp4, .mkv)")
        }
        return format
    }

    /// Opens the muxer's file, under the target's temporary name or on stdout, and writes the
    /// container header. On failure the caller aborts: closes what was opened and discards it.
    static func begin(_ oc: UnsafeMutablePointer<AVFormatContext>, target: OutputTarget) throws {
        target.begin()
        let format = oc.pointee.oformat!
        if format.pointee.flags & AVFMT_NOFILE == 0 {
            let url = target.isStandardOutput ? "pipe:1" : (target.writesInPlace ? "file:" : "") + target.temporaryPath
            let opened = avio_open(&oc.pointee.pb, url, AVIO_FLAG_WRITE)
            if opened < 0 {
                throw MediaError(.unwritable, path: target.shownName, "cannot create the output: \(FFmpegError(code: opened, operation: "open").message)")
            }
        }
        var muxerOptions: OpaquePointer?
        defer { av_dict_free(&muxerOptions) }
        if target.writesInPlace, isMP4Family(format) {
            // A pipe cannot be seeked back to write the index at the start: fragmented MP4.
            av_dict_set(&muxerOptions, "movflags", "frag_keyframe+empty_moov+default_base_moof", 0)
        }
        if isMP4Family(format) {
            // A segment that starts later than 0 is placed by an edit list counted in the movie's
            // time scale, by default milliseconds; in one that every stream's time base divides,
            // each stream starts at its exact time, so segments join into the whole run.
            var scale: Int64 = 1
            for i in 0..<Int(oc.pointee.nb_streams) {
                let den = Int64(oc.pointee.streams[i]!.pointee.time_base.den)
                if den > 0 { scale = scale / gcd(scale, den) * den }
            }
            if scale > 1 && scale <= Int64(Int32.max) { av_dict_set(&muxerOptions, "movie_timescale", String(scale), 0) }
        }
        try checkOutput(avformat_write_header(oc, &muxerOptions), "write header", path: target.shownName)
    }

    /// The MP4 family's muxers, which need fragmenting to write to a pipe.
    static func isMP4Family(_ format: UnsafePointer<AVOutputFormat>) -> Bool {
        ["mp4", "mov", "ipod", "ismv", "3gp", "3g2", "psp", "f4v"].contains(String(cString: format.pointee.name))
    }

    /// Muxers that write several files (segments and a playlist, or other muxers' outputs): an
    /// output must be one file, written under a temporary name and moved into place.
    static let manyFiles: Set<String> = ["hls", "dash", "segment", "stream_segment", "ssegment", "tee", "fifo"]

    /// Containers made for pipes between tools: raw video by default (see `chooseEncoder`).
    static let rawByDefault: Set<String> = ["nut", "yuv4mpegpipe"]

    /// Containers made for H.264 whose muxer cannot say so (`avformat_query_codec` answers
    /// "unknown", and the default would be MPEG-2): MPEG-TS, what broadcast and HLS carry H.264 in.
    static let carriesH264Undeclared: Set<String> = ["mpegts"]

    static func chooseEncoder(_ name: String?, format: UnsafePointer<AVOutputFormat>, path: String) throws -> UnsafePointer<AVCodec> {
        let container = String(cString: format.pointee.name)
        if let name {
            var codec = avcodec_find_encoder_by_name(name)
            if codec == nil, let descriptor = avcodec_descriptor_get_by_name(name) {
                codec = avcodec_find_encoder(descriptor.pointee.id)
            }
            guard let codec, codec.pointee.type == AVMEDIA_TYPE_VIDEO else {
                throw MediaError(.badOption, path: path, "unknown video codec '\(name)' (try libx264, ffv1, libvpx-vp9, mpeg4)")
            }
            if avformat_query_codec(format, codec.pointee.id, FF_COMPLIANCE_NORMAL) == 0, !StreamCopier.headerAccepts(format, { context in
                guard let stream = avformat_new_stream(context, nil) else { throw MediaError(.io, path: path, "out of memory") }
                stream.pointee.codecpar.pointee.codec_type = AVMEDIA_TYPE_VIDEO
                stream.pointee.codecpar.pointee.codec_id = codec.pointee.id
                stream.pointee.codecpar.pointee.width = 64
                stream.pointee.codecpar.pointee.height = 48
                stream.pointee.time_base = AVRational(num: 1, den: 25)
            }) {
                throw MediaError(.badOption, path: path, "the \(container) container cannot hold \(name) video")
            }
            return codec
        }
        // NUT and yuv4mpegpipe carry frames to another tool: uncompressed, as FFmpeg's own pipes do.
        if rawByDefault.contains(container) {
            let raw = format.pointee.video_codec == AV_CODEC_ID_WRAPPED_AVFRAME ? AV_CODEC_ID_WRAPPED_AVFRAME : AV_CODEC_ID_RAWVIDEO
            if let codec = avcodec_find_encoder(raw) { return codec }
        }
        if avformat_query_codec(format, AV_CODEC_ID_H264, FF_COMPLIANCE_NORMAL) == 1 || carriesH264Undeclared.contains(container),
           let x264 = avcodec_find_encoder_by_name("libx264") {
            return x264
        }
        // The container's codec for this file name: an image muxer takes it from the extension
        // (PNG for .png; its default would be JPEG whatever the name).
        let guessed = av_guess_codec(UnsafeMutablePointer(mutating: format), nil, path, nil, AVMEDIA_TYPE_VIDEO)
        guard let codec = avcodec_find_encoder(guessed != AV_CODEC_ID_NONE ? guessed : format.pointee.video_codec) else {
            throw MediaError(.unsupported, path: path, "no video encoder for the \(container) container in this FFmpeg")
        }
        return codec
    }

    /// The colour tags of a YUV output. A source coded in RGB (PNG frames are not, but FFV1,
    /// HuffYUV or x264rgb video is) says "RGB" for its matrix, and usually full range: its
    /// YUV takes the matrix and range players assume at its size, and its primaries and transfer
    /// where it names them (an RGB matrix on YUV is invalid: VP9 refuses it, zimg too).
    static func yuvColor(for info: StreamInfo) -> ColorInfo {
        guard info.color.matrix == Int32(AVCOL_SPC_RGB.rawValue) else { return info.color }
        var color = ColorInfo.defaultFor(height: info.height)
        let unspecified = (primaries: Int32(AVCOL_PRI_UNSPECIFIED.rawValue), transfer: Int32(AVCOL_TRC_UNSPECIFIED.rawValue))
        if info.color.primaries != unspecified.primaries { color.primaries = info.color.primaries }
        if info.color.transfer != unspecified.transfer { color.transfer = info.color.transfer }
        return color
    }

    /// The input's own pixel format when the encoder takes it (a pass-through keeps its chroma);
    /// otherwise 4:2:0 for lossy codecs where the size allows (what players expect), 4:4:4 for odd
    /// sizes (libx264 refuses odd sizes in 4:2:0), planar RGB for lossless codecs (bit-exact round trip).
    static func choosePixelFormat(_ codec: UnsafePointer<AVCodec>, info: StreamInfo, path: String) throws -> AVPixelFormat {
        var supported: [AVPixelFormat] = []
        if var p = codec.pointee.pix_fmts {
            while p.pointee != AV_PIX_FMT_NONE { supported.append(p.pointee); p += 1 }
        }
        let even = info.width % 2 == 0 && info.height % 2 == 0
        let source = info.pixelFormat.map { av_get_pix_fmt($0) } ?? AV_PIX_FMT_NONE
        let subsampled = av_pix_fmt_desc_get(source).map { $0.pointee.log2_chroma_w > 0 || $0.pointee.log2_chroma_h > 0 } ?? true
        let sourceFits = PixelConverter.isYUV(source) && (even || !subsampled)
        if supported.isEmpty {
            // Raw video (to a pipe) takes any layout: the input's own planar YUV, as it came;
            // otherwise the plain 4:2:0 (4:4:4 at odd sizes) every reader of raw video knows.
            let planar = av_pix_fmt_desc_get(source).map { $0.pointee.flags & UInt64(AV_PIX_FMT_FLAG_PLANAR) != 0 && $0.pointee.nb_components == 3 } ?? false
            // (A JPEG-range layout is written as its plain twin, tagged full range.)
            if sourceFits && planar { return PixelConverter.plainTwin(of: source) }
            return even ? AV_PIX_FMT_YUV420P : AV_PIX_FMT_YUV444P
        }
        let descriptor = avcodec_descriptor_get(codec.pointee.id)
        let props = descriptor?.pointee.props ?? 0
        // libwebp is opened lossless (`openEncoder`): in RGB, so that its pictures are the frames.
        let losslessOnly = props & AV_CODEC_PROP_LOSSLESS != 0 && props & AV_CODEC_PROP_LOSSY == 0
            || String(cString: codec.pointee.name).hasPrefix("libwebp")
        if !losslessOnly && sourceFits {
            if supported.contains(source) { return source }
            // The encoder's planar YUV format nearest the source's, as FFmpeg picks it: a 12-bit
            // source gets 10 bits with its own chroma, not 8-bit 4:2:0.
            var candidates = supported.filter { format in
                PixelConverter.isYUV(format) && !PixelConverter.isJPEGFormat(format) && !PixelConverter.hasAlpha(format)
                    && av_pix_fmt_desc_get(format).map { $0.pointee.flags & UInt64(AV_PIX_FMT_FLAG_PLANAR) != 0 } == true
            } + [AV_PIX_FMT_NONE]
            let nearest = avcodec_find_best_pix_fmt_of_list(&candidates, source, 0, nil)
            if nearest != AV_PIX_FMT_NONE { return nearest }
        }
        // Other sources get 4:2:0 (4:4:4 at odd sizes), in 10 bits where theirs are deeper and the
        // encoder takes it.
        let deep = info.bitsPerComponent > 8
        let preferred: AVPixelFormat = losslessOnly
            ? (deep ? AV_PIX_FMT_GBRP16LE : AV_PIX_FMT_GBRP)
            : (even ? (deep ? AV_PIX_FMT_YUV420P10LE : AV_PIX_FMT_YUV420P) : (deep ? AV_PIX_FMT_YUV444P10LE : AV_PIX_FMT_YUV444P))
        if supported.contains(preferred) { return preferred }
        if !losslessOnly && deep, supported.contains(even ? AV_PIX_FMT_YUV420P : AV_PIX_FMT_YUV444P) {
            return even ? AV_PIX_FMT_YUV420P : AV_PIX_FMT_YUV444P
        }
        var candidates = supported + [AV_PIX_FMT_NONE]
        return avcodec_find_best_pix_fmt_of_list(&candidates, preferred, 0, nil)
    }

    static func openEncoder(_ enc: UnsafeMutablePointer<AVCodecContext>, _ codec: UnsafePointer<AVCodec>, options: EncoderOptions, path: String) throws {
        var dict: OpaquePointer?
        defer { av_dict_free(&dict) }
        let name = String(cString: codec.pointee.name)
        let hasOption = { (option: String) -> Bool in
            guard let cls = codec.pointee.priv_class else { return false }
            var clsPointer: UnsafePointer<AVClass>? = cls
            return withUnsafeMutablePointer(to: &clsPointer) { av_opt_find(UnsafeMutableRawPointer($0), option, nil, 0, AV_OPT_SEARCH_FAKE_OBJ) != nil }
        }
        if let crf = options.crf ?? (hasOption("crf") ? (name == "libx264" || name == "libx265" ? 18 : 31) : nil) {
            guard hasOption("crf") else {
                throw MediaError(.badOption, path: path, "the \(name) encoder has no CRF setting; leave out --crf")
            }
            av_dict_set(&dict, "crf", String(crf), 0)
            if name.hasPrefix("libvpx") { av_dict_set(&dict, "b", "0", 0) }
        }
        if let preset = options.preset ?? (hasOption("preset") && name.hasPrefix("libx26") ? "medium" : nil) {
            guard hasOption("preset") else {
                throw MediaError(.badOption, path: path, "the \(name) encoder has no presets; leave out --preset")
            }
            av_dict_set(&dict, "preset", preset, 0)
        }
        // x265 prints its own banner and settings on stderr, past FFmpeg's log: errors only.
        if name == "libx265" { av_dict_set(&dict, "x265-params", "log-level=error", 0) }
        let lossy = (avcodec_descriptor_get(codec.pointee.id)?.pointee.props ?? 0) & AV_CODEC_PROP_LOSSY != 0
        if !hasOption("crf") && lossy && codec.pointee.capabilities & AV_CODEC_CAP_EXPERIMENTAL == 0 {
            // MPEG-2, MPEG-4 Part 2, MJPEG, Theora: constant quantiser 3 instead of their 200 kb/s default.
            enc.pointee.flags |= AV_CODEC_FLAG_QSCALE
            enc.pointee.global_quality = 3 * FF_QP2LAMBDA
        }
        // WebP is lossy at quality 75 by default: a frame exported to edit (or a WebP sequence)
        // would carry that loss into every frame the edit is carried to.
        if name.hasPrefix("libwebp") && hasOption("lossless") { av_dict_set(&dict, "lossless", "1", 0) }
        if name.hasPrefix("libvpx") {
            av_dict_set(&dict, "row-mt", "1", 0)
            av_dict_set(&dict, "deadline", "good", 0)
            av_dict_set(&dict, "cpu-used", "4", 0)
        }
        let opened = avcodec_open2(enc, codec, &dict)
        if opened < 0 {
            let detail = FFmpegLog.takeLastError() ?? FFmpegError(code: opened, operation: "open").message
            throw MediaError(.invalidArgument, path: path, "cannot open the \(name) encoder for \(enc.pointee.width)×\(enc.pointee.height): \(detail)")
        }
    }
}

private func gcd(_ a: Int64, _ b: Int64) -> Int64 { b == 0 ? a : gcd(b, a % b) }

import CFFmpeg
import Foundation
import Tensor

/// Demuxes and decodes the best video stream of a file, one frame at a time, as planar float
/// RGB with presentation timestamps. Follows FFmpeg's doc/examples/demux_decode.c: read, send,
/// receive, and drain at the end.
///
/// Damage is what FFmpeg reports while reading (demuxer and decoder errors, corrupt packets),
/// never a frame count the container declares. Under `DamagePolicy.report` it does not stop
/// decoding: every frame that can be decoded is returned, and the damage is kept in `damage`
/// (and the job's `DamageLog`). Under `.refuse`, `next()` throws `MediaError(.damaged)` at once.
public final class VideoReader: FrameSource {
    public let path: String
    public private(set) var info: StreamInfo

    private let handles: CodecHandles
    private var format: UnsafeMutablePointer<AVFormatContext>? { handles.format }
    private var decoder: UnsafeMutablePointer<AVCodecContext>? { handles.codec }
    private var packet: UnsafeMutablePointer<AVPacket> { handles.packet }
    private var frame: UnsafeMutablePointer<AVFrame> { handles.frame }
    private let streamIndex: Int32
    private var converter: PixelConverter?
    private let quarterTurns: Int
    private let frameDuration: Int64

    private var demuxerDone = false
    private var finished = false
    private var decodedCount = 0
    private var lastPts: Int64 = Int64.min
    /// Added to the stream's timestamps after its clock restarted (see `convertCurrentFrame`).
    private var clockOffset: Int64 = 0

    private let logged = FFmpegLog.Collector()
    private var notes: [String] = []
    private var noteCount = 0
    private var firstDamagedFrame: Int?
    private let damageLog: DamageLog?
    private let policy: DamagePolicy
    /// The damage found so far (complete once `next()` has returned nil); nil for a clean input.
    public private(set) var damage: Damage?

    /// Opens `path`. Damage found while decoding goes to `damageLog`, whose policy says whether
    /// it stops the reading (`.report` when there is no log).
    /// "-" reads standard input: a stream FFmpeg can demux from a pipe (yuv4mpegpipe, NUT,
    /// Matroska, MPEG-TS), read once.
    public init(path location: String, damageLog: DamageLog? = nil) throws {
        let path = StandardStream.shownName(location)
        let fromPipe = StandardStream.isStandard(location)
        self.path = path
        self.damageLog = damageLog
        policy = damageLog?.policy ?? .report
        FFmpegLog.install()
        let handles = CodecHandles()
        self.handles = handles
        // From here on, `handles` frees what was opened, also when init throws.
        try Self.openDemuxer(location, into: handles)
        let ctx = handles.format
        var codec: UnsafePointer<AVCodec>?
        let best = av_find_best_stream(ctx, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0)
        if best == lockstep_averror_decoder_not_found() {
            let id = Self.firstVideoCodecID(ctx!)
            throw MediaError(.unsupported, path: path, "unsupported video codec '\(String(cString: avcodec_get_name(id)))': no decoder in this FFmpeg")
        }
        guard best >= 0, let codec else {
            throw MediaError(.notMedia, path: path, "not a video: it has no video stream")
        }
        // FFmpeg prefers a real video stream to cover art, but offers cover art when that is all.
        guard ctx!.pointee.streams[Int(best)]!.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC == 0 else {
            throw MediaError(.notMedia, path: path, "not a video: its only picture is cover art")
        }
        streamIndex = best
        // From here on, what FFmpeg logs through these contexts is about this input.
        handles.logCollector = logged
        ctx!.pointee.opaque = logged.contextTag
        let stream = ctx!.pointee.streams[Int(best)]!
        for i in 0..<Int(ctx!.pointee.nb_streams) where i != Int(best) {
            ctx!.pointee.streams[i]!.pointee.discard = AVDISCARD_ALL
        }

        guard let dec = avcodec_alloc_context3(codec) else { throw MediaError(.io, path: path, "out of memory") }
        handles.codec = dec
        dec.pointee.opaque = logged.contextTag
        try check(avcodec_parameters_to_context(dec, stream.pointee.codecpar), "read codec parameters")
        dec.pointee.pkt_timebase = stream.pointee.time_base
        dec.pointee.thread_count = 0  // one per core: decoding is single-threaded otherwise
        // Frames must decode the same every time they are read (two-pass jobs check it). FFmpeg
        // 5.1's VP3/Theora decoder with frame threads does not, on a stream of the corpus (a race:
        // frame 1 came out 87 or 13 levels bright; `ffmpeg -f framemd5` differs from run to run,
        // with -thread_type slice it never does), so it gets slice threads only. It is cheap to decode.
        let racy = [AV_CODEC_ID_THEORA, AV_CODEC_ID_VP3].contains(codec.pointee.id)
        dec.pointee.thread_type = racy ? FF_THREAD_SLICE : FF_THREAD_FRAME | FF_THREAD_SLICE
        let openDecoder = avcodec_open2(dec, codec, nil)
        if openDecoder < 0 {
            throw MediaError(.unsupported, path: path, "cannot open the \(String(cString: codec.pointee.name)) decoder: \(FFmpegError(code: openDecoder, operation: "open").message)")
        }
        let codedWidth = Int(dec.pointee.width), codedHeight = Int(dec.pointee.height)
        guard codedWidth > 0, codedHeight > 0 else {
            throw MediaError(.notMedia, path: path, "the video stream has no frame size")
        }

        // Rotation metadata: frames are turned upright here, so everything downstream sees
        // what a player shows. Only multiples of 90° exist in practice; others are refused.
        let clockwise = -lockstep_stream_rotation(stream)
        let normalized = (clockwise.truncatingRemainder(dividingBy: 360) + 360).truncatingRemainder(dividingBy: 360)
        let turns = Int((normalized / 90).rounded())
        guard abs(normalized - Double(turns) * 90) < 1 else {
            throw MediaError(.unsupported, path: path, "rotation of \(Int(normalized))° is not supported (only multiples of 90°)")
        }
        quarterTurns = turns % 4
        let swapped = quarterTurns % 2 == 1

        let timeBase = Rational(stream.pointee.time_base)
        var rate = Rational(stream.pointee.avg_frame_rate)
        if !rate.isValid { rate = Rational(stream.pointee.r_frame_rate) }
        if !rate.isValid { rate = Rational(25, 1) }
        frameDuration = max(1, av_rescale_q(1, AVRational(num: rate.denominator, den: rate.numerator), stream.pointee.time_base))
        var sar = Rational(stream.pointee.sample_aspect_ratio)
        if !sar.isValid { sar = Rational(dec.pointee.sample_aspect_ratio) }
        if !sar.isValid { sar = Rational(1, 1) }
        if swapped { sar = Rational(sar.denominator, sar.numerator) }
        let bits = av_pix_fmt_desc_get(dec.pointee.pix_fmt).map { Int($0.pointee.comp.0.depth) } ?? 8
        var color = ColorInfo.defaultFor(height: codedHeight)
        if dec.pointee.colorspace != AVCOL_SPC_UNSPECIFIED { color.matrix = Int32(dec.pointee.colorspace.rawValue) }
        if dec.pointee.color_range != AVCOL_RANGE_UNSPECIFIED { color.range = Int32(dec.pointee.color_range.rawValue) }
        if dec.pointee.color_primaries != AVCOL_PRI_UNSPECIFIED { color.primaries = Int32(dec.pointee.color_primaries.rawValue) }
        if dec.pointee.color_trc != AVCOL_TRC_UNSPECIFIED { color.transfer = Int32(dec.pointee.color_trc.rawValue) }
        let declared = stream.pointee.nb_frames > 0 ? Int(stream.pointee.nb_frames) : nil

        info = StreamInfo(
            width: swapped ? codedHeight : codedWidth, height: swapped ? codedWidth : codedHeight,
            timeBase: timeBase, frameRate: rate, sampleAspectRatio: sar, declaredFrameCount: declared,
            codecName: String(cString: codec.pointee.name), bitsPerComponent: bits,
            pixelFormat: av_get_pix_fmt_name(dec.pointee.pix_fmt).map { String(cString: $0) }, color: color,
            sourceFile: fromPipe ? nil : location)
        info.hasAlpha = PixelConverter.hasAlpha(dec.pointee.pix_fmt)
        // Audio and subtitles are copied by reading the input again, which a pipe cannot be.
        if fromPipe {
            for i in 0..<Int(ctx!.pointee.nb_streams) {
                let parameters = ctx!.pointee.streams[i]!.pointee.codecpar!.pointee
                guard parameters.codec_type == AVMEDIA_TYPE_AUDIO || parameters.codec_type == AVMEDIA_TYPE_SUBTITLE else { continue }
                info.unreadStreams.append("stream \(i) (\(String(cString: avcodec_get_name(parameters.codec_id))))")
            }
        }
        let fields = stream.pointee.codecpar.pointee.field_order
        info.isInterlaced = fields != AV_FIELD_UNKNOWN && fields != AV_FIELD_PROGRESSIVE
    }

    public func next() throws -> VideoFrame? {
        if finished { return nil }
        let index = decodedCount
        let frame = try FFmpegLog.collecting(into: logged) { try decodeNext() }
        try noticeDamage(whileDecoding: index)
        // A video track with no pictures (an audio file's empty video track) is not a video to
        // process: every command would write or measure nothing, and say it succeeded.
        if frame == nil && decodedCount == 0 {
            if let damage {
                throw MediaError(.damaged, path: path, "damaged video: no frame could be decoded (\(damage.reasons.first ?? "decode error"))")
            }
            throw MediaError(.notMedia, path: path, "its video stream has no frames")
        }
        return frame
    }

    private func decodeNext() throws -> VideoFrame? {
        while true {
            let received = avcodec_receive_frame(decoder, frame)
            if received >= 0 {
                defer { av_frame_unref(frame) }
                if frame.pointee.decode_error_flags != 0 || frame.pointee.flags & AV_FRAME_FLAG_CORRUPT != 0 {
                    note("frame \(decodedCount) decoded with errors")
                }
                return try convertCurrentFrame()
            }
            if received == lockstep_averror_eof() {
                finished = true
                return nil
            }
            if received != lockstep_averror_eagain() {
                note(FFmpegError(code: received, operation: "decode").description)
                // The decoder cannot continue from this state; drain what it has.
                if demuxerDone { finished = true; return nil }
            }
            try feedDecoder()
        }
    }

    /// Reads packets until one of the video stream is sent to the decoder, or flushes it at the end.
    private func feedDecoder() throws {
        if demuxerDone { return }
        while true {
            let read = av_read_frame(format, packet)
            if read < 0 {
                if read != lockstep_averror_eof() { note(FFmpegError(code: read, operation: "read").description) }
                demuxerDone = true
                _ = avcodec_send_packet(decoder, nil)
                return
            }
            defer { av_packet_unref(packet) }
            guard packet.pointee.stream_index == streamIndex else { continue }
            if packet.pointee.flags & AV_PKT_FLAG_CORRUPT != 0 { note("corrupt packet at byte \(packet.pointee.pos)") }
            let sent = avcodec_send_packet(decoder, packet)
            if sent < 0 && sent != lockstep_averror_eagain() {
                note(FFmpegError(code: sent, operation: "decode").description)
            }
            return
        }
    }

    private func convertCurrentFrame() throws -> VideoFrame {
        let f = frame.pointee
        let format = AVPixelFormat(rawValue: f.format)
        let codedW = Int(f.width), codedH = Int(f.height)
        let expectedW = quarterTurns % 2 == 1 ? info.height : info.width
        let expectedH = quarterTurns % 2 == 1 ? info.width : info.height
        guard codedW == expectedW, codedH == expectedH else {
            throw MediaError(.unsupported, path: path, "frame size changes mid-stream (\(expectedW)×\(expectedH) to \(codedW)×\(codedH) at frame \(decodedCount))")
        }
        if converter == nil || converter!.codedFormat != format {
            converter = try PixelConverter(width: codedW, height: codedH, codedFormat: format, direction: .toFloat, color: info.color, bits: info.bitsPerComponent, path: path)
        }
        // The frame keeps a reference to the decoder's picture, converted when it is first used.
        guard let copy = av_frame_clone(frame) else { throw MediaError(.io, path: path, "out of memory") }
        let decoded = OwnedFrame(copy), converter = converter!, turns = quarterTurns
        let picture = Picture(converting: {
            var image = PlanarImage(uninitializedChannels: 3, height: codedH, width: codedW)
            converter.toFloat(UnsafePointer(decoded.frame), into: &image)
            return turns != 0 ? image.rotatedClockwise(quarterTurns: turns) : image
        }, pooling: turns != 0 ? nil : { factor in
            var pooled = PlanarImage(uninitializedChannels: 3, height: codedH / factor, width: codedW / factor)
            return converter.toFloatPooled(UnsafePointer(decoded.frame), factor: factor, into: &pooled) ? pooled : nil
        })

        // Timestamps: the decoder's best guess, made strictly increasing so that muxers accept
        // them. A clock that restarts (streams joined end to end) steps back by more than a
        // frame: the rest of the stream is moved on to follow, keeping its own spacing, so the
        // frames after the join are neither crammed together nor dropped. A step back of less
        // than a frame is jitter, and moves that frame alone.
        var pts = f.best_effort_timestamp
        if pts == lockstep_nopts_value() {
            pts = lastPts == Int64.min ? 0 : lastPts + frameDuration
        } else {
            pts += clockOffset
        }
        if lastPts != Int64.min && pts <= lastPts {
            if lastPts - pts >= frameDuration {
                clockOffset += lastPts + frameDuration - pts
                pts = lastPts + frameDuration
            } else {
                pts = lastPts + 1
            }
        }
        lastPts = pts
        var duration = lockstep_frame_duration(frame)
        if duration <= 0 { duration = frameDuration }
        let result = VideoFrame(picture: picture, pts: pts, duration: duration, index: decodedCount)
        decodedCount += 1
        return result
    }

    private func note(_ text: String) {
        noteCount += 1
        if notes.count < 8 { notes.append(text) }
    }

    /// Brings `damage` up to date with what FFmpeg logged and the reader noted, hands it to the
    /// log, and stops the reading when the policy refuses damaged input.
    private func noticeDamage(whileDecoding index: Int) throws {
        let total = logged.count + noteCount
        guard total > 0 else { return }
        if firstDamagedFrame == nil { firstDamagedFrame = index }
        // FFmpeg's own words first: they say what is wrong ("partial file"), the reader's notes
        // only which call failed.
        let current = Damage(path: path, reasons: Array((logged.first + notes).prefix(8)), errorCount: total,
                             firstFrame: firstDamagedFrame!, framesDecoded: decodedCount)
        guard current != damage else { return }
        damage = current
        damageLog?.record(current)
        if policy == .refuse {
            finished = true
            throw MediaError(.damaged, path: path, "damaged video: \(current.reasons.first ?? "decode error") (at frame \(current.firstFrame))")
        }
    }

    /// Opens the demuxer of `location` ("-" for standard input) into `handles` and reads its
    /// stream information; what cannot be read is refused in one line naming it.
    static func openDemuxer(_ location: String, into handles: CodecHandles) throws {
        let path = StandardStream.shownName(location)
        let fromPipe = StandardStream.isStandard(location)
        if fromPipe {
            try StandardStream.requirePipedInput()
        } else {
            try checkReadableFile(location)
        }
        var ctx: UnsafeMutablePointer<AVFormatContext>?
        let openCode = avformat_open_input(&ctx, StandardStream.inputURL(location), nil, nil)
        if openCode < 0 {
            let reason = FFmpegError(code: openCode, operation: "open").message
            throw MediaError(.notMedia, path: path, fromPipe
                ? "not a stream FFmpeg can read from a pipe (\(reason)); send yuv4mpegpipe or NUT: ffmpeg -i IN -f yuv4mpegpipe -"
                : "not a video file FFmpeg can read (\(reason))")
        }
        handles.format = ctx
        if avformat_find_stream_info(ctx, nil) < 0 {
            throw MediaError(.notMedia, path: path, "not a video file FFmpeg can read (no stream information)")
        }
    }

    /// `kind`: what the file should be, as messages name it.
    static func checkReadableFile(_ path: String, kind: String = "a video file") throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw MediaError(.missing, path: path, "no such file or directory")
        }
        if isDirectory.boolValue { throw MediaError(.notMedia, path: path, "is a directory, not \(kind)") }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw MediaError(.missing, path: path, "permission denied")
        }
    }

    private static func firstVideoCodecID(_ ctx: UnsafeMutablePointer<AVFormatContext>) -> AVCodecID {
        for i in 0..<Int(ctx.pointee.nb_streams) {
            let par = ctx.pointee.streams[i]!.pointee.codecpar!
            if par.pointee.codec_type == AVMEDIA_TYPE_VIDEO { return par.pointee.codec_id }
        }
        return AV_CODEC_ID_NONE
    }
}

/// An AVFrame owned by a Swift object and freed with it: a reference to a decoder's picture
/// (whose buffers stay allocated while it lives), or a picture made for the encoder. Only one
/// thread uses it at a time (the frame's `Picture` serialises the conversion).
final class OwnedFrame: @unchecked Sendable {
    let frame: UnsafeMutablePointer<AVFrame>
    init(_ frame: UnsafeMutablePointer<AVFrame>) { self.frame = frame }
    deinit {
        var f: UnsafeMutablePointer<AVFrame>? = frame
        av_frame_free(&f)
    }
}

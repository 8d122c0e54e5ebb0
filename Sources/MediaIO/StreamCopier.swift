import CFFmpeg

/// Copies the input's audio and subtitle streams into an output, packet for packet, without
/// re-encoding (FFmpeg's doc/examples/remux.c). It reads the input with its own demuxer so the
/// writer can interleave copied packets with video packets by time: the muxer then never has to
/// buffer one stream while waiting for another, and memory stays bounded.
final class StreamCopier {
    /// Streams that the output container cannot hold, one line each.
    private(set) var skipped: [String] = []

    private var input: UnsafeMutablePointer<AVFormatContext>?
    private var mapping: [Int32: UnsafeMutablePointer<AVStream>] = [:]
    private let packet: UnsafeMutablePointer<AVPacket> = av_packet_alloc()
    private var increasing = IncreasingDts()
    private var pending = false
    private var done = false
    private let path: String

    /// `video` is the output's video stream, which takes the tags of the input's.
    init(inputPath: String, output: UnsafeMutablePointer<AVFormatContext>, video: UnsafeMutablePointer<AVStream>) throws {
        path = inputPath
        guard avformat_open_input(&input, inputPath, nil, nil) >= 0, let input,
              avformat_find_stream_info(input, nil) >= 0 else {
            throw MediaError(.notMedia, path: inputPath, "cannot reopen the input to copy its audio")
        }
        Self.copyTags(from: input, to: output)
        Self.copyChapters(from: input, to: output)
        let best = av_find_best_stream(input, AVMEDIA_TYPE_VIDEO, -1, -1, nil, 0)
        if best >= 0 { Self.copyTags(from: input.pointee.streams[Int(best)]!.pointee.metadata, to: &video.pointee.metadata) }
        for i in 0..<Int(input.pointee.nb_streams) {
            let stream = input.pointee.streams[i]!
            let parameters = stream.pointee.codecpar!
            let type = parameters.pointee.codec_type
            let attachment = Self.holdsAsAttachment(output.pointee.oformat, parameters.pointee)
            guard type == AVMEDIA_TYPE_AUDIO || type == AVMEDIA_TYPE_SUBTITLE || attachment else {
                // Not said: a stream the demuxer itself sets aside (MP4's chapter text track,
                // whose chapters are copied).
                if i != Int(best), stream.pointee.discard != AVDISCARD_ALL, let left = Self.leftOut(stream) {
                    skipped.append("stream \(i) (\(left)) is left out")
                }
                stream.pointee.discard = AVDISCARD_ALL
                continue
            }
            let codecName = String(cString: avcodec_get_name(parameters.pointee.codec_id))
            if !attachment && !Self.container(output.pointee.oformat, holds: stream) {
                skipped.append("stream \(i) (\(codecName)) cannot be stored in the \(String(cString: output.pointee.oformat.pointee.name)) container; it is left out")
                stream.pointee.discard = AVDISCARD_ALL
                continue
            }
            mapping[Int32(i)] = try Self.addStream(copying: stream, into: output, path: inputPath)
        }
        if mapping.isEmpty { done = true }
    }

    /// Whether `parameters` are an attachment (a subtitle's font) that a container of `format`
    /// holds: Matroska's, whose muxer's codec query does not cover attachments.
    static func holdsAsAttachment(_ format: UnsafePointer<AVOutputFormat>, _ parameters: AVCodecParameters) -> Bool {
        parameters.codec_type == AVMEDIA_TYPE_ATTACHMENT && String(cString: format.pointee.name) == "matroska"
    }

    /// What a stream that is not copied is, for the line that says so (an attachment such as a
    /// subtitle font, another video track, cover art, a data track); nil for a timecode track,
    /// which the video's own tags carry on.
    static func leftOut(_ stream: UnsafeMutablePointer<AVStream>) -> String? {
        let parameters = stream.pointee.codecpar.pointee
        var tag = [CChar](repeating: 0, count: Int(AV_FOURCC_MAX_STRING_SIZE))
        let fourcc = String(cString: av_fourcc_make_string(&tag, parameters.codec_tag))
        if fourcc == "tmcd" { return nil }
        let name = parameters.codec_id == AV_CODEC_ID_NONE ? fourcc : String(cString: avcodec_get_name(parameters.codec_id))
        switch parameters.codec_type {
        case AVMEDIA_TYPE_VIDEO:
            return stream.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC != 0 ? "\(name) cover art" : "\(name) video: the output has one video track"
        case AVMEDIA_TYPE_ATTACHMENT:
            var filename = ""
            if let entry = av_dict_get(stream.pointee.metadata, "filename", nil, 0) { filename = " " + String(cString: entry.pointee.value) }
            return "\(name) attachment\(filename)"
        default:
            return "\(name) data"
        }
    }

    /// The input container's tags (creation time, a phone's location, title) on the output, as
    /// FFmpeg's own transcode keeps them; "encoder" is the output's own.
    static func copyTags(from input: UnsafeMutablePointer<AVFormatContext>, to output: UnsafeMutablePointer<AVFormatContext>) {
        copyTags(from: input.pointee.metadata, to: &output.pointee.metadata)
    }

    /// The input's chapters on the output, those it has not already (the parts of a split job
    /// each carry the whole list: their times are the input's, so the parts join into it).
    static func copyChapters(from input: UnsafeMutablePointer<AVFormatContext>, to output: UnsafeMutablePointer<AVFormatContext>) {
        let microseconds = AVRational(num: 1, den: 1_000_000)
        func span(_ chapter: UnsafeMutablePointer<AVChapter>) -> (Int64, Int64) {
            (av_rescale_q(chapter.pointee.start, chapter.pointee.time_base, microseconds),
             av_rescale_q(chapter.pointee.end, chapter.pointee.time_base, microseconds))
        }
        for i in 0..<Int(input.pointee.nb_chapters) {
            let chapter = input.pointee.chapters[i]!
            let known = (0..<Int(output.pointee.nb_chapters)).contains { span(output.pointee.chapters[$0]!) == span(chapter) }
            guard !known, let list = av_realloc_array(output.pointee.chapters, Int(output.pointee.nb_chapters) + 1,
                                                      MemoryLayout<UnsafeMutablePointer<AVChapter>>.size) else { continue }
            output.pointee.chapters = list.assumingMemoryBound(to: UnsafeMutablePointer<AVChapter>?.self)
            guard let copy = av_mallocz(MemoryLayout<AVChapter>.size)?.assumingMemoryBound(to: AVChapter.self) else { continue }
            copy.pointee.id = chapter.pointee.id
            copy.pointee.time_base = chapter.pointee.time_base
            copy.pointee.start = chapter.pointee.start
            copy.pointee.end = chapter.pointee.end
            av_dict_copy(&copy.pointee.metadata, chapter.pointee.metadata, 0)
            output.pointee.chapters[Int(output.pointee.nb_chapters)] = copy
            output.pointee.nb_chapters += 1
        }
    }

    /// `tags` added to `target`, all but those the output writes itself ("encoder").
    static func copyTags(from tags: OpaquePointer?, to target: inout OpaquePointer?) {
        guard let tags else { return }
        av_dict_copy(&target, tags, AV_DICT_DONT_OVERWRITE)
        av_dict_set(&target, "encoder", nil, 0)
    }

    /// Whether a container of `format` can hold `stream` copied. Most muxers say; some answer
    /// "unknown" for codecs they do hold (MPEG-TS for AAC, MP3, AC-3): for those, a header is
    /// written with the stream into memory, and the muxer's own check decides.
    static func container(_ format: UnsafePointer<AVOutputFormat>, holds stream: UnsafeMutablePointer<AVStream>) -> Bool {
        let answer = avformat_query_codec(format, stream.pointee.codecpar.pointee.codec_id, FF_COMPLIANCE_NORMAL)
        if answer >= 0 { return answer == 1 }
        return headerAccepts(format) { _ = try addStream(copying: stream, into: $0, path: "") }
    }

    /// Whether a muxer of `format` writes its header, into memory, for the streams `add` puts in
    /// its context: the muxer's own check, where its codec query does not know (or, for some
    /// codecs it writes under a tag of their own, says no: FFV1 in MOV).
    static func headerAccepts(_ format: UnsafePointer<AVOutputFormat>, _ add: (UnsafeMutablePointer<AVFormatContext>) throws -> Void) -> Bool {
        var context: UnsafeMutablePointer<AVFormatContext>?
        guard avformat_alloc_output_context2(&context, format, nil, nil) >= 0, let context else { return false }
        defer { avformat_free_context(context) }
        guard (try? add(context)) != nil, avio_open_dyn_buf(&context.pointee.pb) >= 0 else { return false }
        var written: UnsafeMutablePointer<UInt8>?
        defer { _ = avio_close_dyn_buf(context.pointee.pb, &written); av_free(written); context.pointee.pb = nil }
        guard avformat_write_header(context, nil) >= 0 else {
            _ = FFmpegLog.takeLastError()  // the trial's refusal is not the job's error
            return false
        }
        return true
    }

    /// A stream of `output` that takes the packets of `stream` as they are: its codec parameters
    /// (with the tag left to the new container), time base, disposition and metadata.
    static func addStream(copying stream: UnsafeMutablePointer<AVStream>, into output: UnsafeMutablePointer<AVFormatContext>,
                          path: String) throws -> UnsafeMutablePointer<AVStream> {
        guard let out = avformat_new_stream(output, nil), avcodec_parameters_copy(out.pointee.codecpar, stream.pointee.codecpar) >= 0 else {
            throw MediaError(.io, path: path, "cannot copy stream \(stream.pointee.index) (\(String(cString: avcodec_get_name(stream.pointee.codecpar.pointee.codec_id)))): out of memory")
        }
        // The stream's tag is kept where the output's container has it for the same codec, or
        // knows no tag for that codec (raw video in NUT: the tag names the pixel layout); other
        // containers' tags mean nothing here, and the muxer chooses (as FFmpeg's stream copy does).
        let source = stream.pointee.codecpar.pointee
        var tag: UInt32 = 0
        let tags = output.pointee.oformat.pointee.codec_tag
        let keepTag = tags == nil || av_codec_get_id(tags, source.codec_tag) == source.codec_id
            || av_codec_get_tag2(tags, source.codec_id, &tag) == 0
        out.pointee.codecpar.pointee.codec_tag = keepTag ? source.codec_tag : 0
        out.pointee.time_base = stream.pointee.time_base
        out.pointee.disposition = stream.pointee.disposition
        av_dict_copy(&out.pointee.metadata, stream.pointee.metadata, 0)
        return out
    }

    deinit {
        var p: UnsafeMutablePointer<AVPacket>? = packet
        av_packet_free(&p)
        if input != nil { avformat_close_input(&input) }
    }

    /// Packets before this time (seconds) are dropped: for a segment of the input.
    var startSeconds: Double?

    /// The earliest time (seconds) of the packets read so far, dropped ones included.
    private var earliestSeconds = Double.infinity
    private var offsetFixed = false

    /// Before the output's first packet: where the input's copied streams start before zero
    /// (AAC's priming samples, 23 ms) and the container cannot hold negative times (Matroska),
    /// every packet is moved later by as much, as the muxer would move the whole run's at its
    /// first packet. A segment's first packets are past zero, and the muxer did not move them:
    /// its frames came 23 ms early against the whole run's, and the parts did not join into it.
    /// Set once, from the earliest packet read; a segment has read (and dropped) the input's
    /// first packets by then.
    func fixOffset(of output: UnsafeMutablePointer<AVFormatContext>) {
        guard !offsetFixed else { return }
        offsetFixed = true
        guard earliestSeconds < 0, earliestSeconds.isFinite, output.pointee.oformat.pointee.flags & AVFMT_TS_NEGATIVE == 0 else { return }
        output.pointee.output_ts_offset = Int64((-earliestSeconds * 1_000_000).rounded(.up))
    }

    /// Writes copied packets whose time is at most `until` seconds (all of them when nil).
    func copy(until: Double?, into output: UnsafeMutablePointer<AVFormatContext>) throws {
        while !done {
            if !pending {
                let read = av_read_frame(input, packet)
                if read < 0 { done = true; return }  // end of input (damage is the reader's to report)
                guard mapping[packet.pointee.stream_index] != nil else { av_packet_unref(packet); continue }
                pending = true
            }
            let inStream = input!.pointee.streams[Int(packet.pointee.stream_index)]!
            let outStream = mapping[packet.pointee.stream_index]!
            let stamp = packet.pointee.dts != lockstep_nopts_value() ? packet.pointee.dts : packet.pointee.pts
            if stamp != lockstep_nopts_value() {
                earliestSeconds = min(earliestSeconds, Double(stamp) * Rational(inStream.pointee.time_base).value)
            }
            if let until, stamp != lockstep_nopts_value(),
               Double(stamp) * Rational(inStream.pointee.time_base).value > until {
                return
            }
            pending = false
            if let startSeconds, stamp != lockstep_nopts_value(),
               Double(stamp) * Rational(inStream.pointee.time_base).value < startSeconds {
                av_packet_unref(packet)
                continue
            }
            fixOffset(of: output)
            av_packet_rescale_ts(packet, inStream.pointee.time_base, outStream.pointee.time_base)
            packet.pointee.stream_index = outStream.pointee.index
            increasing.apply(to: packet, output: output)
            packet.pointee.pos = -1
            let written = av_interleaved_write_frame(output, packet)
            if written < 0 { throw FFmpegError(code: written, operation: "write copied stream") }
        }
    }
}

/// Keeps each output stream's dts increasing, strictly where the muxer needs it. Some files carry
/// audio whose timestamps step back (a Matroska file with a 5.1 AAC track that restarts its
/// clock), which a muxer refuses. As FFmpeg's own command does, a step back is moved to just
/// after the previous packet, so the stream is copied whole.
struct IncreasingDts {
    private var last: [Int32: Int64] = [:]

    mutating func apply(to packet: UnsafeMutablePointer<AVPacket>, output: UnsafeMutablePointer<AVFormatContext>) {
        let index = packet.pointee.stream_index
        let dts = packet.pointee.dts
        guard dts != lockstep_nopts_value() else { return }
        if let previous = last[index] {
            let strict: Int64 = output.pointee.oformat.pointee.flags & AVFMT_TS_NONSTRICT != 0 ? 0 : 1
            let least = previous + strict
            if dts < least {
                if packet.pointee.pts != lockstep_nopts_value() && packet.pointee.pts >= dts {
                    packet.pointee.pts = max(packet.pointee.pts, least)
                }
                packet.pointee.dts = least
            }
        }
        last[index] = packet.pointee.dts
    }
}

import CFFmpeg
import Foundation

/// Joins videos end to end without re-encoding: every stream of every part, packet for packet,
/// into one container (FFmpeg's doc/examples/remux.c, over several inputs). Made for the parts of
/// a job split with `--frames`: they keep the whole input's timestamps, so joined they are the
/// whole run, frame for frame, with each part's span of audio. Files made separately, each from
/// zero, follow one another: a part that starts at or before the previous one's last frame is
/// moved on to follow it. Parts of one timeline go in the order of their frames, each once
/// (`checkOrder`): one that starts within the previous one overlaps it, and one that starts
/// later than the previous one ends means a part is missing between them (unless gaps are
/// allowed); both are refused.
///
/// The parts must have the same streams, encoded the same way: one container header describes
/// them all, so a part whose codec header differs would not decode after the join; it is refused.
public enum Concatenation {
    public struct Summary: Sendable {
        /// Video packets written: the frames of the joined video.
        public var frames: Int
        /// From the first video frame's start to the last one's end.
        public var seconds: Double
    }

    /// Joins `parts` into `target`, in the container named `format` or the one of its extension.
    /// `progress` gets the index of the part being copied. Nothing is left under the target's
    /// final name on failure.
    @discardableResult
    public static func join(_ parts: [String], into target: OutputTarget, format: String? = nil, allowGaps: Bool = false,
                            progress: (Int) -> Void = { _ in }) throws -> Summary {
        FFmpegLog.install()
        let inputs = try parts.map(Part.init)
        let first = inputs[0]
        for part in inputs.dropFirst() { try part.check(against: first) }
        try checkOrder(inputs)

        let outputFormat = try VideoWriter.chooseContainer(format, target: target, framesAllowed: false)
        let handles = CodecHandles()
        var oc: UnsafeMutablePointer<AVFormatContext>?
        try checkOutput(avformat_alloc_output_context2(&oc, outputFormat, nil, target.temporaryPath), "create output", path: target.shownName)
        handles.format = oc
        StreamCopier.copyTags(from: first.context, to: oc!)
        for part in inputs { StreamCopier.copyChapters(from: part.context, to: oc!) }
        for index in 0..<first.streamCount {
            let stream = first.stream(index)
            let parameters = stream.pointee.codecpar!
            if !StreamCopier.holdsAsAttachment(outputFormat, parameters.pointee),
               avformat_query_codec(outputFormat, parameters.pointee.codec_id, FF_COMPLIANCE_NORMAL) == 0 {
                throw MediaError(.invalidArgument, path: target.shownName, "the \(String(cString: outputFormat.pointee.name)) container cannot hold stream \(index) (\(String(cString: avcodec_get_name(parameters.pointee.codec_id)))) of \(first.path); choose another container")
            }
            let out = try StreamCopier.addStream(copying: stream, into: oc!, path: first.path)
            out.pointee.avg_frame_rate = stream.pointee.avg_frame_rate
            out.pointee.sample_aspect_ratio = stream.pointee.sample_aspect_ratio
            // Rotation and other stream side data travel with the stream.
            for s in 0..<Int(stream.pointee.nb_side_data) {
                let side = stream.pointee.side_data[s]
                if let data = av_stream_new_side_data(out, side.type, side.size) { data.update(from: side.data, count: side.size) }
            }
        }

        let timeline = isTimeline(inputs)
        var increasing = IncreasingDts()
        let packet = handles.packet
        var frames = 0
        var videoStart: Int64?, videoEnd: Int64 = 0  // microseconds, after the parts' moves
        var lastVideoStart: Int64?  // the latest video frame's start so far, likewise
        do {
            try VideoWriter.begin(oc!, target: target)
            for (number, part) in inputs.enumerated() {
                progress(number)
                var seenVideoDts = false
                // A part that starts at or before the previous one's last frame (made separately,
                // from zero) starts where the previous one ends; one that starts after that frame
                // keeps its times (a cut of one timeline: at a variable frame rate the last
                // frame's stored duration need not reach the next frame), unless it starts more
                // than half a frame after the previous end, where a part is missing.
                let gap = videoEnd - part.videoStart
                let overlaps = number > 0 && part.videoStart <= (lastVideoStart ?? .min)
                if overlaps && timeline {
                    throw MediaError(.invalidArgument, path: part.path, "starts at \(seconds(part.videoStart)), within \(inputs[number - 1].path), which runs to \(seconds(videoEnd)): the parts overlap; cut them at the same indices (--frames 0:100, then 100:200)")
                }
                let shift = overlaps || (number > 0 && gap < 0 && -gap < part.frameMicroseconds / 2) ? gap : 0
                if number > 0 && shift == 0 && gap < 0 && !allowGaps {
                    throw MediaError(.invalidArgument, path: part.path, "starts at \(seconds(part.videoStart)), \(seconds(-gap)) after \(inputs[number - 1].path) ends: a part is missing between them (--allow-gaps joins them anyway)")
                }
                // Writes one packet of this part: moved, counted, in the output's time base.
                func emit(_ packet: UnsafeMutablePointer<AVPacket>) throws {
                    let inBase = part.stream(Int(packet.pointee.stream_index)).pointee.time_base
                    let moved = av_rescale_q(shift, lockstep_time_base_q(), inBase)
                    if packet.pointee.pts != lockstep_nopts_value() { packet.pointee.pts += moved }
                    if packet.pointee.dts != lockstep_nopts_value() { packet.pointee.dts += moved }
                    if packet.pointee.stream_index == part.videoIndex {
                        frames += 1
                        if packet.pointee.pts != lockstep_nopts_value() {
                            let start = av_rescale_q(packet.pointee.pts, inBase, lockstep_time_base_q())
                            // A packet without a duration (some MP4s' last) lasts a frame.
                            let duration = packet.pointee.duration > 0 ? av_rescale_q(packet.pointee.duration, inBase, lockstep_time_base_q()) : part.frameMicroseconds
                            videoStart = min(videoStart ?? start, start)
                            videoEnd = max(videoEnd, start + duration)
                            lastVideoStart = max(lastVideoStart ?? start, start)
                        }
                    }
                    let out = oc!.pointee.streams[Int(packet.pointee.stream_index)]!
                    av_packet_rescale_ts(packet, inBase, out.pointee.time_base)
                    increasing.apply(to: packet, output: oc!)
                    packet.pointee.pos = -1
                    try checkOutput(av_interleaved_write_frame(oc, packet), "write", path: target.shownName)
                }
                // Matroska stores no decode times: a part's first video packets, before the
                // decoder's reordering delay has passed, come without one, and a muxer cannot
                // place them after the previous part. They wait for the first packet that has
                // one, and take the times a frame apart before it.
                var waiting: [UnsafeMutablePointer<AVPacket>?] = []
                defer { for index in waiting.indices { av_packet_free(&waiting[index]) } }
                while true {
                    let read = av_read_frame(part.context, packet)
                    if read == lockstep_averror_eof() { break }
                    if read < 0 { throw MediaError(.damaged, path: part.path, "cannot read it to the end: \(FFmpegError(code: read, operation: "read").message)") }
                    defer { av_packet_unref(packet) }
                    let isVideo = packet.pointee.stream_index == part.videoIndex
                    if isVideo && packet.pointee.dts == lockstep_nopts_value() && packet.pointee.pts != lockstep_nopts_value() && !seenVideoDts {
                        waiting.append(av_packet_clone(packet))
                        continue
                    }
                    if isVideo && packet.pointee.dts != lockstep_nopts_value() {
                        seenVideoDts = true
                        let step = av_rescale_q(part.frameMicroseconds, lockstep_time_base_q(), part.stream(Int(part.videoIndex)).pointee.time_base)
                        for (k, held) in waiting.enumerated() {
                            held!.pointee.dts = min(packet.pointee.dts - Int64(waiting.count - k) * max(step, 1), held!.pointee.pts)
                            try emit(held!)
                        }
                        for index in waiting.indices { av_packet_free(&waiting[index]) }
                        waiting.removeAll()
                    }
                    try emit(packet)
                }
                // No packet told a decode time: the presentation times, in order, stand for them.
                for (held, dts) in zip(waiting, waiting.compactMap { $0?.pointee.pts }.sorted()) {
                    held!.pointee.dts = min(dts, held!.pointee.pts)
                    try emit(held!)
                }
            }
            try checkOutput(av_write_trailer(oc), "write trailer", path: target.shownName)
            if let pb = oc!.pointee.pb, pb.pointee.error < 0 { throw FFmpegError(code: pb.pointee.error, operation: "write").forOutput(target.shownName) }
            if oc!.pointee.pb != nil { try checkOutput(avio_closep(&oc!.pointee.pb), "close", path: target.shownName) }
            try target.commit()
        } catch {
            if oc!.pointee.pb != nil { avio_closep(&oc!.pointee.pb) }
            target.discard()
            throw error
        }
        return Summary(frames: frames, seconds: Double(videoEnd - (videoStart ?? 0)) / 1_000_000)
    }

    /// Microseconds as seconds, for messages.
    static func seconds(_ micros: Int64) -> String { String(format: "%.3f s", Double(micros) / 1e6) }

    /// Whether `inputs` are the parts of one timeline (a split job's): one of them at least was
    /// cut from a longer video (`isCut`), and no two start at the same time. Files made
    /// separately start at zero, or all at the same offset (MPEG-TS's 1.4 s), and are joined one
    /// after the other in the order given.
    static func isTimeline(_ inputs: [Part]) -> Bool {
        inputs.contains(where: \.isCut) && Set(inputs.map(\.videoStart)).count == inputs.count
    }

    /// The parts of one timeline must come in the order of their frames, each once. (Before,
    /// they were joined in the order given, the later frames first, and a part given twice was
    /// joined twice.) A part cut from a longer video is refused twice whatever the others are;
    /// a file made on its own, given twice, plays twice.
    static func checkOrder(_ inputs: [Part]) throws {
        for (k, part) in inputs.enumerated() where part.isCut {
            if let earlier = inputs[..<k].first(where: { OutputTarget.isSameFile($0.path, part.path) }) {
                throw MediaError(.invalidArgument, path: part.path, "is given twice (also as \(earlier.path)): give each part of a split job once")
            }
        }
        guard isTimeline(inputs) else { return }
        for (previous, part) in zip(inputs, inputs.dropFirst()) where part.videoStart < previous.videoStart {
            throw MediaError(.invalidArgument, path: part.path, "starts at \(seconds(part.videoStart)), before \(previous.path) (at \(seconds(previous.videoStart))), which is given before it: the parts of a split job go in the order of their frames (a shell's sort puts part10 before part9)")
        }
    }

    /// One input, opened, with what the join needs to know of it.
    final class Part {
        let path: String
        private let handles = CodecHandles()
        var context: UnsafeMutablePointer<AVFormatContext> { handles.format! }
        let videoIndex: Int32
        /// The first video frame's time, in microseconds.
        let videoStart: Int64
        /// One frame's duration at the stream's average rate, in microseconds.
        let frameMicroseconds: Int64
        var streamCount: Int { Int(context.pointee.nb_streams) }

        init(_ path: String) throws {
            self.path = path
            try VideoReader.openDemuxer(path, into: handles)
            let ctx = handles.format
            let best = av_find_best_stream(ctx, AVMEDIA_TYPE_VIDEO, -1, -1, nil, 0)
            guard best >= 0 else { throw MediaError(.notMedia, path: path, "not a video: it has no video stream") }
            videoIndex = best
            let video = ctx!.pointee.streams[Int(best)]!
            let start = video.pointee.start_time != lockstep_nopts_value() ? video.pointee.start_time : 0
            videoStart = av_rescale_q(start, video.pointee.time_base, lockstep_time_base_q())
            var rate = video.pointee.avg_frame_rate
            if rate.num <= 0 || rate.den <= 0 { rate = video.pointee.r_frame_rate }
            frameMicroseconds = rate.num > 0 && rate.den > 0 ? av_rescale(1_000_000, Int64(rate.den), Int64(rate.num)) : 40_000
        }

        func stream(_ index: Int) -> UnsafeMutablePointer<AVStream> { context.pointee.streams[index]! }

        /// Whether the part was cut from a longer timeline (a split job's part after the first),
        /// not made on its own: those start at zero, or a little later where the container moves
        /// the video behind the audio's priming samples (23 ms for AAC) or the encoder's
        /// reordering delay (a frame or two).
        var isCut: Bool { videoStart > max(2 * frameMicroseconds, 50_000) }

        /// Refuses a part whose streams are not those of `first`, encoded the same way.
        func check(against first: Part) throws {
            guard streamCount == first.streamCount, videoIndex == first.videoIndex else {
                throw MediaError(.invalidArgument, path: path, "has other streams than \(first.path) (\(streamCount) against \(first.streamCount)): the parts must come from the same input and command")
            }
            for index in 0..<streamCount {
                let a = stream(index).pointee.codecpar.pointee, b = first.stream(index).pointee.codecpar.pointee
                let name = String(cString: avcodec_get_name(a.codec_id))
                guard a.codec_type == b.codec_type, a.codec_id == b.codec_id else {
                    throw MediaError(.invalidArgument, path: path, "stream \(index) is \(name), in \(first.path) \(String(cString: avcodec_get_name(b.codec_id))): the parts must be encoded the same way")
                }
                if a.codec_type == AVMEDIA_TYPE_VIDEO, a.width != b.width || a.height != b.height || a.format != b.format {
                    throw MediaError(.invalidArgument, path: path, "its video is \(a.width)×\(a.height) \(Self.pixelFormatName(a.format)), that of \(first.path) \(b.width)×\(b.height) \(Self.pixelFormatName(b.format)): the parts must be encoded the same way")
                }
                if a.codec_type == AVMEDIA_TYPE_AUDIO, a.sample_rate != b.sample_rate || a.ch_layout.nb_channels != b.ch_layout.nb_channels {
                    throw MediaError(.invalidArgument, path: path, "its audio is \(a.sample_rate) Hz with \(a.ch_layout.nb_channels) channels, that of \(first.path) \(b.sample_rate) Hz with \(b.ch_layout.nb_channels): the parts must come from the same input")
                }
                let sameHeader = a.extradata_size == b.extradata_size
                    && (a.extradata_size == 0 || memcmp(a.extradata, b.extradata, Int(a.extradata_size)) == 0)
                guard sameHeader else {
                    throw MediaError(.invalidArgument, path: path, "its \(name) stream \(index) was encoded with other settings than that of \(first.path) (the codec headers differ), so the joined file would not decode; make the parts with the same command and options")
                }
            }
        }

        static func pixelFormatName(_ format: Int32) -> String {
            av_get_pix_fmt_name(AVPixelFormat(rawValue: format)).map { String(cString: $0) } ?? "?"
        }
    }
}

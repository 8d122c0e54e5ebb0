import CFFmpeg

/// Owns one FFmpeg format context (a demuxer or a muxer), one codec context and a packet and a
/// frame, and frees them together: also when an initializer throws half-way.
final class CodecHandles {
    /// A demuxer opened by avformat_open_input, or a muxer made by avformat_alloc_output_context2.
    var format: UnsafeMutablePointer<AVFormatContext>?
    var codec: UnsafeMutablePointer<AVCodecContext>?
    let packet: UnsafeMutablePointer<AVPacket> = av_packet_alloc()
    let frame: UnsafeMutablePointer<AVFrame> = av_frame_alloc()
    /// Where the contexts' `opaque` points, kept alive until they are freed.
    var logCollector: FFmpegLog.Collector?

    deinit {
        var f: UnsafeMutablePointer<AVFrame>? = frame
        av_frame_free(&f)
        var p: UnsafeMutablePointer<AVPacket>? = packet
        av_packet_free(&p)
        if codec != nil { avcodec_free_context(&codec) }
        guard let context = format else { return }
        if context.pointee.iformat != nil {
            avformat_close_input(&format)
        } else {
            if context.pointee.pb != nil { avio_closep(&context.pointee.pb) }
            avformat_free_context(context)
        }
    }
}

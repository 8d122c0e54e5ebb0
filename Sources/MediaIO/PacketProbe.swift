import CFFmpeg

/// Lists a file's compressed packets of one kind, for checking that a stream was copied unchanged.
public enum PacketProbe {
    public enum Kind: Sendable { case video, audio, subtitle }

    public struct Packet: Equatable, Sendable {
        /// Presentation time in seconds (nil when unknown).
        public var seconds: Double?
        public var size: Int
        /// FNV-1a hash of the payload.
        public var checksum: UInt64
    }

    /// Packets of every stream of `kind`, in file order.
    public static func packets(_ path: String, kind: Kind) throws -> [Packet] {
        let handles = CodecHandles()
        var ctx: UnsafeMutablePointer<AVFormatContext>?
        let opened = avformat_open_input(&ctx, path, nil, nil)
        guard opened >= 0 else { throw FFmpegError(code: opened, operation: "open").forInput(path) }
        handles.format = ctx
        try check(avformat_find_stream_info(ctx, nil), "find stream info")
        let type: AVMediaType = kind == .video ? AVMEDIA_TYPE_VIDEO : kind == .audio ? AVMEDIA_TYPE_AUDIO : AVMEDIA_TYPE_SUBTITLE
        var result: [Packet] = []
        let packet = handles.packet
        while av_read_frame(ctx, packet) >= 0 {
            defer { av_packet_unref(packet) }
            let stream = ctx!.pointee.streams[Int(packet.pointee.stream_index)]!
            guard stream.pointee.codecpar.pointee.codec_type == type else { continue }
            var hash: UInt64 = 0xcbf29ce484222325
            for i in 0..<Int(packet.pointee.size) {
                hash = (hash ^ UInt64(packet.pointee.data[i])) &* 0x100000001b3
            }
            let pts = packet.pointee.pts
            let seconds = pts == lockstep_nopts_value() ? nil : Double(pts) * Rational(stream.pointee.time_base).value
            result.append(Packet(seconds: seconds, size: Int(packet.pointee.size), checksum: hash))
        }
        return result
    }
}

import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// Pass-through of a file through the reader and writer, as `lockstep convert` does.
func passThrough(_ input: String, to output: String, codec: String? = nil) throws {
    let source = try Media.openSource(input)
    let sink = try Media.openSink(output, info: source.info, inputs: [input], overwrite: false, options: EncoderOptions(codec: codec))
    while let frame = try source.next() { try sink.write(frame) }
    try sink.finish()
}

@Suite struct TimingAndStreamsTests {
    /// Irregular timestamps (variable frame rate) survive a pass-through into mp4 and mkv.
    @Test(arguments: ["mp4", "mkv"])
    func variableFrameRateTimestampsArePreserved(ext: String) throws {
        let dir = TemporaryDirectory()
        let pts: [Int64] = [0, 40, 70, 150, 160, 230, 400, 433, 466, 600]  // milliseconds
        let frames = pts.indices.map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }
        let input = try SyntheticClip.write(frames, to: dir.file("vfr.mkv"), codec: "ffv1", pts: pts)
        let output = dir.file("out.\(ext)")
        try passThrough(input, to: output)
        let (info, decoded) = try SyntheticClip.readAll(output)
        #expect(decoded.count == pts.count)
        let seconds = decoded.map { Double($0.pts) * info.timeBase.value }
        for (got, want) in zip(seconds, pts.map { Double($0) / 1000 }) {
            #expect(abs(got - want) < 0.0011, "timestamp \(got) s, expected \(want) s")
        }
    }

    /// A real H.264 + AAC file made by FFmpeg's lavfi sources keeps its frame count, its frame
    /// timing and its audio packets, byte for byte. (Matroska cannot store AAC's negative
    /// priming timestamp, so its muxer shifts every stream by the same 23 ms: intervals are compared.)
    @Test(arguments: ["mkv", "mp4"])
    func audioAndTimestampsSurvivePassThrough(ext: String) throws {
        let dir = TemporaryDirectory()
        let input = dir.file("av.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", input])
        let output = dir.file("out.\(ext)")
        try passThrough(input, to: output)

        let (inInfo, inFrames) = try SyntheticClip.readAll(input)
        let (outInfo, outFrames) = try SyntheticClip.readAll(output)
        #expect(inFrames.count == 48 && outFrames.count == 48)
        let inStart = Double(inFrames[0].pts) * inInfo.timeBase.value
        let outStart = Double(outFrames[0].pts) * outInfo.timeBase.value
        for (a, b) in zip(inFrames, outFrames) {
            let want = Double(a.pts) * inInfo.timeBase.value - inStart
            let got = Double(b.pts) * outInfo.timeBase.value - outStart
            #expect(abs(want - got) < 0.001, "frame \(a.index): \(got) s, expected \(want) s")
        }
        let inAudio = try PacketProbe.packets(input, kind: .audio)
        let outAudio = try PacketProbe.packets(output, kind: .audio)
        #expect(!inAudio.isEmpty)
        #expect(inAudio.map(\.checksum) == outAudio.map(\.checksum))
        #expect(inAudio.map(\.size) == outAudio.map(\.size))
    }

    /// MPEG-TS holds AAC, though its muxer does not say so (it answers "unknown"): the audio is
    /// copied, every packet (the muxer adds ADTS headers, so the packets grow by their 7 bytes),
    /// where it used to be left out as a codec the container cannot hold.
    @Test func audioIsKeptInMPEGTS() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("av.mp4"), output = dir.file("out.ts")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24:duration=1", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", input])
        try passThrough(input, to: output)
        let inAudio = try PacketProbe.packets(input, kind: .audio), outAudio = try PacketProbe.packets(output, kind: .audio)
        #expect(!inAudio.isEmpty && outAudio.count == inAudio.count, "\(outAudio.count) audio packets, \(inAudio.count) in the input")
        #expect(zip(inAudio, outAudio).allSatisfy { $1.size == $0.size + 7 })
    }

    /// AVI declares its time base as the frame rate: frames timed in milliseconds (Matroska's
    /// base) come out at 25 frames/s, not in a stream that says 1000 frames/s.
    @Test func aviDeclaresTheFrameRate() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<8).map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }
        let path = try SyntheticClip.write(frames, to: dir.file("clip.avi"), pts: (0..<8).map { Int64($0) * 40 })
        let (info, decoded) = try SyntheticClip.readAll(path)
        #expect(info.frameRate == Rational(25, 1) && info.timeBase == Rational(1, 25), "\(info.frameRate), \(info.timeBase)")
        // One frame apart (AVI has no presentation times: a stream with B-frames starts a
        // couple of frames late, in FFmpeg's own AVI too).
        let pts = decoded.map(\.pts)
        #expect(pts.count == 8 && zip(pts, pts.dropFirst()).allSatisfy { $1 - $0 == 1 }, "\(pts)")
    }

    /// A lossless pass-through of a lossless file is bit-exact, frame for frame.
    @Test func losslessPassThroughIsBitExact() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<6).map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }
        let input = try SyntheticClip.write(frames, to: dir.file("in.mkv"), codec: "ffv1")
        let output = dir.file("out.mkv")
        try passThrough(input, to: output, codec: "ffv1")
        let (_, decoded) = try SyntheticClip.readAll(output)
        #expect(decoded.count == 6)
        for (a, b) in zip(frames, decoded) { #expect(a.isIdentical(to: b.image)) }
    }

    /// A video tagged with a 90° rotation is read upright, as a player shows it.
    @Test func rotationMetadataIsApplied() throws {
        let dir = TemporaryDirectory()
        let plain = dir.file("plain.mp4"), rotated = dir.file("rotated.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-qp", "0", plain])
        try ffmpeg(["-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated])
        let (info, frames) = try SyntheticClip.readAll(rotated)
        let (_, upright) = try SyntheticClip.readAll(plain)
        #expect(info.width == 48 && info.height == 64)
        // FFmpeg's own decoder (ffmpeg -i rotated.mp4 frame.png) shows this tag turned left,
        // a quarter turn counter-clockwise: the reader must agree.
        let expected = upright[0].image.rotatedClockwise(quarterTurns: 3)
        #expect(psnr(expected, frames[0].image) > 60)
    }
}

@Suite struct SubtitleAndAspectTests {
    /// Subtitles are copied packet for packet where the container takes them, and left out with
    /// a warning where it does not (SubRip cannot go into MP4).
    @Test func subtitlesAreCopied() throws {
        let dir = TemporaryDirectory()
        let srt = dir.file("subs.srt"), input = dir.file("in.mkv")
        try "1\n00:00:00,000 --> 00:00:00,500\nHello\n\n2\n00:00:00,600 --> 00:00:01,000\nWorld\n"
            .write(toFile: srt, atomically: true, encoding: .utf8)
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=1", "-i", srt,
                    "-c:v", "libx264", "-c:s", "srt", input])
        let mkv = dir.file("out.mkv")
        try passThrough(input, to: mkv)
        let before = try PacketProbe.packets(input, kind: .subtitle)
        #expect(before.count == 2)
        #expect(try PacketProbe.packets(mkv, kind: .subtitle) == before)

        let source = try Media.openSource(input)
        let writer = try VideoWriter(target: try OutputTarget(path: dir.file("out.mp4"), inputs: [input], overwrite: false),
                                     info: source.info)
        writer.abort()
        #expect(writer.warnings.count == 1 && writer.warnings[0].contains("subrip"), "\(writer.warnings)")
    }

    /// Non-square pixels: the sample aspect ratio is kept.
    @Test func sampleAspectRatioIsKept() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("anamorphic.mp4"), output = dir.file("out.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=0.5", "-vf", "setsar=4/3", "-c:v", "libx264", input])
        #expect(try Media.openSource(input).info.sampleAspectRatio == Rational(4, 3))
        try passThrough(input, to: output)
        #expect(try Media.openSource(output).info.sampleAspectRatio == Rational(4, 3))
        // Frames written as PNG carry it in their pHYs chunk, which FFmpeg reads back.
        let frames = dir.file("frames")
        try passThrough(input, to: frames)
        #expect(try Media.openSource(frames + "/00000.png").info.sampleAspectRatio == Rational(4, 3))
    }
}

import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// Decoded colours agree with FFmpeg's own YUV→RGB conversion (`ffmpeg -i clip -pix_fmt rgb24
/// frame.png`, read back exactly through the PNG path), for the matrices and ranges in use.
@Suite struct ColourTests {
    /// Measured here: 45.7, 48.6, 47.7 and 60.6 dB for the 8-bit cases (one-pass conversion),
    /// 38.6–40.2 dB for 10-bit (swscale). Decoding BT.601 as BT.709 gave 30.5 dB, and full range
    /// as BT.709 limited 27.9 dB: the floors catch a wrong matrix or range.
    @Test(arguments: [
        ("untagged BT.601, 4:2:0", ["-pix_fmt", "yuv420p"], 40.0),
        ("BT.709, 4:2:0", ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"], 40.0),
        ("full range, 4:2:0", ["-pix_fmt", "yuvj420p"], 40.0),
        ("BT.709, 4:4:4", ["-pix_fmt", "yuv444p", "-colorspace", "bt709"], 40.0),
        ("10-bit 4:2:0", ["-pix_fmt", "yuv420p10le"], 36.0),
    ])
    func matchesFFmpegConversion(name: String, options: [String], floor: Double) throws {
        let dir = TemporaryDirectory()
        let clip = dir.file("clip.mkv"), reference = dir.file("ref.png")
        // A smooth colour field: sharp chroma edges would measure the chroma filters, not the matrix.
        try ffmpeg(["-f", "lavfi", "-i", "gradients=size=160x120:n=4:speed=0.05:duration=0.2:rate=10:seed=7", "-frames:v", "1",
                    "-c:v", "libx264", "-qp", "0"] + options + [clip])
        try ffmpeg(["-i", clip, "-frames:v", "1", "-sws_flags", "accurate_rnd+full_chroma_int+bicubic", "-pix_fmt", "rgb24", reference])
        let ours = try SyntheticClip.readAll(clip).frames[0].image
        let theirs = try ImageFile.read(reference).image
        let quality = psnr(ours, theirs)
        #expect(quality > floor, "\(name): \(quality) dB")
    }

    /// A decoded frame pooled straight from the decoder's picture (`VideoFrame.pooledImage`,
    /// what deflicker's analysis reads) has the values of the whole picture converted and then
    /// pooled, bit for bit: 4:2:0 and 4:4:4, by 2 (its own sum) and 3, at even and odd sizes
    /// (a partial last block dropped), and 10-bit (the other conversion path, pooled after it).
    @Test(arguments: [("yuv420p", "162x122"), ("yuv420p", "161x121"), ("yuv444p", "162x122"), ("yuvj420p", "160x120"), ("yuv420p10le", "162x122")])
    func pooledFromTheDecoderIsTheConvertedPicturePooled(format: String, size: String) throws {
        let dir = TemporaryDirectory()
        let clip = dir.file("clip.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=\(size):duration=0.2:rate=10", "-frames:v", "2",
                    "-pix_fmt", format, "-c:v", "ffv1", clip])
        for factor in [2, 3] {
            let frames = try SyntheticClip.readAll(clip).frames
            let pooled = frames[0].pooledImage(factor)            // before the picture is converted
            let expected = frames[0].image.averagePooled(factor)
            #expect(pooled.width == expected.width && pooled.height == expected.height)
            let same = pooled.values == expected.values
            #expect(same, "\(format) \(size), pooled by \(factor)")
        }
    }

    /// A video coded in RGB (FFV1 bgr0) says "RGB" for its matrix. Written as YUV, the output
    /// takes the matrix and range players assume at its size (BT.601, limited, at 120 lines):
    /// the source's RGB matrix on YUV was invalid, and its colours came out wrong in players
    /// that honour the tag. The picture matches the source's.
    @Test func rgbSourceWrittenAsYUVGetsAYUVMatrix() throws {
        let dir = TemporaryDirectory()
        let source = dir.file("rgb.mkv"), written = dir.file("out.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "gradients=size=160x120:n=4:speed=0.05:duration=0.2:rate=10:seed=7",
                    "-pix_fmt", "bgr0", "-c:v", "ffv1", source])
        let (info, frames) = try SyntheticClip.readAll(source)
        #expect(info.color.matrix == 0, "the source says RGB")
        let sink = try Media.openSink(written, info: info, inputs: [source], overwrite: false)
        for frame in frames { try sink.write(frame) }
        try sink.finish()
        let (out, decoded) = try SyntheticClip.readAll(written)
        #expect(out.pixelFormat == "yuv420p")
        #expect(out.color.matrix == 6 && out.color.range == 1, "matrix \(out.color.matrix), range \(out.color.range)")
        #expect(psnr(frames[0].image, decoded[0].image) > 38)
    }

    /// A source deeper than the encoder takes gets the nearest format it does take, its chroma
    /// kept: 12-bit 4:4:4 and 4:2:0 (HEVC Main 12, FFV1, DNxHR) become 10-bit 4:4:4 and 4:2:0 in
    /// H.264. They became 8-bit 4:2:0, with nothing said. 16-bit RGB frames get 10-bit 4:2:0.
    @Test(arguments: [("yuv444p12le", "yuv444p10le"), ("yuv420p12le", "yuv420p10le"), ("rgb48le", "yuv420p10le"), ("yuv420p", "yuv420p")])
    func deepSourcesKeepTheirDepthAndChroma(source format: String, written expected: String) throws {
        let dir = TemporaryDirectory()
        let source = dir.file("deep.mkv"), written = dir.file("out.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:duration=0.2:rate=10", "-pix_fmt", format, "-c:v", "ffv1", source])
        let (info, frames) = try SyntheticClip.readAll(source)
        let sink = try Media.openSink(written, info: info, inputs: [source], overwrite: false)
        for frame in frames { try sink.write(frame) }
        try sink.finish()
        let (out, decoded) = try SyntheticClip.readAll(written)
        #expect(out.pixelFormat == expected, "\(format) → \(out.pixelFormat ?? "?")")
        #expect(psnr(frames[0].image, decoded[0].image) > 30)
    }
}

import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

@Suite struct RoundTripTests {
    static let width = 64, height = 48, count = 12
    static let frames = (0..<count).map { SyntheticClip.movingPattern(t: $0, width: width, height: height) }

    /// Every format the issue names is read back with its frame count, size and content.
    /// Measured here at the writer's defaults (frame 5): libx264 37.9, mpeg4 38.5, mpeg2video
    /// 40.0, libvpx-vp9 36.3, libtheora 28.0, mjpeg 40.3 dB; floors are 2–4 dB below.
    @Test(arguments: [
        ("mp4", "libx264", 34.0), ("avi", "mpeg4", 35.0), ("mpg", "mpeg2video", 36.0),
        ("webm", "libvpx-vp9", 33.0), ("ogg", "libtheora", 25.0), ("mkv", "ffv1", Double.infinity),
        ("avi", "mjpeg", 36.0),
    ])
    func readsEveryFormat(ext: String, codec: String, minimumPSNR: Double) throws {
        let dir = TemporaryDirectory()
        let path = try SyntheticClip.write(Self.frames, to: dir.file("clip.\(ext)"), codec: codec)
        let (info, decoded) = try SyntheticClip.readAll(path)
        #expect(decoded.count == Self.count)
        #expect(info.width == Self.width && info.height == Self.height)
        for (original, frame) in zip(Self.frames, decoded) {
            let quality = psnr(original, frame.image)
            #expect(quality >= minimumPSNR, "frame \(frame.index) of \(codec): \(quality) dB")
        }
    }

    @Test func losslessFFV1RoundTripIsBitExact() throws {
        let dir = TemporaryDirectory()
        let path = try SyntheticClip.write(Self.frames, to: dir.file("clip.mkv"), codec: "ffv1")
        try Self.expectExactly(Self.frames, in: path)
    }

    /// Frames prepared for the writer (converted to its pixel format when they are queued, as
    /// the streaming loop does) are each their own picture: all prepared before any is written,
    /// they come back bit-exact, each in its place; one given a new image after it was prepared
    /// is written with the new one.
    @Test func preparedFramesAreWrittenExactly() throws {
        let dir = TemporaryDirectory()
        let sink = try Self.losslessSink(dir.file("clip.mkv"))
        var queued = try Self.frames.enumerated().map { i, image in
            var frame = VideoFrame(image: image, pts: Int64(i), duration: 1, index: i)
            try sink.prepare(&frame)
            return frame
        }
        // A frame given a new image after it was prepared is written with the new one.
        let last = queued.count - 1
        queued[last].image = Self.frames[0]
        for frame in queued { try sink.write(frame) }
        queued.removeAll()
        try sink.finish()
        var expected = Self.frames
        expected[last] = Self.frames[0]
        try Self.expectExactly(expected, in: dir.file("clip.mkv"))
    }

    /// As the streaming loop runs: each frame prepared while the two before it still wait, and
    /// let go once written, so the pictures of written frames are reused for later ones
    /// (`VideoWriter`'s pool). Every frame comes back bit-exact: a picture reused while its
    /// frame still waited would show a later frame's pixels.
    @Test func framesPreparedInAStreamReuseTheirPicturesExactly() throws {
        let dir = TemporaryDirectory()
        let sink = try Self.losslessSink(dir.file("clip.mkv"))
        var waiting: [VideoFrame] = []
        for (i, image) in Self.frames.enumerated() {
            var frame = VideoFrame(image: image, pts: Int64(i), duration: 1, index: i)
            try sink.prepare(&frame)
            waiting.append(frame)
            if waiting.count > 2 { try sink.write(waiting.removeFirst()) }
        }
        for frame in waiting { try sink.write(frame) }
        waiting.removeAll()
        try sink.finish()
        try Self.expectExactly(Self.frames, in: dir.file("clip.mkv"))
    }

    /// An FFV1 writer for the clip's frames at `path`.
    static func losslessSink(_ path: String) throws -> FrameSink {
        let info = StreamInfo(width: width, height: height, timeBase: Rational(1, 25), frameRate: Rational(25, 1))
        return try Media.openSink(path, info: info, inputs: [], overwrite: true, options: EncoderOptions(codec: "ffv1"))
    }

    /// The video at `path` holds `expected`, frame for frame, to the bit.
    static func expectExactly(_ expected: [PlanarImage], in path: String) throws {
        let (_, decoded) = try SyntheticClip.readAll(path)
        #expect(decoded.count == expected.count)
        for (original, frame) in zip(expected, decoded) {
            #expect(original.isIdentical(to: frame.image), "frame \(frame.index) differs")
        }
    }

    @Test func pngDirectoryRoundTripIsBitExact() throws {
        let dir = TemporaryDirectory()
        let path = try SyntheticClip.write(Self.frames, to: dir.file("frames"))
        let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        #expect(names == (0..<Self.count).map { String(format: "%05d.png", $0) })
        let (_, decoded) = try SyntheticClip.readAll(path)
        #expect(decoded.count == Self.count)
        for (original, frame) in zip(Self.frames, decoded) {
            #expect(original.isIdentical(to: frame.image), "frame \(frame.index) differs")
        }
    }

    /// H.264 in 4:4:4, so chroma subsampling cannot hide a colour-conversion error: lossless
    /// (CRF 0) leaves only 8-bit YUV rounding (52 dB here, floor 50); the default CRF 18 gave
    /// 37–38 dB on this small, detailed pattern (floor 34).
    @Test(arguments: [(0, 50.0), (18, 34.0)])
    func h264RoundTripStaysWithinPSNR(crf: Int, floor: Double) throws {
        let dir = TemporaryDirectory()
        let path = try SyntheticClip.write(Self.frames, to: dir.file("clip.mp4"), crf: crf, pixelFormat: "yuv444p")
        let (_, decoded) = try SyntheticClip.readAll(path)
        #expect(decoded.count == Self.count)
        let mean = zip(Self.frames, decoded).map { psnr($0, $1.image) }.reduce(0, +) / Double(Self.count)
        #expect(mean >= floor, "mean PSNR \(mean) dB at CRF \(crf)")
    }

    /// A 4:2:0 video read into RGB and written back unchanged (lossless H.264) keeps its chroma:
    /// the writer's downsampling undoes the reader's upsampling. testsrc2's sharp colour edges,
    /// made pale and mid-grey so that no colour leaves the RGB cube (a clipped colour is changed
    /// by any RGB tool). Measured: every code the same; the [1 2 1]/4 × [1 1]/2 downsampling
    /// before it was off by up to 17 codes at the edges, the 5/3 filters clamped to the rows'
    /// own range (not widened to what upsampled rows imply) by up to 6.
    @Test func yuv420ChromaSurvivesAPassThroughRGB() throws {
        let dir = TemporaryDirectory()
        let source = dir.file("source.mkv"), written = dir.file("written.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=0.12,hue=s=0.35,eq=contrast=0.5",
                    "-pix_fmt", "yuv420p", "-c:v", "ffv1", source])
        let (info, frames) = try SyntheticClip.readAll(source)
        #expect(info.pixelFormat == "yuv420p")
        try SyntheticClip.write(frames.map(\.image), to: written, codec: "libx264", crf: 0, pixelFormat: "yuv420p")
        func planes(_ path: String) throws -> [UInt8] {
            let raw = dir.file(URL(fileURLWithPath: path).lastPathComponent + ".yuv")
            try ffmpeg(["-i", path, "-f", "rawvideo", "-pix_fmt", "yuv420p", raw])
            return [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        }
        let a = try planes(source), b = try planes(written)
        #expect(a.count == b.count && a.count == 3 * 96 * 64 / 2 * frames.count)
        let worst = zip(a, b).map { abs(Int($0) - Int($1)) }.max() ?? 0
        #expect(worst <= 1, "largest difference \(worst) codes")
    }

    /// Chroma made in RGB (an RGB source, an edit's painted or stylised edges) was never
    /// upsampled, and its sharp edges must not ring when it is taken to 4:2:0: four quadrants of
    /// saturated colour, their edges off the chroma grid, written as lossless H.264. Every chroma
    /// code stays within the range of the four colours' own codes (the unclamped 5/3 filters went
    /// up to 33 codes beyond it).
    @Test func sharpColourEdgesDoNotRingIn420() throws {
        let dir = TemporaryDirectory()
        let (w, h) = (40, 32)
        let colours: [(Float, Float, Float)] = [(1, 0, 0), (0, 0, 1), (0, 0.8, 0), (1, 1, 1)]
        var image = PlanarImage(channels: 3, height: h, width: w)
        for y in 0..<h { for x in 0..<w {
            let c = colours[(x < 13 ? 0 : 1) + (y < 11 ? 0 : 2)]
            image[0, y, x] = c.0; image[1, y, x] = c.1; image[2, y, x] = c.2
        } }
        let path = try SyntheticClip.write([image, image], to: dir.file("edges.mkv"), codec: "libx264", crf: 0, pixelFormat: "yuv420p")
        let raw = dir.file("edges.yuv")
        try ffmpeg(["-i", path, "-f", "rawvideo", "-pix_fmt", "yuv420p", raw])
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        // BT.601 limited range (what a 32-line frame is tagged): the colours' own chroma codes.
        let codes = colours.map { (r, g, b) -> (cb: Double, cr: Double) in
            let y = 0.299 * Double(r) + 0.587 * Double(g) + 0.114 * Double(b)
            return (128 + 224 * (Double(b) - y) / 1.772, 128 + 224 * (Double(r) - y) / 1.402)
        }
        let plane = w * h / 4
        for (offset, bounds) in [(w * h, codes.map(\.cb)), (w * h + plane, codes.map(\.cr))] {
            let values = bytes[offset..<(offset + plane)].map(Double.init)
            #expect(values.min()! >= bounds.min()! - 1.5 && values.max()! <= bounds.max()! + 1.5,
                    "chroma \(values.min()!)…\(values.max()!), the colours' \(bounds.min()!)…\(bounds.max()!)")
        }
    }

    /// With no codec named, a container that holds H.264 gets it: MP4, Matroska, MOV, and
    /// MPEG-TS, whose muxer does not say that it can (it came out MPEG-2 before).
    @Test(arguments: ["mp4", "mkv", "mov", "ts"])
    func h264WhereTheContainerHoldsIt(ext: String) throws {
        let dir = TemporaryDirectory()
        let path = try SyntheticClip.write(Array(Self.frames.prefix(3)), to: dir.file("clip.\(ext)"))
        let (info, decoded) = try SyntheticClip.readAll(path)
        #expect(info.codecName == "h264" && decoded.count == 3, "\(ext): \(info.codecName)")
    }

    /// Odd sizes go through libx264 (in 4:4:4) and come back at the same size.
    @Test func oddSizeKeepsItsSize() throws {
        let dir = TemporaryDirectory()
        let odd = (0..<4).map { SyntheticClip.movingPattern(t: $0, width: 63, height: 47) }
        let path = try SyntheticClip.write(odd, to: dir.file("odd.mp4"))
        let (info, decoded) = try SyntheticClip.readAll(path)
        #expect(info.width == 63 && info.height == 47)
        #expect(decoded.count == 4)
        #expect(psnr(odd[0], decoded[0].image) > 35)
    }

    /// Directory frames sort naturally: frame2 before frame10.
    @Test func frameDirectoryUsesNaturalOrder() throws {
        let dir = TemporaryDirectory()
        let folder = dir.file("shots")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        for (i, level) in [(1, 10), (2, 20), (10, 100)] {
            try ImageFile.writePNG(SyntheticClip.flat(level: level, width: 8, height: 8), to: folder + "/frame\(i).png")
        }
        let (_, decoded) = try SyntheticClip.readAll(folder)
        #expect(decoded.map { Int(($0.image[0, 0, 0] * 255).rounded()) } == [10, 20, 100])
        #expect(naturalOrder("a2.png", "a10.png") && !naturalOrder("a10.png", "a2.png"))
    }
}

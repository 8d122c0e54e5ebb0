import Foundation
import Testing
import MediaIO
import Tensor
import TestSupport

/// Still images as people make them: palette PNGs, and JPEGs from phones and photo editors
/// that store the pixels turned and say so in EXIF.
@Suite struct ImageFileTests {
    /// A palette PNG is its palette's colours, and opaque where its palette is: FFmpeg flags
    /// every palette format as having alpha, and the palette index used to be read as the alpha
    /// (a keyframe blended by its index, 7 dB from itself).
    @Test func paletteImageIsReadByItsColours() throws {
        let dir = TemporaryDirectory(), other = TemporaryDirectory()
        let palette = dir.file("palette.png"), rgb = other.file("rgb.png")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-pix_fmt", "pal8", palette])
        try ffmpeg(["-i", palette, "-pix_fmt", "rgb24", rgb])
        let read = try ImageFile.readWithAlpha(palette)
        // Nor is it said to have an alpha channel that the output leaves out.
        let saidToHaveAlpha = try Media.openSource(dir.path).info.hasAlpha
        #expect(read.alpha == nil && !saidToHaveAlpha)
        #expect(psnr(read.image, try ImageFile.read(rgb).image) > 40)
    }

    /// A palette PNG with transparent entries (tRNS) has the alpha of each pixel's entry.
    @Test func transparentPaletteEntriesAreItsAlpha() throws {
        let dir = TemporaryDirectory()
        let file = dir.file("transparent.png")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:duration=0.04,format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='if(lt(X,32),0,255)'",
                    "-frames:v", "1", "-vf", "split[a][b];[a]palettegen=reserve_transparent=1[p];[b][p]paletteuse=alpha_threshold=128",
                    "-pix_fmt", "pal8", file])
        let alpha = try #require(try ImageFile.readWithAlpha(file).alpha)
        let left = (0..<48).flatMap { y in (0..<32).map { alpha[0, y, $0] } }, right = (0..<48).flatMap { y in (32..<64).map { alpha[0, y, $0] } }
        #expect(left.max() == 0 && right.min() == 1)
    }

    /// Each EXIF orientation (1–8) is applied as a viewer applies it: a picture stored turned or
    /// mirrored, with the orientation that undoes it, reads as the picture. (It was read as
    /// stored: upside down, mirrored, or sideways and then refused as the wrong size.)
    @Test(arguments: [(1, "null"), (2, "hflip"), (3, "hflip,vflip"), (4, "vflip"),
                      (5, "transpose=cclock_flip"), (6, "transpose=cclock"), (7, "transpose=clock_flip"), (8, "transpose=clock")])
    func exifOrientationIsApplied(orientation: Int, stored filter: String) throws {
        let dir = TemporaryDirectory()
        let upright = dir.file("upright.jpg"), stored = dir.file("stored.jpg"), tagged = dir.file("tagged.jpg")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-pix_fmt", "yuvj444p", "-q:v", "1", upright])
        try ffmpeg(["-i", upright, "-vf", filter, "-pix_fmt", "yuvj444p", "-q:v", "1", stored])
        try Self.withOrientation(orientation, try Data(contentsOf: URL(fileURLWithPath: stored))).write(to: URL(fileURLWithPath: tagged))
        let read = try ImageFile.read(tagged).image, expected = try ImageFile.read(upright).image
        #expect(read.width == 64 && read.height == 48)
        if read.width == 64 && read.height == 48 { #expect(psnr(read, expected) > 30) }
        // A frame directory of such photos (a phone's timelapse) and a JPEG given as the input
        // are read the same way.
        let frames = dir.file("frames")
        try FileManager.default.createDirectory(atPath: frames, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: tagged, toPath: frames + "/0001.jpg")
        for source in [try Media.openSource(frames), try Media.openSource(tagged)] {
            let next = try source.next()
            let frame = try #require(next).image
            #expect(frame.width == 64 && frame.height == 48 && psnr(frame, read) == .infinity)
        }
    }

    /// `jpeg` with an EXIF APP1 segment holding one tag, Orientation, inserted after its start
    /// marker (big-endian TIFF: header, one IFD entry of type SHORT, no next IFD).
    static func withOrientation(_ orientation: Int, _ jpeg: Data) -> Data {
        precondition(jpeg.starts(with: [0xFF, 0xD8]))
        let tiff: [UInt8] = [0x4D, 0x4D, 0x00, 0x2A, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, UInt8(orientation), 0, 0, 0, 0, 0, 0]
        let body: [UInt8] = Array("Exif".utf8) + [0, 0] + tiff
        let segment: [UInt8] = [0xFF, 0xE1, UInt8((body.count + 2) >> 8), UInt8((body.count + 2) & 0xFF)] + body
        return jpeg.prefix(2) + Data(segment) + jpeg.dropFirst(2)
    }
}

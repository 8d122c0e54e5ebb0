import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// Bad input gets a `MediaError` naming the file and the problem, and nothing is left behind.
@Suite struct ErrorTests {
    static let frames = (0..<8).map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }

    func expectError(_ kind: MediaError.Kind, naming path: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected a \(kind) error for \(path)")
        } catch let error as MediaError {
            #expect(error.kind == kind, "\(error)")
            #expect(error.description.hasPrefix(path), "\(error)")
            #expect(!error.description.contains("\n"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func missingFile() {
        let path = "/nonexistent/clip.mp4"
        expectError(.missing, naming: path) { _ = try Media.openSource(path) }
    }

    @Test func directoryWithoutFrames() throws {
        let dir = TemporaryDirectory()
        try "notes".write(toFile: dir.file("readme.txt"), atomically: true, encoding: .utf8)
        expectError(.notMedia, naming: dir.path) { _ = try Media.openSource(dir.path) }
    }

    @Test func textFileNamedMP4() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("fake.mp4")
        try "this is not a video\n".write(toFile: path, atomically: true, encoding: .utf8)
        expectError(.notMedia, naming: path) { _ = try Media.openSource(path) }
    }

    /// A cut-off file decodes what is there and reports the damage FFmpeg found; refusing
    /// damage stops at the first error instead.
    @Test(arguments: ["mp4", "mkv"])
    func truncatedVideo(ext: String) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cut.\(ext)")
        try writeTruncatedClip(to: path, size: "160x120", seconds: 4, keeping: 0.5)
        let log = DamageLog()
        let source = try Media.openSource(path, damageLog: log)
        var decoded = 0
        while try source.next() != nil { decoded += 1 }
        #expect(decoded > 10 && decoded < 100, "decoded \(decoded) of 100 frames")
        let damage = try #require(log.entries.first, "a truncated \(ext) read as complete")
        #expect(log.entries.count == 1)
        #expect(damage.path == path && damage.framesDecoded == decoded && damage.firstFrame <= decoded)
        #expect((source as? VideoReader)?.damage == damage)
        #expect(!damage.description.contains("\n") && damage.description.hasPrefix(path))

        let strict = try Media.openSource(path, damageLog: DamageLog(policy: .refuse))
        var before = 0
        expectError(.damaged, naming: path) { while try strict.next() != nil { before += 1 } }
        #expect(before <= decoded)
    }

    /// A container that declares more frames than decode (an mp4 whose edit list hides the
    /// packets before a cut) is not damaged.
    @Test func declaredCountIsNotDamage() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("edited.mp4")
        // -ss with -c copy keeps the packets before the start and an edit list that hides them:
        // the container declares more frames than decode.
        let full = dir.file("full.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3", "-c:v", "libx264", "-g", "50", full])
        try ffmpeg(["-ss", "0.5", "-i", full, "-c", "copy", path])
        let log = DamageLog(policy: .refuse)
        let source = try Media.openSource(path, damageLog: log)
        var decoded = 0
        while try source.next() != nil { decoded += 1 }
        #expect(log.entries.isEmpty)
        let declared = try #require(source.info.declaredFrameCount)
        #expect(declared > decoded, "declared \(declared), decoded \(decoded): the fixture has no hidden frames")
    }

    /// A file cut before its index (an mp4 whose moov atom is at the end) cannot be opened.
    @Test func truncatedBeforeIndex() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cut.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v", "libx264", path])
        try truncate(path, keeping: 0.5)
        expectError(.notMedia, naming: path) { _ = try Media.openSource(path) }
    }

    @Test func unknownCodecAndContainer() throws {
        let dir = TemporaryDirectory()
        let info = StreamInfo(width: 64, height: 48, timeBase: Rational(1, 25), frameRate: Rational(25, 1))
        let badCodec = dir.file("a.mp4"), badContainer = dir.file("a.xyz")
        expectError(.badOption, naming: badCodec) {
            _ = try Media.openSink(badCodec, info: info, inputs: [], overwrite: false, options: EncoderOptions(codec: "nosuchcodec"))
        }
        expectError(.invalidArgument, naming: badContainer) {
            _ = try Media.openSink(badContainer, info: info, inputs: [], overwrite: false)
        }
        #expect(dir.contents.isEmpty)
    }

    @Test func unwritableOutputDirectory() throws {
        let info = StreamInfo(width: 64, height: 48, timeBase: Rational(1, 25), frameRate: Rational(25, 1))
        let missingParent = "/nonexistent-dir/out.mp4"
        expectError(.unwritable, naming: missingParent) {
            _ = try Media.openSink(missingParent, info: info, inputs: [], overwrite: false)
        }
        let procfs = "/proc/lockstep-out.mp4"  // not writable, even for root
        do {
            let sink = try Media.openSink(procfs, info: info, inputs: [], overwrite: false)
            sink.abort()
            Issue.record("writing under /proc succeeded")
        } catch let error as MediaError {
            #expect(error.kind == .unwritable, "\(error)")
        }
    }

    @Test func existingOutputAndOutputAsInput() throws {
        let dir = TemporaryDirectory()
        let input = try SyntheticClip.write(Self.frames, to: dir.file("in.mkv"), codec: "ffv1")
        let before = try Data(contentsOf: URL(fileURLWithPath: input))
        let info = try Media.openSource(input).info
        expectError(.sameAsInput, naming: input) {
            _ = try Media.openSink(input, info: info, inputs: [input], overwrite: true)
        }
        let existing = dir.file("taken.mp4")
        try "keep me".write(toFile: existing, atomically: true, encoding: .utf8)
        expectError(.outputExists, naming: existing) {
            _ = try Media.openSink(existing, info: info, inputs: [input], overwrite: false)
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "keep me")
        #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == before)
    }

    /// A video stream with no pictures (every packet dropped, the audio kept) is not a video to
    /// process: reading it is an error naming the file, where every command used to write or
    /// measure nothing and exit 0.
    @Test func videoStreamWithoutFrames() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("empty.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.4", "-f", "lavfi", "-i", "sine=duration=0.4",
                    "-c:v", "libx264", "-c:a", "aac", "-bsf:v", "noise=dropamount=1", path])
        let source = try Media.openSource(path)
        expectError(.notMedia, naming: path) { _ = try source.next() }
    }

    /// An audio file with cover art has one picture, as an attached stream: not a video (it was
    /// read as a video of one frame).
    @Test func coverArtIsNotAVideo() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("song.m4a")
        try ffmpeg(["-f", "lavfi", "-i", "sine=duration=0.5", "-f", "lavfi", "-i", "color=red:size=32x32:duration=0.04",
                    "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "png", "-frames:v", "1", "-disposition:v:0", "attached_pic", path])
        expectError(.notMedia, naming: path) { _ = try Media.openSource(path) }
    }

    /// Two jobs writing one output: the one that finishes second finds the output there and
    /// does not replace it (both used to succeed, the second silently replacing the first), and
    /// leaves no temporary file.
    @Test func outputMadeMeanwhileIsNotReplaced() throws {
        let dir = TemporaryDirectory()
        let input = try SyntheticClip.write(Self.frames, to: dir.file("in.mkv"), codec: "ffv1")
        let (info, frames) = try SyntheticClip.readAll(input)
        let path = dir.file("out.mkv")
        let sink = try Media.openSink(path, info: info, inputs: [input], overwrite: false)
        for frame in frames { try sink.write(frame) }
        try "the other job's".write(toFile: path, atomically: true, encoding: .utf8)
        expectError(.outputExists, naming: path) { try sink.finish() }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "the other job's")
        #expect(dir.contents == ["in.mkv", "out.mkv"])
        // The same for a directory of frames.
        let folder = dir.file("frames")
        let directorySink = try Media.openSink(folder + "/", info: info, inputs: [input], overwrite: false)
        for frame in frames { try directorySink.write(frame) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try "the other job's".write(toFile: folder + "/00000.png", atomically: true, encoding: .utf8)
        expectError(.outputExists, naming: folder) { try directorySink.finish() }
        #expect(try String(contentsOfFile: folder + "/00000.png", encoding: .utf8) == "the other job's")
        #expect(dir.contents == ["frames", "in.mkv", "out.mkv"])
    }

    /// A name as long as the file system allows (255 bytes) is written: the temporary name
    /// beside it must fit too (it failed with "File name too long").
    @Test func longestNameIsWritten() throws {
        let dir = TemporaryDirectory()
        let input = try SyntheticClip.write(Self.frames, to: dir.file("in.mkv"), codec: "ffv1")
        let (info, frames) = try SyntheticClip.readAll(input)
        let path = dir.file(String(repeating: "n", count: 251) + ".mkv")
        let sink = try Media.openSink(path, info: info, inputs: [input], overwrite: false)
        for frame in frames { try sink.write(frame) }
        try sink.finish()
        #expect(try SyntheticClip.readAll(path).frames.count == Self.frames.count)
    }

    /// `--overwrite` replaces a frame directory whole, so it refuses a directory that holds an
    /// input, or anything but frames; a directory of frames alone is replaced.
    @Test func overwriteReplacesOnlyAFrameDirectory() throws {
        let dir = TemporaryDirectory()
        let out = dir.file("out")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let input = try SyntheticClip.write(Self.frames, to: out + "/in.mkv", codec: "ffv1")
        let info = try Media.openSource(input).info
        expectError(.sameAsInput, naming: out) {
            _ = try Media.openSink(out, info: info, inputs: [input], overwrite: true)
        }
        try FileManager.default.moveItem(atPath: input, toPath: dir.file("in.mkv"))
        try "keep me".write(toFile: out + "/notes.txt", atomically: true, encoding: .utf8)
        expectError(.outputExists, naming: out) {
            _ = try Media.openSink(out, info: info, inputs: [dir.file("in.mkv")], overwrite: true)
        }
        try FileManager.default.removeItem(atPath: out + "/notes.txt")
        try FileManager.default.createDirectory(atPath: out + "/sub", withIntermediateDirectories: false)
        expectError(.outputExists, naming: out) {
            _ = try Media.openSink(out, info: info, inputs: [dir.file("in.mkv")], overwrite: true)
        }
        try FileManager.default.removeItem(atPath: out + "/sub")
        try ImageFile.writePNG(Self.frames[0], to: out + "/00000.png")
        let sink = try Media.openSink(out, info: info, inputs: [dir.file("in.mkv")], overwrite: true)
        sink.abort()
    }

    /// Frames of different sizes in a directory: the error names the first file that differs.
    @Test func frameDirectoryWithMixedSizes() throws {
        let dir = TemporaryDirectory()
        let folder = dir.file("frames")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        try ImageFile.writePNG(SyntheticClip.flat(level: 10, width: 16, height: 8), to: folder + "/1.png")
        try ImageFile.writePNG(SyntheticClip.flat(level: 10, width: 16, height: 8), to: folder + "/2.png")
        try ImageFile.writePNG(SyntheticClip.flat(level: 10, width: 8, height: 8), to: folder + "/3.png")
        let source = try Media.openSource(folder)
        expectError(.sizeMismatch, naming: folder + "/3.png") { while try source.next() != nil {} }
    }

    /// A full disk is reported as such, and the partial file is removed.
    @Test(.enabled(if: TemporaryMount.available, "needs root to mount a small tmpfs"))
    func fullDisk() throws {
        let mount = try TemporaryMount(kilobytes: 256)
        let noisy = (0..<30).map { t -> PlanarImage in
            var image = PlanarImage(channels: 3, height: 240, width: 320)
            var seed = UInt64(t + 1)
            image.withUnsafeMutableBufferPointer { buffer in
                for i in buffer.indices {
                    seed = seed &* 6364136223846793005 &+ 1442695040888963407
                    buffer[i] = Float(seed >> 56) / 255
                }
            }
            return image
        }
        for name in ["out.mkv", "frames"] {  // a video file, and a directory of PNG frames
            let path = mount.path + "/" + name
            do {
                try SyntheticClip.write(noisy, to: path, codec: name == "frames" ? nil : "ffv1")
                Issue.record("writing 7 MB into 256 KB succeeded")
            } catch let error as MediaError {
                #expect(error.kind == .diskFull, "\(error)")
                #expect(error.description.hasPrefix(path))
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: mount.path).isEmpty)
        }
    }
}

/// A small tmpfs for the full-disk test, unmounted when released.
final class TemporaryMount {
    let path: String
    private let holder = TemporaryDirectory()

    static let available: Bool = {
        guard getuid() == 0 else { return false }
        return (try? TemporaryMount(kilobytes: 16)) != nil
    }()

    init(kilobytes: Int) throws {
        path = holder.file("mnt")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let status = run(["mount", "-t", "tmpfs", "-o", "size=\(kilobytes)k", "tmpfs", path])
        if status != 0 { throw NSError(domain: "mount", code: Int(status)) }
    }

    deinit { _ = run(["umount", path]) }
}

private func run(_ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
}

import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// `lockstep concat`: a job split with --frames, its parts run at the same time, joined.
@Suite struct ConcatTests {
    /// Two seconds of testsrc2 with a sine tone, and an edit of its frame 10.
    static func clipWithAudio(in dir: TemporaryDirectory) throws -> (input: String, key: String) {
        let input = dir.file("in.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-c:a", "aac", "-shortest", input])
        let key = dir.file("key.png")
        try ffmpeg(["-i", input, "-vf", "select=eq(n\\,10),negate", "-frames:v", "1", key])
        return (input, key)
    }

    /// Runs `lockstep` once per argument list, all at the same time, as a render farm would.
    static func runTogether(_ runs: [[String]]) -> [CLITests.Result?] {
        let results = ResultBox(count: runs.count)
        DispatchQueue.concurrentPerform(iterations: runs.count) { i in results.set(i, try? CLITests.run(runs[i])) }
        return results.values
    }

    /// Three parts of an edit, run at once and joined, are the whole run: the same frames bit
    /// for bit (lossless video), the same timestamps, and the same audio packets.
    @Test func partsRunTogetherJoinIntoTheWholeRun() throws {
        let dir = TemporaryDirectory()
        let (input, key) = try Self.clipWithAudio(in: dir)
        let edit = ["edit", input, "--keyframe", "10=\(key)", "--codec", "ffv1", "--quiet"]
        let ranges = ["0:17", "17:31", "31:"]
        let results = Self.runTogether([edit + ["-o", dir.file("whole.mkv")]]
            + ranges.enumerated().map { edit + ["--frames", $1, "-o", dir.file("part\($0).mkv")] })
        for result in results { #expect(result?.status == 0, "\(result?.stderr ?? "did not run")") }
        let join = try CLITests.run(["concat"] + ranges.indices.map { dir.file("part\($0).mkv") } + ["-o", dir.file("joined.mkv"), "--json", "--quiet"])
        #expect(join.status == 0, "\(join.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(join.stdout.utf8)) as? [String: Any]
        #expect(json?["frames"] as? Int == 50)

        let whole = try SyntheticClip.readAll(dir.file("whole.mkv")).frames, joined = try SyntheticClip.readAll(dir.file("joined.mkv")).frames
        #expect(whole.count == 50 && joined.count == 50)
        for (a, b) in zip(whole, joined) {
            #expect(a.image.isIdentical(to: b.image), "frame \(a.index)")
            #expect(a.pts == b.pts, "frame \(a.index)")
        }
        #expect(try Self.audioPackets(dir.file("joined.mkv")) == Self.audioPackets(dir.file("whole.mkv")))
        #expect(try Self.audioPackets(dir.file("whole.mkv")).count > 80)
    }

    /// Parts in MP4 and Matroska (H.264 with B-frames: Matroska gives a part's first packets no
    /// decode time, and the join failed) and in NUT (raw video, whose codec tag names the pixel
    /// layout: it was lost, and the join did not decode) join into a file FFmpeg decodes without
    /// an error, with the whole run's frame times.
    @Test(arguments: ["mp4", "mkv", "nut"])
    func partsJoinIntoAFileThatDecodes(ext: String) throws {
        let dir = TemporaryDirectory()
        let (input, _) = try Self.clipWithAudio(in: dir)
        try Self.expectJoinIsWhole(input, ext: ext, cut: 23, frames: 50, in: dir)
    }

    /// Audio that runs on past the last frame (3 s of sound, 2 s of picture) is kept by the
    /// whole run, and so by the last part, whether its END is left out or lies past the end: the
    /// joined parts have every audio packet of the whole run (the last part stopped at its last
    /// frame before, and the join was a second short).
    @Test(arguments: ["", "100"]) func audioPastTheLastFrameIsKeptByTheLastPart(end: String) throws {
        let dir = TemporaryDirectory()
        let input = dir.file("long-audio.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
                    "-c:v", "libx264", "-c:a", "aac", input])
        for (name, extra) in [("whole", [String]()), ("a", ["--frames", "0:23"]), ("b", ["--frames", "23:\(end)"])] {
            let r = try CLITests.run(["convert", input, "-o", dir.file("\(name).mkv"), "--quiet"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let join = try CLITests.run(["concat", dir.file("a.mkv"), dir.file("b.mkv"), "-o", dir.file("joined.mkv"), "--quiet"])
        #expect(join.status == 0, "\(join.stderr)")
        let whole = try Self.audioPackets(dir.file("whole.mkv")), joined = try Self.audioPackets(dir.file("joined.mkv"))
        #expect(whole.count > 130 && joined == whole, "\(joined.count) audio packets joined, \(whole.count) in the whole run")
    }

    /// An MP4 with AAC (its priming samples start 23 ms before zero) split into Matroska parts,
    /// which cannot hold times before zero: the muxer moved the first part's packets 23 ms later
    /// and not the others', so frames after the join came 23 ms early against the whole run's.
    /// Every part now moves by the input's own start, and the join is the whole run, video and
    /// audio packets alike.
    @Test func primedAudioPartsJoinIntoTheWholeRun() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("phone.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                    "-c:v", "libx264", "-c:a", "aac", "-shortest", input])
        try Self.expectJoinIsWhole(input, ext: "mkv", cut: 17, frames: 50, in: dir)
        #expect(try Self.audioPackets(dir.file("joined.mkv")) == Self.audioPackets(dir.file("whole.mkv")))
    }

    /// A variable frame rate (frames dropped here and there) is kept across the join: the second
    /// part's last-frame gap is not the first part's stored last duration (it was moved 13 ms).
    @Test func variableFrameRatePartsKeepTheirTimes() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("vfr.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=50:duration=2",
                    "-vf", "select='not(eq(mod(n\\,5)\\,2))*not(eq(mod(n\\,7)\\,3))'", "-fps_mode", "passthrough",
                    "-c:v", "libx264", input])
        let frames = try FFprobe.decode(input).timestamps.count
        #expect(frames > 60 && frames < 100)
        try Self.expectJoinIsWhole(input, ext: "mp4", cut: 30, frames: frames, in: dir)
    }

    /// `input` converted whole and in two parts cut at `cut`, the parts joined: FFmpeg decodes
    /// the join without an error, with the whole's `frames` frame times.
    static func expectJoinIsWhole(_ input: String, ext: String, cut: Int, frames: Int, in dir: TemporaryDirectory) throws {
        for (name, extra) in [("whole", [String]()), ("a", ["--frames", "0:\(cut)"]), ("b", ["--frames", "\(cut):"])] {
            let r = try CLITests.run(["convert", input, "-o", dir.file("\(name).\(ext)"), "--quiet"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let join = try CLITests.run(["concat", dir.file("a.\(ext)"), dir.file("b.\(ext)"), "-o", dir.file("joined.\(ext)"), "--quiet"])
        #expect(join.status == 0, "\(ext): \(join.stderr)")
        let joined = try FFprobe.decode(dir.file("joined.\(ext)")), whole = try FFprobe.decode(dir.file("whole.\(ext)"))
        #expect(joined.errors.isEmpty, "\(ext): \(joined.errors)")
        #expect(joined.timestamps.count == frames && joined.timestamps == whole.timestamps, "\(ext): \(joined.timestamps) against \(whole.timestamps)")
    }

    /// Files made separately each start at zero: joined, the second follows the first.
    @Test func separatelyMadeFilesFollowEachOther() throws {
        let dir = TemporaryDirectory()
        let input = try CLITests.clip(in: dir)
        let join = try CLITests.run(["concat", input, input, "-o", dir.file("twice.mkv"), "--quiet"])
        #expect(join.status == 0, "\(join.stderr)")
        let frames = try SyntheticClip.readAll(dir.file("twice.mkv")).frames
        #expect(frames.count == 20)
        let seconds = frames.map { Double($0.pts) / 1000 }  // Matroska's millisecond
        #expect(zip(seconds, seconds.dropFirst()).allSatisfy { abs($1 - $0 - 0.04) < 0.0015 }, "\(seconds)")
        // MPEG-TS files made by FFmpeg start at 1.4 s, not zero: made separately all the same,
        // not parts of one timeline given out of order.
        try ffmpeg(["-i", input, "-c:v", "libx264", "-f", "mpegts", dir.file("a.ts")])
        try ffmpeg(["-i", input, "-c:v", "libx264", "-f", "mpegts", dir.file("b.ts")])
        let ts = try CLITests.run(["concat", dir.file("a.ts"), dir.file("b.ts"), "-o", dir.file("both.ts"), "--quiet"])
        #expect(ts.status == 0, "\(ts.stderr)")
        #expect(try SyntheticClip.readAll(dir.file("both.ts")).frames.count == 20)
    }

    /// Parts that are not one job's are refused in one line naming the part, before anything is
    /// written; so are a missing part and a part that is not a video.
    @Test func foreignPartsAreRefused() throws {
        let dir = TemporaryDirectory()
        let input = try CLITests.clip(in: dir)
        let other = try SyntheticClip.write((0..<3).map { SyntheticClip.movingPattern(t: $0, width: 48, height: 32) },
                                            to: dir.file("other.mkv"), codec: "ffv1")
        let size = try CLITests.run(["concat", input, other, "-o", dir.file("out.mkv")])
        #expect(size.status == 1)
        #expect(size.stderr.hasPrefix("lockstep: error: \(other): its video is 48×32 ") && size.stderr.split(separator: "\n").count == 1, "\(size.stderr)")
        let missing = try CLITests.run(["concat", input, dir.file("nope.mkv"), "-o", dir.file("out.mkv")])
        #expect(missing.status == 1 && missing.stderr == "lockstep: error: \(dir.file("nope.mkv")): no such file or directory\n")
        try Data("not a video".utf8).write(to: URL(fileURLWithPath: dir.file("notes.txt")))
        let text = try CLITests.run(["concat", input, dir.file("notes.txt"), "-o", dir.file("out.mkv")])
        #expect(text.status == 1 && text.stderr.hasPrefix("lockstep: error: \(dir.file("notes.txt")): not a video file"))
        #expect(dir.contents == ["in.mkv", "notes.txt", "other.mkv"])

        // A part missing from the middle of a split job leaves a gap: refused, unless allowed.
        for (name, range) in [("a.mkv", "0:3"), ("c.mkv", "6:")] {
            #expect(try CLITests.run(["convert", input, "--frames", range, "--codec", "ffv1", "-o", dir.file(name), "--quiet"]).status == 0)
        }
        let gap = try CLITests.run(["concat", dir.file("a.mkv"), dir.file("c.mkv"), "-o", dir.file("out.mkv"), "--quiet"])
        #expect(gap.status == 1 && gap.stderr == "lockstep: error: \(dir.file("c.mkv")): starts at 0.240 s, 0.120 s after \(dir.file("a.mkv")) ends: a part is missing between them (--allow-gaps joins them anyway)\n", "\(gap.stderr)")
        #expect(!dir.contents.contains("out.mkv"))
        let allowed = try CLITests.run(["concat", dir.file("a.mkv"), dir.file("c.mkv"), "-o", dir.file("out.mkv"), "--allow-gaps", "--quiet"])
        #expect(allowed.status == 0)
        let joined = try SyntheticClip.readAll(dir.file("out.mkv")).frames.map(\.pts)
        #expect(joined == [0, 40, 80, 240, 280, 320, 360])
    }

    /// The parts of a split job out of order, given twice or overlapping are refused in one line
    /// naming the part, and nothing is written. (Before, parts in the wrong order were joined in
    /// that order, the later frames first, and a part given twice was joined twice.)
    @Test func partsOutOfOrderAreRefused() throws {
        let dir = TemporaryDirectory()
        let input = try CLITests.clip(in: dir)
        for (name, range) in [("a.mkv", "0:4"), ("b.mkv", "4:7"), ("c.mkv", "7:"), ("ab.mkv", "2:6")] {
            #expect(try CLITests.run(["convert", input, "--frames", range, "--codec", "ffv1", "-o", dir.file(name), "--quiet"]).status == 0)
        }
        let reversed = try CLITests.run(["concat", dir.file("b.mkv"), dir.file("a.mkv"), "-o", dir.file("out.mkv"), "--quiet"])
        #expect(reversed.status == 1 && reversed.stderr == "lockstep: error: \(dir.file("a.mkv")): starts at 0.000 s, before \(dir.file("b.mkv")) (at 0.160 s), which is given before it: the parts of a split job go in the order of their frames (a shell's sort puts part10 before part9)\n", "\(reversed.stderr)")
        let twice = try CLITests.run(["concat", dir.file("a.mkv"), dir.file("b.mkv"), dir.file("b.mkv"), dir.file("c.mkv"), "-o", dir.file("out.mkv"), "--quiet"])
        #expect(twice.status == 1 && twice.stderr == "lockstep: error: \(dir.file("b.mkv")): is given twice (also as \(dir.file("b.mkv"))): give each part of a split job once\n", "\(twice.stderr)")
        let overlap = try CLITests.run(["concat", dir.file("ab.mkv"), dir.file("b.mkv"), "-o", dir.file("out.mkv"), "--quiet"])
        #expect(overlap.status == 1 && overlap.stderr.hasPrefix("lockstep: error: \(dir.file("b.mkv")): starts at 0.160 s, within \(dir.file("ab.mkv")), which runs to 0.240 s: the parts overlap"), "\(overlap.stderr)")
        #expect(!dir.contents.contains("out.mkv"))
        let inOrder = try CLITests.run(["concat", dir.file("a.mkv"), dir.file("b.mkv"), dir.file("c.mkv"), "-o", dir.file("out.mkv"), "--quiet"])
        #expect(inOrder.status == 0, "\(inOrder.stderr)")
        #expect(try SyntheticClip.readAll(dir.file("out.mkv")).frames.map(\.pts) == (0..<10).map { $0 * 40 })
    }

    /// The audio packets' times and sizes, as ffprobe lists them.
    static func audioPackets(_ path: String) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts,size", "-of", "csv=p=0", path]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return CLITests.collect(process, out: out, err: err).stdout.split(separator: "\n").map(String.init)
    }
}

/// Results filled in from several threads.
final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [CLITests.Result?]
    init(count: Int) { stored = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ value: CLITests.Result?) { lock.lock(); stored[index] = value; lock.unlock() }
    var values: [CLITests.Result?] { lock.lock(); defer { lock.unlock() }; return stored }
}

import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// `lockstep deflicker --analysis FILE`: one first pass, shared by the parts of a split job and by
/// a stream on stdin.
@Suite struct AnalysisTests {
    /// The analysis made once (no OUTPUT) and shared by two parts run at the same time: joined,
    /// they are the run that reads the same analysis whole, bit for bit, and a fresh run's frames
    /// within a level. (Each part reads its own frames of the guide, for the values the input
    /// lost to clipping.)
    @Test func partsShareOneAnalysis() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try DeflickerCLITests.flickering(in: dir)
        let make = try CLITests.run(["deflicker", input, "--guide", guide, "--analysis", dir.file("shot.analysis")])
        #expect(make.status == 0, "\(make.stderr)")
        #expect(make.stdout.hasPrefix("analysis of 10 frames written to \(dir.file("shot.analysis")) (") && make.stdout.hasSuffix("; scene cuts: none)\n"), "\(make.stdout)")
        let common = ["deflicker", input, "--guide", guide, "--analysis", dir.file("shot.analysis"), "--codec", "ffv1", "--quiet"]
        let runs = ConcatTests.runTogether([common + ["-o", dir.file("whole.mkv")], common + ["--frames", "0:6", "-o", dir.file("a.mkv")],
                                            common + ["--frames", "6:", "-o", dir.file("b.mkv")]])
        for run in runs { #expect(run?.status == 0, "\(run?.stderr ?? "did not run")") }
        #expect(try CLITests.run(["concat", dir.file("a.mkv"), dir.file("b.mkv"), "-o", dir.file("joined.mkv"), "--quiet"]).status == 0)
        let fresh = try CLITests.run(["deflicker", input, "--guide", guide, "-o", dir.file("fresh.mkv"), "--codec", "ffv1", "--quiet"])
        #expect(fresh.status == 0)
        let whole = try SyntheticClip.readAll(dir.file("whole.mkv")).frames, joined = try SyntheticClip.readAll(dir.file("joined.mkv")).frames
        let fromScratch = try SyntheticClip.readAll(dir.file("fresh.mkv")).frames
        #expect(whole.count == 10 && joined.count == 10 && fromScratch.count == 10)
        for (a, b) in zip(whole, joined) { #expect(a.image.isIdentical(to: b.image) && a.pts == b.pts, "frame \(a.index)") }
        for (a, b) in zip(whole, fromScratch) { #expect(psnr(a.image, b.image) > 50, "frame \(a.index)") }
    }

    /// With no OUTPUT, `--json` gives the analysis's summary as one JSON object (it was text),
    /// and an `--analysis` that is a directory is refused in one line (it was Foundation's error).
    @Test func analysisAloneAnswersInJSON() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try DeflickerCLITests.flickering(in: dir)
        let run = try CLITests.run(["deflicker", input, "--guide", guide, "--analysis", dir.file("shot.analysis"), "--json", "--quiet"])
        #expect(run.status == 0, "\(run.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        #expect(json?["frames"] as? Int == 10 && json?["written"] as? Bool == true && (json?["references"] as? [Any])?.isEmpty == false, "\(run.stdout)")
        let folder = try CLITests.run(["deflicker", input, "--analysis", dir.path, "-o", dir.file("out.mkv"), "--quiet"])
        #expect(folder.status == 1 && folder.stderr == "lockstep: error: \(dir.path): is a directory, not a Lockstep deflicker analysis (lockstep deflicker --analysis writes one)\n", "\(folder.stderr)")
    }

    /// A reused analysis answers only the options it was made with: another `--reference`, a
    /// guide it was made without (or none where it had one), or a shorter video is refused, and
    /// nothing is written. Each used to get the analysis's own answer without a word, the last
    /// with a "before" figure of frames it never read.
    @Test func reusedAnalysisIsRefusedForOtherOptions() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try DeflickerCLITests.flickering(in: dir)
        let file = dir.file("shot.analysis"), out = dir.file("out.mkv")
        #expect(try CLITests.run(["deflicker", input, "--reference", "2", "--analysis", file, "--quiet"]).status == 0)
        let short = dir.file("short.mkv")
        try ffmpeg(["-i", input, "-frames:v", "7", "-c:v", "ffv1", short])
        for (arguments, words) in [(["--reference", "3"], "was made with --reference 2; give the same, or make the analysis again"),
                                   (["--reference", "auto"], "was made with --reference 2; give the same, or make the analysis again"),
                                   (["--reference", "2", "--guide", guide], "was made without --guide; leave --guide out, or make the analysis again with it")] {
            let run = try CLITests.run(["deflicker", input, "--analysis", file, "-o", out, "--quiet"] + arguments)
            #expect(run.status == 1 && run.stderr == "lockstep: error: \(file): \(words)\n", "\(arguments): \(run.stderr)")
        }
        let shorter = try CLITests.run(["deflicker", short, "--reference", "2", "--analysis", file, "-o", out, "--quiet"])
        #expect(shorter.status == 1 && shorter.stderr.contains("\(file): is the analysis of a video of 10 frames; \(short) has 7"), "\(shorter.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let same = try CLITests.run(["deflicker", input, "--reference", "2", "--analysis", file, "-o", out, "--quiet"])
        #expect(same.status == 0, "\(same.stderr)")
    }

    /// The same video analysed twice, by two processes, makes the same file byte for byte (so
    /// a render farm can cache it by its hash, and a changed file means a changed analysis).
    @Test func analysisFilesAreReproducible() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try DeflickerCLITests.flickering(in: dir)
        for name in ["a.analysis", "b.analysis"] {
            let run = try CLITests.run(["deflicker", input, "--guide", guide, "--analysis", dir.file(name), "--quiet"])
            #expect(run.status == 0, "\(run.stderr)")
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: dir.file("a.analysis")))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir.file("b.analysis")))
        #expect(!a.isEmpty && a == b, "\(a.count) and \(b.count) bytes, not the same")
    }

    /// With the analysis at hand, a stream on stdin is read once: no copy is kept, and the frames
    /// are those from the file.
    @Test func stdinWithAnAnalysisIsReadOnce() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try PipeTests.flickering(in: dir)
        #expect(try CLITests.run(["deflicker", input, "--guide", guide, "--analysis", dir.file("shot.analysis"), "-o", dir.file("direct.nut"), "--quiet"]).status == 0)
        let piped = try PipeTests.shell("""
            ffmpeg -v error -i \(input) -f yuv4mpegpipe - | "$LOCKSTEP" deflicker - --guide \(guide) --analysis shot.analysis -o - --format nut \
              | ffmpeg -v error -f nut -i - -c copy piped.nut
            """, in: dir)
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(!piped.stderr.contains("stdin kept"))
        let a = try SyntheticClip.readAll(dir.file("direct.nut")).frames, b = try SyntheticClip.readAll(dir.file("piped.nut")).frames
        #expect(a.count == 10 && b.count == 10)
        for (x, y) in zip(a, b) { #expect(x.image.isIdentical(to: y.image), "frame \(x.index)") }
    }

    /// An analysis used on a video it was not made from is refused in one line naming the file,
    /// and nothing is written: another video of the same size, another size, not an analysis.
    @Test func analysisOfAnotherVideoIsRefused() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try DeflickerCLITests.flickering(in: dir)
        let analysis = dir.file("shot.analysis")
        #expect(try CLITests.run(["deflicker", input, "--analysis", analysis, "--quiet"]).status == 0)
        let other = try CLITests.run(["deflicker", guide, "--analysis", analysis, "-o", dir.file("out.mkv"), "--quiet"])
        #expect(other.status == 1)
        #expect(other.stderr.hasPrefix("lockstep: error: \(analysis): is the analysis of another video: frame 0 of \(guide) has mean level ") && other.stderr.split(separator: "\n").count == 1, "\(other.stderr)")
        let small = try SyntheticClip.write((0..<10).map { SyntheticClip.movingPattern(t: $0, width: 32, height: 24) }, to: dir.file("small.mkv"), codec: "ffv1")
        let size = try CLITests.run(["deflicker", small, "--analysis", analysis, "-o", dir.file("out.mkv"), "--quiet"])
        #expect(size.status == 1 && size.stderr == "lockstep: error: \(analysis): is the analysis of a 64×48 video; the input is 32×24\n")
        let notOne = try CLITests.run(["deflicker", input, "--analysis", input, "-o", dir.file("out.mkv"), "--quiet"])
        #expect(notOne.status == 1 && notOne.stderr == "lockstep: error: \(input): is not a Lockstep deflicker analysis (lockstep deflicker --analysis writes one)\n")
        let missing = try CLITests.run(["deflicker", input])
        #expect(missing.status == 64 && missing.stderr.contains("give -o OUTPUT (or --analysis FILE alone"))
        #expect(Set(dir.contents) == ["flicker.mkv", "in.mkv", "shot.analysis", "small.mkv"])
    }
}

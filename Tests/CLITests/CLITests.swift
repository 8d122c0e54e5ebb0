import Foundation
import MediaIO
import Testing
import TestSupport

/// The `lockstep` binary as a user runs it: exit codes, one-line errors, data on stdout.
@Suite struct CLITests {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The built `lockstep` executable, next to the test bundle.
    static let binary: String = {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = url.appendingPathComponent("lockstep").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            url.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build/debug/lockstep").standardized.path
    }()

    static func run(_ arguments: [String], interruptAfter seconds: Double? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        if let seconds {
            Thread.sleep(forTimeInterval: seconds)
            process.interrupt()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    static func clip(in dir: TemporaryDirectory, frames: Int = 10) throws -> String {
        let images = (0..<frames).map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }
        return try SyntheticClip.write(images, to: dir.file("in.mkv"), codec: "ffv1")
    }

    @Test func missingInputIsOneLineNamingTheFile() throws {
        let r = try Self.run(["flicker", "/nope/missing.mp4"])
        #expect(r.status == 1)
        #expect(r.stderr == "lockstep: error: /nope/missing.mp4: no such file or directory\n")
        #expect(r.stdout.isEmpty)
    }

    @Test func flickerWritesJSONCSVAndPlot() throws {
        let dir = TemporaryDirectory()
        let input = try Self.clip(in: dir)
        let r = try Self.run(["flicker", input, "--json", "--quiet", "--csv", dir.file("s.csv"), "--plot", dir.file("p.svg")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.isEmpty)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(json?["frames"] as? Int == 10)
        #expect(try String(contentsOfFile: dir.file("s.csv"), encoding: .utf8).split(separator: "\n").count == 11)
        #expect(try String(contentsOfFile: dir.file("p.svg"), encoding: .utf8).contains("<svg"))
    }

    /// Without --quiet and not on a terminal, progress is plain lines on stderr; data stays on stdout.
    @Test func progressGoesToStderr() throws {
        let dir = TemporaryDirectory()
        let r = try Self.run(["flicker", try Self.clip(in: dir)])
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix("flicker of "))
        #expect(r.stderr.contains("flicker: 10 frames in"))
        #expect(!r.stderr.contains("\r"))
    }

    @Test func convertRefusesExistingOutputAndTheInput() throws {
        let dir = TemporaryDirectory()
        let input = try Self.clip(in: dir)
        let existing = dir.file("out.mp4")
        try "old".write(toFile: existing, atomically: true, encoding: .utf8)
        let refused = try Self.run(["convert", input, "-o", existing, "--quiet"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("\(existing): already exists"))
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "old")
        let same = try Self.run(["convert", input, "-o", input, "--quiet", "--overwrite"])
        #expect(same.status == 1)
        #expect(same.stderr.contains("the output is the input"))
        let replaced = try Self.run(["convert", input, "-o", existing, "--quiet", "--overwrite"])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(try SyntheticClip.readAll(existing).frames.count == 10)
        #expect(dir.contents == ["in.mkv", "out.mp4"])
    }

    @Test func unknownCodecIsOneLine() throws {
        let dir = TemporaryDirectory()
        let r = try Self.run(["convert", try Self.clip(in: dir), "-o", dir.file("o.mp4"), "--codec", "bogus"])
        #expect(r.status == 1)
        #expect(r.stderr.hasPrefix("lockstep: error: \(dir.file("o.mp4")): unknown video codec 'bogus'"))
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    /// Ctrl-C in the middle of a job: exit 130, and neither the output nor its temporary file remains.
    @Test func interruptRemovesPartialOutput() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("long.mp4")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=30", "-c:v", "libx264", "-preset", "ultrafast", input])
        let r = try Self.run(["convert", input, "-o", dir.file("out.mp4"), "--preset", "veryslow"], interruptAfter: 1.5)
        #expect(r.status == 130, "\(r.stderr)")
        #expect(r.stderr.contains("interrupted"))
        #expect(dir.contents == ["long.mp4"])
    }
}

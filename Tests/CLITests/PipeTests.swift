import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// Lockstep between two FFmpeg commands: "-" as INPUT reads a stream on stdin, "-o -" writes one
/// to stdout, and nothing but the stream goes to stdout.
@Suite struct PipeTests {
    /// Runs `script` in bash with pipefail, `$LOCKSTEP` set to the built binary.
    static func shell(_ script: String, in dir: TemporaryDirectory) throws -> CLITests.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "set -o pipefail; " + script]
        process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        var environment = ProcessInfo.processInfo.environment
        environment["LOCKSTEP"] = CLITests.binary
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return CLITests.collect(process, out: out, err: err)
    }

    /// A flickering clip in 4:2:0 H.264, so that FFmpeg's yuv4mpegpipe carries the very pixels
    /// Lockstep decodes from the file, and its guide.
    static func flickering(in dir: TemporaryDirectory) throws -> (input: String, guide: String) {
        let (ffv1, guide) = try DeflickerCLITests.flickering(in: dir)
        let frames = try SyntheticClip.readAll(ffv1).frames.map(\.image)
        return (try SyntheticClip.write(frames, to: dir.file("flicker.mp4"), codec: "libx264", crf: 12), guide)
    }

    /// ffmpeg → lockstep deflicker → ffmpeg gives the frames `lockstep deflicker FILE -o FILE`
    /// gives (within a level: the analysis is not bit-reproducible between runs), and the
    /// summary goes to stderr, out of the stream's way.
    @Test func deflickerBetweenTwoFFmpegCommands() throws {
        let dir = TemporaryDirectory()
        let (input, guide) = try Self.flickering(in: dir)
        let direct = try CLITests.run(["deflicker", input, "--guide", guide, "-o", dir.file("direct.nut"), "--quiet"])
        #expect(direct.status == 0, "\(direct.stderr)")
        let piped = try Self.shell("""
            ffmpeg -v error -i \(input) -f yuv4mpegpipe - \
              | "$LOCKSTEP" deflicker - --guide \(guide) -o - --format nut \
              | ffmpeg -v error -f nut -i - -c copy piped.nut
            """, in: dir)
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stderr.contains("brightness flicker"))
        let a = try SyntheticClip.readAll(dir.file("direct.nut")), b = try SyntheticClip.readAll(dir.file("piped.nut"))
        #expect(a.info.codecName == "rawvideo" && b.info.codecName == "rawvideo")
        #expect(a.frames.count == 10 && b.frames.count == 10)
        for (x, y) in zip(a.frames, b.frames) { #expect(psnr(x.image, y.image) > 50, "frame \(x.index)") }
        // And the deflicker did its work through the pipe: the gain's alternation is gone.
        let before = try SyntheticClip.readAll(input).frames
        #expect(meanStep(b.frames) < meanStep(before) / 4)
    }

    /// A stream with audio on stdin, edited: the keyframe is read from stdin's first frames and the
    /// stream kept for the second reading, so the frames and the audio all come out.
    @Test func editReadsStdinTwice() throws {
        let dir = TemporaryDirectory()
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=1", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:v", "libx264", "-c:a", "aac", "-shortest", dir.file("in.mp4")])
        try ffmpeg(["-i", dir.file("in.mp4"), "-frames:v", "1", "-vf", "negate", dir.file("key.png")])
        let r = try Self.shell("""
            ffmpeg -v error -i in.mp4 -c:v rawvideo -c:a pcm_s16le -f nut - \
              | "$LOCKSTEP" edit - --keyframe 0=key.png -o out.mkv --json
            """, in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("edit: stdin kept in the temporary directory"))
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(json?["frames"] as? Int == 25 && json?["input"] as? String == "-")
        let probe = try Self.shell("ffprobe -v error -show_entries stream=codec_type -of csv=p=0 out.mkv", in: dir)
        #expect(probe.stdout == "video\naudio\n")
        // Nothing of the spool is left beside the output (it is unlinked from the start).
        #expect(dir.contents == ["in.mp4", "key.png", "out.mkv"])
    }

    /// `--progress FILE` writes what `ffmpeg -progress` writes: key=value blocks ending in
    /// progress=continue, frame and out_time never going back within a stage, and a last block
    /// with progress=end and the whole count.
    @Test func progressIsFFmpegStyle() throws {
        let dir = TemporaryDirectory()
        let (input, _) = try Self.flickering(in: dir)
        let r = try CLITests.run(["deflicker", input, "-o", dir.file("out.mkv"), "--progress", dir.file("progress.txt"), "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let text = try String(contentsOfFile: dir.file("progress.txt"), encoding: .utf8)
        let blocks = text.split(separator: "\n").reduce(into: [[String: String]]([[:]])) { blocks, line in
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            blocks[blocks.count - 1][parts[0]] = parts.count > 1 ? parts[1] : ""
            if parts[0] == "progress" { blocks.append([:]) }
        }.filter { !$0.isEmpty }
        #expect(blocks.count >= 3)
        #expect(blocks.dropLast().allSatisfy { $0["progress"] == "continue" })
        #expect(blocks.last?["progress"] == "end" && blocks.last?["frame"] == "10" && blocks.last?["stage"] == "writing")
        #expect(blocks.first?["stage"] == "analysing")
        for key in ["frame", "fps", "out_time_us", "out_time_ms", "out_time", "speed"] {
            #expect(blocks.allSatisfy { $0[key] != nil }, "\(key)")
        }
        #expect(blocks.last?["out_time"] == "00:00:00.400000" && blocks.last?["out_time_us"] == "400000")
        for stage in ["analysing", "writing"] {
            let frames = blocks.filter { $0["stage"] == stage }.compactMap { Int($0["frame"]!) }
            #expect(frames == frames.sorted() && frames.last == 10, "\(stage)")
        }
    }

    /// stdout is one thing: the video, the progress or the report file; asked for two, the
    /// command is refused before it starts. Writing to stdout needs a format.
    @Test func stdoutIsClaimedOnce() throws {
        let dir = TemporaryDirectory()
        let input = try CLITests.clip(in: dir)
        let noFormat = try CLITests.run(["convert", input, "-o", "-"])
        #expect(noFormat.status == 64 && noFormat.stderr.contains("-o - writes to stdout and needs --format"))
        let twice = try CLITests.run(["convert", input, "-o", "-", "--format", "nut", "--progress", "-"])
        #expect(twice.status == 64 && twice.stderr.contains("cannot both write to stdout"))
        #expect(twice.stdout.isEmpty)
        let csv = try CLITests.run(["flicker", input, "--csv", "-", "--quiet"])
        #expect(csv.status == 0)
        #expect(csv.stdout.hasPrefix("frame,") && csv.stderr.contains("brightness flicker"))
        let badFormat = try CLITests.run(["convert", input, "-o", "-", "--format", "nosuch"])
        #expect(badFormat.status == 64 && badFormat.stderr == "lockstep: error: stdout: unknown format 'nosuch' (FFmpeg's muxer names, as ffmpeg -f: nut, yuv4mpegpipe, matroska, mp4, mpegts)\n")
        #expect(dir.contents == ["in.mkv"])
    }

    /// yuv4mpegpipe has no timestamps, only a frame rate in its header: the input's (25), not
    /// its time base (Matroska's 1000).
    @Test func yuv4mpegCarriesTheFrameRate() throws {
        let dir = TemporaryDirectory()
        _ = try CLITests.clip(in: dir)
        let r = try Self.shell("""
            "$LOCKSTEP" convert in.mkv -o - --format yuv4mpegpipe --quiet \
              | ffprobe -v error -count_frames -show_entries stream=r_frame_rate,nb_read_frames -of csv=p=0 -
            """, in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "25/1,10\n")
    }

    /// yuv4mpegpipe carries the input's own layout: 10-bit video (written as FFmpeg writes it
    /// with `-strict -1`; before, "write header failed: Invalid argument"), and a camera's
    /// JPEG-range 4:2:2 as 4:2:2 with its range said (before, cut to 4:2:0). FFmpeg reads both
    /// back as the same pictures, within the float RGB round trip of their small, sharp colour
    /// edges (40 and 44 dB; read as limited range, the camera's would be 28 dB).
    @Test func yuv4mpegCarriesTheInputsLayout() throws {
        let dir = TemporaryDirectory()
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=0.4", "-c:v", "ffv1", "-pix_fmt", "yuv420p10le", dir.file("deep.mkv")])
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=0.4", "-c:v", "mjpeg", "-pix_fmt", "yuvj422p", dir.file("camera.mov")])
        for (input, header) in [("deep.mkv", "C420p10"), ("camera.mov", "C422")] {
            let y4m = input + ".y4m"
            let r = try CLITests.run(["convert", dir.file(input), "-o", dir.file(y4m), "--quiet"])
            #expect(r.status == 0, "\(input): \(r.stderr)")
            let head = try String(decoding: Data(contentsOf: URL(fileURLWithPath: dir.file(y4m))).prefix(80), as: UTF8.self)
            #expect(head.contains(" \(header) "), "\(input): \(head)")
            let psnr = try Self.shell("ffmpeg -i \(input) -i \(y4m) -lavfi psnr -f null - 2>&1 | grep -o 'average:[0-9.inf]*'", in: dir)
            let value = psnr.stdout.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            #expect(value == "inf" || (Double(value) ?? 0) > 38, "\(input): \(psnr.stdout) \(psnr.stderr)")
        }
    }

    /// What is not a stream on stdin gets one line naming stdin; a reader of stdout that goes
    /// away gets one line too (not a silent death by SIGPIPE).
    @Test func badStreamsAreOneLine() throws {
        let dir = TemporaryDirectory()
        _ = try CLITests.clip(in: dir)
        // Text, not random bytes: 1 run in a few hundred of /dev/urandom holds an MP3 sync word
        // that FFmpeg probes as audio, which is then refused as "no video stream" instead.
        let garbage = try Self.shell("yes 'this is not a video' | head -c 5000 | \"$LOCKSTEP\" convert - -o out.mkv", in: dir)
        #expect(garbage.status == 1)
        #expect(garbage.stderr.hasPrefix("lockstep: error: stdin: not a stream FFmpeg can read from a pipe") && garbage.stderr.split(separator: "\n").count == 1, "\(garbage.stderr)")
        let empty = try Self.shell("\"$LOCKSTEP\" deflicker - -o out.mkv < /dev/null", in: dir)
        #expect(empty.status == 1 && empty.stderr == "lockstep: error: stdin: is empty: nothing came through the pipe\n")
        // 10 MB of raw video: more than a pipe's buffer holds after head has gone.
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4", "-c:v", "libx264", dir.file("long.mp4")])
        let closed = try Self.shell("\"$LOCKSTEP\" convert long.mp4 -o - --format nut --quiet | head -c 100 > /dev/null", in: dir)
        #expect(closed.status == 1 && closed.stderr.hasPrefix("lockstep: error: stdout: "), "\(closed.stderr)")
        #expect(dir.contents == ["in.mkv", "long.mp4"])
    }

    /// A stream on stdin is read once, so its audio cannot be copied (that reads the input
    /// again): the video goes through and a line says the audio does not (it was lost silently).
    @Test func audioOnStdinIsSaidToBeLost() throws {
        let dir = TemporaryDirectory()
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-f", "lavfi", "-i", "sine=duration=0.5",
                    "-c:v", "libx264", "-c:a", "aac", dir.file("av.mkv")])
        let r = try Self.shell("\"$LOCKSTEP\" convert - -o out.mkv --quiet < av.mkv", in: dir)
        #expect(r.status == 0 && r.stderr == "lockstep: warning: stdin: stream 1 (aac) not kept: a stream on stdin is read once, and audio and subtitles are copied by reading the input again (give the file instead)\n", "\(r.stderr)")
        #expect(try SyntheticClip.readAll(dir.file("out.mkv")).frames.count == 5)
    }

    /// The mean over frames of the mean absolute luma step between consecutive frames.
    func meanStep(_ frames: [VideoFrame]) -> Double {
        let means = frames.map { $0.image.values.reduce(0.0) { $0 + Double($1) } / Double($0.image.values.count) }
        return zip(means, means.dropFirst()).map { abs($1 - $0) }.reduce(0, +) / Double(max(1, means.count - 1))
    }
}

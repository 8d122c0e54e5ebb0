import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

/// Real videos that Debian packages ship (scripts/fetch-corpus puts them in LOCKSTEP_CORPUS):
/// phone clips, camera and lab footage, screen recordings, broadcast and DVD streams, in the
/// containers and codecs people have. FFmpeg's own tools are the oracle: every command gives the
/// frames `ffprobe -count_frames` decodes, and calls a file damaged exactly when FFmpeg reports
/// errors decoding it.
@Suite struct CorpusTests {
    static let directory = ProcessInfo.processInfo.environment["LOCKSTEP_CORPUS"]

    /// The corpus files, by name (empty when LOCKSTEP_CORPUS is not set: plain `swift test`).
    static let files: [String] = {
        guard let directory else { return [] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted()
    }()

    static func path(_ name: String) -> String { directory! + "/" + name }

    /// scripts/test sets LOCKSTEP_CORPUS after fetching: then the corpus must be there, whole.
    @Test(.enabled(if: directory != nil, "LOCKSTEP_CORPUS is not set: run scripts/test, or scripts/fetch-corpus"))
    func corpusIsThere() {
        #expect(Self.files.count >= 20, "\(Self.files.count) files in \(Self.directory!)")
    }

    /// convert, flicker, edit and deflicker on each file: FFmpeg's frame count, FFmpeg's
    /// timestamps, and exit status 3 exactly where FFmpeg reports damage.
    @Test(arguments: files)
    func everyCommandKeepsFFmpegsFrames(name: String) throws {
        let input = Self.path(name)
        let probe = try FFprobe.decode(input)
        let expectedStatus: Int32 = probe.errors.isEmpty ? 0 : 3
        let dir = TemporaryDirectory()

        let converted = dir.file("converted.mkv")
        let convert = try CLITests.run(["convert", input, "-o", converted, "--codec", "ffv1", "--quiet"])
        #expect(convert.status == expectedStatus, "\(name): \(convert.stderr) (FFmpeg: \(probe.errors))")
        let written = try FFprobe.decode(converted)
        #expect(written.timestamps.count == probe.timestamps.count, "\(name)")
        // Every frame keeps its time after the one before (Matroska keeps milliseconds; a muxer may
        // move the whole stream, for audio that starts earlier). Where FFmpeg's clock steps back
        // (clips joined end to end), the output goes on forwards instead.
        for i in 1..<min(written.timestamps.count, probe.timestamps.count) {
            let kept = written.timestamps[i] - written.timestamps[i - 1], decoded = probe.timestamps[i] - probe.timestamps[i - 1]
            if decoded > 0 { #expect(abs(kept - decoded) <= 0.0015, "\(name): frame \(i) after \(kept) s, FFmpeg's \(decoded) s") }
            else { #expect(kept > 0, "\(name): frame \(i)") }
        }

        let flicker = try CLITests.run(["flicker", input, "--json", "--quiet"])
        #expect(flicker.status == expectedStatus, "\(name): \(flicker.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(flicker.stdout.utf8)) as? [String: Any]
        #expect(report?["frames"] as? Int == probe.timestamps.count, "\(name)")

        // A keyframe from the middle, edited (warmer and brighter), propagated through the clip.
        let index = probe.timestamps.count / 2
        let key = dir.file("key.png")
        _ = try CLITests.run(["convert", input, "--frames", "\(index):\(index + 1)", "-o", key, "--quiet"])
        var image = try ImageFile.read(key).image
        image.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] = min(p[i] * 1.15 + 0.03, 1) } }
        try ImageFile.writePNG(image, to: dir.file("edited.png"))
        let edited = dir.file("edited.mp4")
        let edit = try CLITests.run(["edit", input, "--keyframe", "\(index)=\(dir.file("edited.png"))", "-o", edited,
                                     "--preset", "ultrafast", "--quiet"])
        #expect(edit.status == expectedStatus, "\(name): \(edit.stderr)")
        #expect(try FFprobe.decode(edited).timestamps.count == probe.timestamps.count, "\(name)")

        let stable = dir.file("stable.mp4")
        let deflicker = try CLITests.run(["deflicker", input, "-o", stable, "--preset", "ultrafast", "--quiet"])
        #expect(deflicker.status == expectedStatus, "\(name): \(deflicker.stderr)")
        #expect(try FFprobe.decode(stable).timestamps.count == probe.timestamps.count, "\(name)")
    }

    /// Damaged copies of real files (cut short, bytes flipped, the start cut off): no crash, no
    /// hang, one line on stderr, and either an output of what decodes (status 0 or 3) or a
    /// refusal (status 1) that leaves nothing. FFmpeg's reported damage is never passed off as clean.
    @Test(arguments: ["node-opencv__motion.mov", "kodi-pvr-mythtv__channel_unavailable.ts",
                      "python3-mecavideo__balle1-vp9.avi", "golang-github-gabriel-vasile-mimetype-dev__webm.webm",
                      "kphotoalbum__movie.avi", "python3-mecavideo__Effet_force_magnetique.ogv"].filter { files.contains($0) })
    func damagedCopiesGiveWhatDecodes(name: String) throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: Self.path(name)))
        let dir = TemporaryDirectory()
        var random = SeededRandom(UInt64(original.count))
        var flipped = original
        for _ in 0..<24 {  // in the middle half, away from the headers
            let at = original.count / 4 + Int(random.next() % UInt64(original.count / 2))
            flipped[at] ^= UInt8(1 << (random.next() % 8))
        }
        let copies: [(String, Data)] = [
            ("cut", original.prefix(original.count * 6 / 10)),
            ("flipped", flipped),
            ("headless", original.dropFirst(min(4096, original.count / 10))),
        ]
        for (kind, bytes) in copies {
            let input = dir.file("\(kind)-\(name)")
            try bytes.write(to: URL(fileURLWithPath: input))
            let output = dir.file("\(kind).mkv")
            let r = try CLITests.run(["convert", input, "-o", output, "--codec", "ffv1", "--quiet"], killAfter: 300)
            let lines = r.stderr.split(separator: "\n")
            #expect([0, 1, 3].contains(r.status), "\(kind) \(name): status \(r.status): \(r.stderr)")
            #expect(lines.count <= 1, "\(kind) \(name): \(r.stderr)")
            let exists = FileManager.default.fileExists(atPath: output)
            if r.status == 1 {
                #expect(r.stderr.hasPrefix("lockstep: error: \(input): "), "\(kind) \(name): \(r.stderr)")
                #expect(!exists)
                continue
            }
            #expect(exists, "\(kind) \(name): status \(r.status) but no output")
            let probe = try FFprobe.decode(input)
            if !probe.errors.isEmpty { #expect(r.status == 3, "\(kind) \(name): FFmpeg reports \(probe.errors)") }
            if r.status == 3 { #expect(r.stderr.hasPrefix("lockstep: warning: \(input): damaged video: ")) }
            let written = try FFprobe.decode(output).timestamps.count
            #expect(written > 0 && written <= probe.timestamps.count + 1, "\(kind) \(name): \(written) of \(probe.timestamps.count)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: Self.path(name))) == original)
    }

    /// A phone clip with rotation metadata is read upright, with its frames and timestamps.
    @Test(.enabled(if: files.contains("node-opencv__motion.mov")))
    func rotatedPhoneClipIsReadUpright() throws {
        let dir = TemporaryDirectory()
        let rotated = dir.file("rotated.mov")
        try ffmpeg(["-i", Self.path("node-opencv__motion.mov"), "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated])
        let source = try Media.openSource(rotated)
        #expect(source.info.width == 320 && source.info.height == 568)
        let output = dir.file("upright.mp4")
        let r = try CLITests.run(["convert", rotated, "--frames", "0:5", "-o", output, "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let upright = try Media.openSource(output)
        #expect(upright.info.width == 320 && upright.info.height == 568)
    }

    /// A picture that stops, edited: a screen recording's portrait crop (`movie-hello.mp4`, its
    /// frame 10, then its frame 50 held for twelve frames, as a recording that pauses), the
    /// keyframe its frame 10 stylised by FFmpeg's `edgedetect`. Once the held picture has been
    /// followed for a few frames, the output stands still: the last frames change by under
    /// 0.01 levels on average. (Before, the correspondence's weights were the last frame's match
    /// quality alone, and the field alternated between two answers for as long as the picture
    /// held: 0.14 levels from every frame to the next.)
    @Test(.enabled(if: directory != nil, "LOCKSTEP_CORPUS is not set: run scripts/test, or scripts/fetch-corpus"))
    func aPictureThatStopsGivesAnEditThatStops() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("frames"), withIntermediateDirectories: false)
        try ffmpeg(["-i", Self.path("forensics-samples-files__movie-hello.mp4"), "-vf", "select='eq(n\\,10)+eq(n\\,50)',crop=405:720:437:0,scale=360:640",
                    "-vsync", "0", dir.file("picture%d.png")])
        try FileManager.default.copyItem(atPath: dir.file("picture1.png"), toPath: dir.file("frames/00000.png"))
        for t in 1...12 {
            try FileManager.default.copyItem(atPath: dir.file("picture2.png"), toPath: dir.file(String(format: "frames/%05d.png", t)))
        }
        try ffmpeg(["-i", dir.file("picture1.png"), "-vf", "edgedetect=mode=colormix:high=0.2:low=0.05,eq=saturation=1.5", dir.file("key.png")])
        let r = try CLITests.run(["edit", dir.file("frames"), "--keyframe", "0=" + dir.file("key.png"), "-o", dir.file("out.mkv"), "--codec", "ffv1", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try SyntheticClip.readAll(dir.file("out.mkv")).frames.map(\.image)
        #expect(out.count == 13)
        guard out.count == 13 else { return }
        for t in 10...12 {
            let change = zip(out[t].values, out[t - 1].values).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) } / Double(out[t].count) * 255
            #expect(change < 0.01, "frame \(t) changed by \(change) levels on average")
        }
    }
}

/// FFmpeg's own view of a file: the timestamps of the frames `ffprobe` decodes from its first
/// video stream, and the errors it reports while doing so.
enum FFprobe {
    /// The container's tags and those of the first video stream, and whether that stream is
    /// marked the default one, by ffprobe.
    static func tags(_ path: String) throws -> (format: [String: String], video: [String: String], isDefault: Bool) {
        let json = try probe(["-select_streams", "v:0", "-show_entries", "format_tags:stream_tags:stream_disposition=default"], path)
        let format = (json?["format"] as? [String: Any])?["tags"] as? [String: String] ?? [:]
        let stream = (json?["streams"] as? [[String: Any]])?.first
        let video = stream?["tags"] as? [String: String] ?? [:]
        return (format, video, (stream?["disposition"] as? [String: Any])?["default"] as? Int == 1)
    }

    /// Every chapter's start, end (seconds) and title, and every stream's type, by ffprobe.
    static func chaptersAndStreams(_ path: String) throws -> (chapters: [String], streams: [String]) {
        let json = try probe(["-show_chapters", "-show_entries", "stream=codec_type"], path)
        let chapters = (json?["chapters"] as? [[String: Any]] ?? []).map { chapter in
            "\(chapter["start_time"] ?? "")–\(chapter["end_time"] ?? ""): \((chapter["tags"] as? [String: String])?["title"] ?? "")"
        }
        let streams = (json?["streams"] as? [[String: Any]] ?? []).map { $0["codec_type"] as? String ?? "" }
        return (chapters, streams)
    }

    /// ffprobe's JSON answer for `path` to `options`.
    static func probe(_ options: [String], _ path: String) throws -> [String: Any]? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ffprobe", "-v", "error"] + options + ["-of", "json", path]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return try JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    struct Decoded {
        var timestamps: [Double]
        var errors: String
    }

    static func decode(_ path: String) throws -> Decoded {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                             "frame=best_effort_timestamp_time", "-of", "csv=p=0", path]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // stderr is drained on another thread so that neither pipe fills while the other is read.
        let errors = DrainedPipe(err)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // One line per frame ("0.033008," in program streams); a frame without a time reads N/A.
        let stamps = text.split(separator: "\n").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ", ")) }
            .filter { !$0.isEmpty }.map { Double($0) ?? .nan }
        return Decoded(timestamps: stamps, errors: String(decoding: errors.data(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

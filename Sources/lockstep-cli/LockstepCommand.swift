import ArgumentParser
import CFFmpeg
import Foundation
import Lockstep
import MediaIO

@main
struct LockstepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockstep",
        abstract: "Temporally consistent video editing, and flicker measurement.",
        discussion: """
        Exit status: 0 done; 1 error, nothing written; 2 or 64 usage error; 3 done from a damaged \
        input (FFmpeg reported errors decoding it; what decoded was used, see --strict); 128 + \
        the signal's number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP) interrupted, partial output \
        removed.
        """,
        version: LockstepVersion.string,
        subcommands: [Edit.self, Deflicker.self, Flicker.self, Convert.self, Concat.self, Equivariance.self])

    /// Errors in the input or output get one line naming the file and the problem; usage
    /// errors get ArgumentParser's message. Interrupted and crashed jobs remove their partial output.
    static func main() {
        TemporaryFiles.shared.removeOnCrash()
        TemporaryFiles.shared.removeOnSignals { signal in
            "lockstep: interrupted (\(signal == SIGINT ? "Ctrl-C" : signalName(signal))); partial output removed"
        }
        // A reader of stdout that goes away (| head) gives a write error, reported as one; not
        // a silent death by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        // Blocks of 1 MB and more are mapped from the kernel and given back when freed. By
        // default malloc raises that threshold to the largest block freed so far (up to 32 MB),
        // so a video's frame-sized arrays came from its heaps and, freed, stayed there: about
        // 100 MB more resident for a 1080p edit, for no speed.
        mallopt(M_MMAP_THRESHOLD, 1 << 20)
        // And each worker's heap keeps 1 MB free at its top. By default a free that leaves more
        // than 128 KB there gives it back (madvise), and the next row's scratch faults it in
        // again: a stylised 720p edit made 430 such calls a frame, each flushing both cores'
        // address translations (7% of its time; 44.2 → 40.0 s, the same peak memory).
        mallopt(M_TOP_PAD, 1 << 20)
        do {
            var command = try parseAsRoot()
            try command.run()
            MachineProgress.shared?.end()
            reportDamage()
        } catch let error as MediaError {
            fail(error.description, status: error.kind == .badOption ? ExitStatus.usage : ExitStatus.failure)
        } catch is Cancelled {
            fail("cancelled")
        } catch let error as FFmpegError {
            fail("FFmpeg: \(error.description)")
        } catch {
            TemporaryFiles.shared.waitIfInterrupted()
            exit(withError: error)
        }
    }

    /// The job's output is complete; a damaged input is said on stderr, one line per file, and
    /// the exit status says it (3), so a script can tell a clean run from one that lost frames.
    static func reportDamage() {
        guard let damaged = DamageOptions.jobLog?.entries, !damaged.isEmpty else { return }
        for damage in damaged { say(.warning, "\(damage); what decoded was used") }
        Foundation.exit(ExitStatus.damagedInput)
    }

    static func fail(_ message: String, status: Int32 = ExitStatus.failure) -> Never {
        // An error that the interruption caused (its output removed under the writer) is not said.
        TemporaryFiles.shared.waitIfInterrupted()
        TemporaryFiles.shared.removeAll()
        say(.error, message)
        Foundation.exit(status)
    }
}

enum Diagnostic: String { case error, warning }

/// A signal's name as `kill -l` gives it ("SIGHUP").
func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGTERM: "SIGTERM",
                                  SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2", SIGALRM: "SIGALRM",
                                  SIGVTALRM: "SIGVTALRM", SIGXCPU: "SIGXCPU"]
    return names[signal] ?? "signal \(signal)"
}

/// One line on stderr, "lockstep: error: …": a line break in it (a file name may hold one) is
/// written as \n, so that every message stays one line.
func say(_ kind: Diagnostic, _ message: String) {
    let line = message.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
    FileHandle.standardError.write(Data("lockstep: \(kind.rawValue): \(line)\n".utf8))
}

/// The exit statuses, as the README's table lists them.
enum ExitStatus {
    static let failure: Int32 = 1
    /// A wrong option or value (ArgumentParser's own usage errors exit 64 too).
    static let usage: Int32 = 64
    /// The output was written, from an input FFmpeg reported damaged (see `--strict`).
    static let damagedInput: Int32 = 3
}

/// How a command treats a damaged input.
struct DamageOptions: ParsableArguments {
    @Flag(help: "Refuse a damaged input: stop at FFmpeg's first decoding error, write nothing, exit 1. By default what decodes is used, the damage is reported on stderr and the exit status is 3.")
    var strict = false

    /// The one log of this process's job: every reader of the command adds to it.
    nonisolated(unsafe) static var jobLog: DamageLog?

    var log: DamageLog {
        if let log = Self.jobLog { return log }
        let log = DamageLog(policy: strict ? .refuse : .report)
        Self.jobLog = log
        return log
    }
}

/// Options of every command that writes a video or a directory of frames.
struct OutputOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: ArgumentHelp(OutputOptions.outputHelp, valueName: "OUTPUT"))
    var output: String

    @OptionGroup var writing: WritingOptions

    static let outputHelp = "Output: a video file (container from the extension), a directory of PNG frames, or - for stdout (with --format)."

    var encoder: EncoderOptions { writing.encoder }
    var frameRate: Rational { writing.frameRate }
    var overwrite: Bool { writing.overwrite }

    func validate() throws { try writing.validate(output: output) }
}

/// How a command writes video: every output option but OUTPUT itself (which `lockstep deflicker
/// --analysis` may leave out).
struct WritingOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Video encoder (libx264, libx265, libvpx-vp9, ffv1 for lossless, mpeg4, ...). Default: H.264 where the container allows it.", valueName: "NAME"))
    var codec: String?

    @Option(help: ArgumentHelp("Constant rate factor: lower is better quality (libx264 default 18).", valueName: "N"))
    var crf: Int?

    @Option(help: ArgumentHelp("Encoder speed preset, e.g. ultrafast ... veryslow (libx264 default medium).", valueName: "NAME"))
    var preset: String?

    @Option(help: ArgumentHelp("Container by FFmpeg's muxer name, as ffmpeg -f: nut or yuv4mpegpipe (raw video, for a pipe), matroska, mp4, mpegts. Default: from OUTPUT's extension; needed for -o -.", valueName: "NAME"))
    var format: String?

    @Option(help: ArgumentHelp("Frame rate given to a directory of frames (12.5, or 29.97 for 30000/1001).", valueName: "FPS"))
    var fps: Double = 25

    @Flag(help: "Replace OUTPUT if it exists.")
    var overwrite = false

    var encoder: EncoderOptions { EncoderOptions(codec: codec, crf: crf, preset: preset, format: format) }

    /// `fps` as a rational: NTSC's N·1000/1001 for the rates written 29.97, 23.976, 59.94; else
    /// exact with the smallest denominator up to 1000 (12.5 is 25/2); else to a thousandth.
    var frameRate: Rational {
        if fps.rounded() != fps {
            let ntsc = (fps * 1.001).rounded()
            if ntsc >= 1, abs(ntsc / 1.001 - fps) < 0.005 { return Rational(Int32(ntsc * 1000), 1001) }
        }
        for denominator in 1...1000 {
            let numerator = fps * Double(denominator)
            if abs(numerator - numerator.rounded()) < 1e-6 * max(1, numerator) { return Rational(Int32(numerator.rounded()), Int32(denominator)) }
        }
        return Rational(Int32((fps * 1000).rounded()), 1000)
    }

    func validate() throws {
        guard fps >= 0.01 && fps <= 1000 else { throw ValidationError("--fps must be between 0.01 and 1000") }
        if let crf, crf < 0 || crf > 63 { throw ValidationError("--crf must be between 0 and 63") }
        // x264's and x265's presets are known by name (other encoders' are checked when opened).
        if let preset, codec == nil || codec == "libx264" || codec == "libx265", !Self.x26xPresets.contains(preset) {
            throw ValidationError("--preset \(preset) is not one of x264's and x265's: \(Self.x26xPresets.joined(separator: ", "))")
        }
    }

    static let x26xPresets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"]

    /// Writing to stdout needs a container named, and stdout to itself.
    func validate(output: String) throws {
        guard StandardStream.isStandard(output) else { return }
        guard format != nil else {
            throw ValidationError("-o - writes to stdout and needs --format: nut or yuv4mpegpipe (raw video, for a pipe into ffmpeg), matroska, mpegts or mp4")
        }
        try Report.claimStdout(for: "-o -")
    }
}

/// Which frames of the input to process.
struct SegmentOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only frames START to END-1 (from 0, in decode order); either may be left out, as in 100: or :50. Segments cut at the same indices concatenate into the whole.", valueName: "START:END"))
    var frames: String?

    var range: FrameRange? { frames.flatMap(FrameRange.init) }

    func validate() throws {
        if let frames, FrameRange(frames) == nil {
            throw ValidationError("--frames takes START:END with 0 ≤ START < END, e.g. 0:100 or 100:")
        }
    }
}

/// Options of every command that reports.
struct ReportOptions: ParsableArguments {
    @Flag(help: "No progress on stderr (what the output leaves out of the input is still said).")
    var quiet = false

    @Flag(help: "Print the result as one JSON object on stdout (on stderr when stdout carries the video).")
    var json = false

    @Option(help: ArgumentHelp("Progress for programs, as ffmpeg -progress writes it: blocks of key=value lines (frame, fps, out_time, speed, progress=continue|end) every half second, to FILE or - (stdout).", valueName: "FILE|-"))
    var progress: String?

    func validate() throws {
        if let progress, StandardStream.isStandard(progress) { try Report.claimStdout(for: "--progress -") }
    }

    /// Refuses a `--progress` FILE that is one of `files` (what the command reads and writes):
    /// the progress file is truncated, which would destroy it. Called before anything is opened.
    func checkProgress(sparing files: [String?]) throws {
        guard let progress, !StandardStream.isStandard(progress) else { return }
        for case let file? in files where !StandardStream.isStandard(file) && OutputTarget.isSameFile(file, progress) {
            throw MediaError(.sameAsInput, path: progress, "is \(file), which this command reads or writes; choose another progress file")
        }
    }
}

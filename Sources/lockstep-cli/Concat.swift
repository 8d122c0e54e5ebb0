import ArgumentParser
import Foundation
import MediaIO

struct Concat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the parts of a split job into one video, without re-encoding.",
        discussion: """
        For jobs split with --frames (on one machine or many): run each part with the same \
        command and options, then join them in order. The parts keep the whole input's \
        timestamps and their own span of its audio, so the joined video is the whole run, frame \
        for frame. Every stream is copied as it is; parts encoded differently are refused, and so \
        is a gap between two parts (a part missing). Files made separately, each starting at \
        zero, are joined one after the other.
        """)

    @Argument(help: ArgumentHelp("The parts, in order.", valueName: "PART"))
    var parts: [String]

    @Option(name: .shortAndLong, help: ArgumentHelp("The joined video (container from the extension), or - for stdout (with --format).", valueName: "OUTPUT"))
    var output: String

    @Option(help: ArgumentHelp("Container by FFmpeg's muxer name, as ffmpeg -f (default: from OUTPUT's extension; needed for -o -).", valueName: "NAME"))
    var format: String?

    @Flag(help: "Join parts even where one starts later than the previous one ends (by default that means a part is missing, and is refused).")
    var allowGaps = false

    @Flag(help: "Replace OUTPUT if it exists.")
    var overwrite = false

    @Flag(help: "No progress on stderr.")
    var quiet = false

    @Flag(help: "Print the result as one JSON object on stdout (on stderr with -o -).")
    var json = false

    func validate() throws {
        guard !parts.isEmpty else { throw ValidationError("give the parts to join, in order") }
        if parts.contains(where: StandardStream.isStandard) { throw ValidationError("the parts must be files") }
        if StandardStream.isStandard(output) {
            guard format != nil else { throw ValidationError("-o - writes to stdout and needs --format, e.g. --format matroska") }
            try Report.claimStdout(for: "-o -")
        }
    }

    func run() throws {
        let target = try OutputTarget(path: output, inputs: parts, overwrite: overwrite)
        let start = Date()
        let summary = try Concatenation.join(parts, into: target, format: format, allowGaps: allowGaps) { part in
            if !quiet { FileHandle.standardError.write(Data("concat: part \(part + 1)/\(parts.count): \(parts[part])\n".utf8)) }
        }
        if json {
            try Report.printJSON(["output": output, "parts": parts, "frames": summary.frames, "duration": summary.seconds,
                                  "seconds": Date().timeIntervalSince(start)])
        } else if !quiet {
            FileHandle.standardError.write(Data(String(format: "concat: %d frames, %.2f s of video, from %d parts\n", summary.frames, summary.seconds, parts.count).utf8))
        }
    }
}

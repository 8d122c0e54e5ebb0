import ArgumentParser
import Foundation
import Lockstep
import MediaIO

/// Where a command's results go: stdout, unless stdout already carries the video (`-o -`), the
/// machine-readable progress (`--progress -`) or a report file (`--csv -`); then on stderr, so
/// that what a pipe carries is never mixed with text.
enum Report {
    /// What has claimed stdout, if anything.
    nonisolated(unsafe) private(set) static var stdoutOwner: String?

    /// Gives stdout to `owner` ("-o -", "--progress -"); only one of them can have it.
    static func claimStdout(for owner: String) throws {
        if let stdoutOwner, stdoutOwner != owner {
            throw ValidationError("\(stdoutOwner) and \(owner) cannot both write to stdout: send one of them to a file")
        }
        stdoutOwner = owner
    }

    static func print(_ text: String, terminator: String = "\n") {
        if stdoutOwner == nil {
            Swift.print(text, terminator: terminator)
        } else {
            FileHandle.standardError.write(Data((text + terminator).utf8))
        }
    }

    /// One JSON object, keys sorted, on one line.
    static func printJSON(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// `--progress FILE|-`: progress as `ffmpeg -progress` writes it, for the programs that wrap
/// command-line tools. A block of key=value lines every half second and at the end of each
/// stage: frame, fps, out_time_us, out_time_ms, out_time, speed; Lockstep's own `stage`
/// (for two-pass commands) and `total_frames` (when the input declares it); then
/// `progress=continue`, or `progress=end` once the job is complete.
final class MachineProgress {
    /// The job's one progress stream, once a command has opened it.
    nonisolated(unsafe) static var shared: MachineProgress?

    private let handle: FileHandle
    private var lastWrite = Date.distantPast
    private var lastBlock = ""

    /// Opens FILE (created or truncated, as FFmpeg does; a FIFO works too) or stdout for "-".
    static func open(_ destination: String) throws -> MachineProgress {
        if let shared { return shared }
        let handle: FileHandle
        if StandardStream.isStandard(destination) {
            handle = .standardOutput
        } else {
            let fd = Glibc.open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw MediaError(.unwritable, path: destination, "cannot write progress here: \(String(cString: strerror(errno)))")
            }
            handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        }
        let progress = MachineProgress(handle: handle)
        shared = progress
        return progress
    }

    private init(handle: FileHandle) { self.handle = handle }

    /// A block for `progress`, at most every half second unless `force`.
    func update(_ progress: JobProgress, stage: String?, force: Bool = false) {
        let now = Date()
        guard force || now.timeIntervalSince(lastWrite) >= 0.5 else { return }
        lastWrite = now
        let micros = Int64((progress.mediaSeconds * 1_000_000).rounded())
        let whole = micros / 1_000_000
        var block = "frame=\(progress.framesDone)\n"
        block += String(format: "fps=%.2f\n", progress.framesPerSecond)
        block += "out_time_us=\(micros)\nout_time_ms=\(micros)\n"
        block += String(format: "out_time=%02lld:%02lld:%02lld.%06lld\n", whole / 3600, whole / 60 % 60, whole % 60, micros % 1_000_000)
        block += progress.elapsedSeconds > 0 ? String(format: "speed=%.3gx\n", progress.mediaSeconds / progress.elapsedSeconds) : "speed=N/A\n"
        if let stage { block += "stage=\(stage)\n" }
        if let total = progress.framesTotal { block += "total_frames=\(total)\n" }
        lastBlock = block
        write(block + "progress=continue\n")
    }

    /// The closing block: the last figures again, with progress=end.
    func end() {
        write(lastBlock + "progress=end\n")
    }

    private func write(_ text: String) {
        // A reader that went away must not stop the job: progress is a courtesy.
        try? handle.write(contentsOf: Data(text.utf8))
    }
}

/// Standard input for a command that reads its input more than once: kept in the temporary
/// directory first (see `StandardInputSpool`), with a line on stderr saying so. Any other
/// input is returned as it is.
func readableTwice(_ input: String, label: String, quiet: Bool) throws -> String {
    guard StandardStream.isStandard(input) else { return input }
    var bytes: Int64 = 0
    let path = try StandardInputSpool.spool { bytes = $0 }
    if !quiet {
        FileHandle.standardError.write(Data("\(label): stdin kept in the temporary directory for a second reading (\(StandardInputSpool.megabytes(bytes)))\n".utf8))
    }
    return path
}

/// The smallest frame that `edit` and `deflicker` take, each side in pixels: their analysis
/// halves the frame twice (a pooled pyramid, the keyframe's patches), and a side under 4 has
/// nothing left at the second halving.
let minimumFrameSide = 4

/// Refuses, with a one-line error naming `path`, a video whose frames are smaller than
/// `minimumFrameSide` on either side.
func requireFrameSize(_ info: StreamInfo, of path: String, label: String) throws {
    guard info.width < minimumFrameSide || info.height < minimumFrameSide else { return }
    throw MediaError(.unsupported, path: StandardStream.shownName(path),
                     "is \(info.width)×\(info.height): \(label) needs frames of at least \(minimumFrameSide)×\(minimumFrameSide) pixels")
}

/// A line on stderr for each part of the input that will not be in the output: its alpha
/// channel, streams the output's container cannot hold. Said even with --quiet, which silences
/// progress, not the news that something is lost.
func warnAboutWhatIsLost(_ info: StreamInfo, of path: String, writing sink: FrameSink?) {
    let name = StandardStream.shownName(path)
    var lines: [String] = []
    if info.hasAlpha, sink != nil { lines.append("its alpha channel is not kept: Lockstep works on colour, and the output is opaque") }
    if info.isInterlaced, sink != nil {
        lines.append("it is interlaced, and the output is not: Lockstep works on whole frames (deinterlace it first for the best result, e.g. ffmpeg -vf bwdif)")
    }
    if let writer = sink as? VideoWriter { lines += writer.warnings }
    if !info.unreadStreams.isEmpty, sink != nil {
        lines.append("\(info.unreadStreams.joined(separator: ", ")) not kept: a stream on stdin is read once, and audio and subtitles are copied by reading the input again (give the file instead)")
    }
    for line in lines { say(.warning, "\(name): \(line)") }
}

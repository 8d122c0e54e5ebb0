import Foundation
import Lockstep

/// JobProgress on stderr, in the manner of swift-tools-support-core's ProgressAnimation: a live bar
/// redrawn in place on a terminal, plain periodic lines otherwise, nothing when quiet; and, with
/// `--progress`, FFmpeg-style key=value blocks for programs (`MachineProgress`).
final class ProgressView {
    private let label: String
    private let quiet: Bool
    private let stage: String?
    private let machine: MachineProgress?
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastDraw = Date.distantPast
    private var drewLive = false

    /// `stage` names the pass in the machine-readable progress of a command with more than one.
    init(label: String, report: ReportOptions, stage: String? = nil) throws {
        self.label = label
        self.quiet = report.quiet
        self.stage = stage
        machine = try report.progress.map { try MachineProgress.open($0) }
    }

    /// The handler given to the library; it never cancels.
    func update(_ progress: JobProgress) -> Bool {
        machine?.update(progress, stage: stage)
        guard !quiet else { return true }
        let now = Date()
        let interval = isTerminal ? 0.1 : 2.0
        guard now.timeIntervalSince(lastDraw) >= interval else { return true }
        lastDraw = now
        if isTerminal {
            write("\r\u{1B}[K" + line(progress, bar: true))
            drewLive = true
        } else {
            write(line(progress, bar: false) + "\n")
        }
        return true
    }

    /// The closing line, after the last frame.
    func finish(_ progress: JobProgress) {
        machine?.update(progress, stage: stage, force: true)
        guard !quiet else { return }
        if drewLive { write("\r\u{1B}[K") }
        write("\(label): \(progress.framesDone) frames in \(String(format: "%.1f", progress.elapsedSeconds)) s (\(String(format: "%.1f", progress.framesPerSecond)) fps)\n")
    }

    /// Runs a streaming job with this view as its progress handler: the closing line on success,
    /// the live bar cleared before an error is printed.
    func track(_ job: (_ update: (JobProgress) -> Bool) throws -> JobProgress) throws -> JobProgress {
        do {
            let done = try job(update)
            finish(done)
            return done
        } catch {
            clear()
            throw error
        }
    }

    /// Clears a live bar before an error message.
    func clear() {
        if drewLive { write("\r\u{1B}[K") }
    }

    private func line(_ p: JobProgress, bar: Bool) -> String {
        var text = "\(label): frame \(p.framesDone)"
        if let total = p.framesTotal { text += "/\(total)" }
        text += String(format: "  %.1f fps", p.framesPerSecond)
        if let eta = p.etaSeconds { text += "  ETA \(Int(eta) / 60):" + String(format: "%02d", Int(eta) % 60) }
        if bar, let total = p.framesTotal, total > 0 {
            let width = 24, filled = min(width, width * p.framesDone / total)
            text += "  [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]"
        }
        return text
    }

    private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }
}

import ArgumentParser
import Foundation
import Lockstep
import MediaIO

struct Flicker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how much a video flickers.",
        discussion: """
        Prints a table on stdout; --json, --csv and --plot give the numbers, the per-frame series and \
        a chart. Brightness flicker and the temporal difference run at decoding speed; E_warp (the \
        warping error along the motion) needs the motion between frames and is measured only with \
        --ewarp or --guide.
        """)

    @Argument(help: ArgumentHelp("A video file, a directory of frames, or - for a stream on stdin (yuv4mpegpipe, NUT).", valueName: "INPUT"))
    var input: String

    @Option(help: ArgumentHelp("The unprocessed original: E_warp is measured, with the motion found on it (implies --ewarp), and the level drift from it.", valueName: "ORIGINAL"))
    var guide: String?

    @Flag(help: "Also measure E_warp, with the motion found on INPUT itself (several times slower than the rest).")
    var ewarp = false

    @Option(help: ArgumentHelp("Write the per-frame series as CSV (- for stdout; the table then goes to stderr).", valueName: "FILE"))
    var csv: String?

    @Option(help: ArgumentHelp("Write a chart of the series (SVG).", valueName: "FILE"))
    var plot: String?

    @Flag(help: "Replace the --csv or --plot file if it exists.")
    var overwrite = false

    @OptionGroup var segment: SegmentOptions
    @OptionGroup var damage: DamageOptions
    @OptionGroup var report: ReportOptions

    func validate() throws {
        if let plot, URL(fileURLWithPath: plot).pathExtension.lowercased() != "svg" {
            throw ValidationError("--plot writes SVG: give it a .svg file name")
        }
        if let guide, StandardStream.isStandard(guide) { throw ValidationError("--guide must be a file; only INPUT may be - (stdin)") }
        if let csv, StandardStream.isStandard(csv) { try Report.claimStdout(for: "--csv -") }
        if let csv, let plot, URL(fileURLWithPath: csv).standardizedFileURL == URL(fileURLWithPath: plot).standardizedFileURL {
            throw ValidationError("--csv and --plot name the same file, \(csv): give each its own")
        }
    }

    func run() throws {
        try report.checkProgress(sparing: [input, guide, csv, plot])
        // Check the report files before the long part, so a bad path fails at once.
        let inputs = [input] + (guide.map { [$0] } ?? [])
        let csvTarget = try csv.map { try OutputTarget(path: $0, inputs: inputs, overwrite: overwrite) }
        let plotTarget = try plot.map { try OutputTarget(path: $0, inputs: inputs, overwrite: overwrite) }
        let source = try Media.openSource(input, frames: segment.range, damageLog: damage.log)
        let analyzer = FlickerAnalyzer()
        let warping = ewarp || guide != nil ? WarpingErrorMeter() : nil
        var drift = guide.map { _ in LevelDrift() }
        let guideSource = try guide.map { try Media.openSource($0, frames: segment.range, damageLog: damage.log) }
        if let guideSource, guideSource.info.width != source.info.width || guideSource.info.height != source.info.height {
            throw MediaError(.sizeMismatch, path: guide!, "is \(guideSource.info.width)×\(guideSource.info.height), but \(StandardStream.shownName(input)) is \(source.info.width)×\(source.info.height)")
        }
        let timeBase = source.info.timeBase.value
        let last = try ProgressView(label: "flicker", report: report).track { update in
            try StreamingProcessor.run(source: source, sink: nil, process: { frame in
                analyzer.add(frame.image, seconds: Double(frame.pts) * timeBase, index: frame.index)
                guard let warping else { return }
                var guideImage = frame.image
                if let guideSource {
                    guard let g = try guideSource.next() else {
                        throw MediaError(.invalidArgument, path: guide!, "has fewer frames than \(StandardStream.shownName(input)) (it ends before frame \(frame.index))")
                    }
                    guideImage = g.image
                    drift?.add(frame.image, original: g.image)
                }
                warping.add(guide: guideImage, output: frame.image)
            }, progress: update)
        }
        if let guideSource, try guideSource.next() != nil {
            throw MediaError(.invalidArgument, path: guide!, "has more frames than \(StandardStream.shownName(input)) (\(last.framesDone)): the guide must have the same frames")
        }
        let result = FlickerReport(input: input, analyzer: analyzer, warping: warping, drift: drift)
        if let csvTarget { try csvTarget.write(Data(result.csv.utf8)) }
        if let plotTarget { try plotTarget.write(Data(result.svg.utf8)) }
        Report.print(report.json ? result.json : result.table, terminator: "")
    }
}


import ArgumentParser
import Foundation
import Lockstep
import MediaIO

struct Flicker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how much a video flickers.",
        discussion: "Prints a table on stdout; --json, --csv and --plot give the numbers, the per-frame series and a chart.")

    @Argument(help: ArgumentHelp("A video file or a directory of frames.", valueName: "INPUT"))
    var input: String

    @Option(help: ArgumentHelp("Write the per-frame series as CSV.", valueName: "FILE"))
    var csv: String?

    @Option(help: ArgumentHelp("Write a chart of the series (SVG).", valueName: "FILE"))
    var plot: String?

    @Flag(help: "Replace the --csv or --plot file if it exists.")
    var overwrite = false

    @OptionGroup var segment: SegmentOptions
    @OptionGroup var report: ReportOptions

    func validate() throws {
        if let plot, URL(fileURLWithPath: plot).pathExtension.lowercased() != "svg" {
            throw ValidationError("--plot writes SVG: give it a .svg file name")
        }
    }

    func run() throws {
        // Check the report files before the long part, so a bad path fails at once.
        let csvTarget = try csv.map { try OutputTarget(path: $0, inputs: [input], overwrite: overwrite) }
        let plotTarget = try plot.map { try OutputTarget(path: $0, inputs: [input], overwrite: overwrite) }
        let source = try Media.openSource(input, frames: segment.range)
        let progress = ProgressView(label: "flicker", quiet: report.quiet)
        let analyzer = FlickerAnalyzer()
        let timeBase = source.info.timeBase.value
        let last: JobProgress
        do {
            last = try StreamingProcessor.run(source: source, sink: nil, process: { frame in
                analyzer.add(frame.image, seconds: Double(frame.pts) * timeBase)
            }, progress: progress.update)
        } catch {
            progress.clear()
            throw error
        }
        progress.finish(last)
        let result = FlickerReport(input: input, analyzer: analyzer)
        if let csvTarget { try csvTarget.write(Data(result.csv.utf8)) }
        if let plotTarget { try plotTarget.write(Data(result.svg.utf8)) }
        print(report.json ? result.json : result.table, terminator: "")
    }
}


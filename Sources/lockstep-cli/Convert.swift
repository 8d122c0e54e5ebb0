import ArgumentParser
import Foundation
import Lockstep
import MediaIO

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pass a video through Lockstep's reader and writer unchanged.",
        discussion: """
        Video to frames, frames to video, or video to video with another codec. Timestamps, \
        audio and subtitles are kept. This is the pipeline every edit runs, with the identity \
        as the edit: its speed is the floor of every other command.
        """)

    @Argument(help: ArgumentHelp("A video file, a directory of frames, or - for a stream on stdin (yuv4mpegpipe, NUT).", valueName: "INPUT"))
    var input: String

    @OptionGroup var output: OutputOptions
    @OptionGroup var segment: SegmentOptions
    @OptionGroup var damage: DamageOptions
    @OptionGroup var report: ReportOptions

    func run() throws {
        try report.checkProgress(sparing: [input, output.output])
        let source = try Media.openSource(input, frameRate: output.frameRate, frames: segment.range, damageLog: damage.log)
        let sink = try Media.openSink(output.output, info: source.info, inputs: [input],
                                      overwrite: output.overwrite, options: output.encoder)
        warnAboutWhatIsLost(source.info, of: input, writing: sink)
        let last = try ProgressView(label: "convert", report: report).track { update in
            try StreamingProcessor.run(source: source, sink: sink, process: { _ in },
                                       progress: update)
        }
        if report.json {
            try Report.printJSON([
                "input": input, "output": output.output, "frames": last.framesDone,
                "seconds": last.elapsedSeconds, "fps": last.framesPerSecond,
                "encoder": (sink as? VideoWriter)?.encoderName ?? "png",
            ])
        }
    }
}

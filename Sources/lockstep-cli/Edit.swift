import ArgumentParser
import Foundation
import Lockstep
import MediaIO
import Tensor

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Propagate an edit made on one or more keyframes through the whole video.",
        discussion: """
        Export a frame (lockstep convert INPUT --frames 40:41 -o key40.png), edit it in any tool, \
        and give it back with --keyframe 40=key40-edited.png. The edit follows the motion; what is \
        new in the picture gets the edit's colour change.
        """)

    @Argument(help: ArgumentHelp("A video file, a directory of frames, or - for a stream on stdin (kept in TMPDIR: the keyframes are read first).", valueName: "INPUT"))
    var input: String

    @Option(name: .customLong("keyframe"), help: ArgumentHelp("Frame INDEX (from 0) as edited in IMAGE. Repeat for several keyframes: a frame between two takes both, the nearer weighing more.", valueName: "INDEX=IMAGE"))
    var keyframes: [String] = []

    @Option(help: ArgumentHelp("Scale of the edit: 1 as made, 0 none, negative the opposite edit.", valueName: "S"))
    var strength: Float = 1

    @OptionGroup var output: OutputOptions
    @OptionGroup var segment: SegmentOptions
    @OptionGroup var damage: DamageOptions
    @OptionGroup var report: ReportOptions

    /// (index, image path) pairs from the --keyframe values.
    var parsedKeyframes: [(index: Int, image: String)] {
        keyframes.compactMap { text in
            guard let equals = text.firstIndex(of: "="), let index = Int(text[..<equals]), index >= 0 else { return nil }
            return (index, String(text[text.index(after: equals)...]))
        }
    }

    func validate() throws {
        guard !keyframes.isEmpty else { throw ValidationError("give at least one --keyframe INDEX=IMAGE") }
        if parsedKeyframes.count != keyframes.count {
            throw ValidationError("--keyframe takes INDEX=IMAGE, with INDEX a frame number from 0, e.g. --keyframe 0=edited.png")
        }
        if Set(parsedKeyframes.map(\.index)).count != keyframes.count { throw ValidationError("each keyframe index may be given once") }
        guard strength.isFinite, abs(strength) <= 10 else { throw ValidationError("--strength must be between -10 and 10") }
        if parsedKeyframes.contains(where: { StandardStream.isStandard($0.image) }) { throw ValidationError("a keyframe image must be a file; only INPUT may be - (stdin)") }
    }

    func run() throws {
        // The references first: read the keyframes' frames from the input, and the edits.
        let input = try readableTwice(self.input, label: "edit", quiet: report.quiet)
        let originals = try Media.readFrames(input, indices: Set(parsedKeyframes.map(\.index)), damageLog: damage.log)
        var references: [Keyframe] = []
        for (index, path) in parsedKeyframes {
            let original = originals[index]!.image
            let edited = try ImageFile.read(path).image
            guard edited.width == original.width, edited.height == original.height else {
                throw MediaError(.sizeMismatch, path: path, "is \(edited.width)×\(edited.height), but frame \(index) of \(StandardStream.shownName(input)) is \(original.width)×\(original.height)")
            }
            references.append(Keyframe(index: index, original: original, edited: edited))
        }
        let propagator = EditPropagator(keyframes: references, encoder: AliasFreeCodec(), strength: strength)

        let source = try Media.openSource(input, frameRate: output.frameRate, frames: segment.range, damageLog: damage.log)
        let sink = try Media.openSink(output.output, info: source.info, inputs: [input] + parsedKeyframes.map(\.image),
                                      overwrite: output.overwrite, options: output.encoder)
        let done = try ProgressView(label: "edit", report: report).track { update in
            try StreamingProcessor.run(source: source, sink: sink, process: { frame in
                frame.image = propagator.apply(to: frame.image, index: frame.index)
            }, progress: update)
        }
        if report.json {
            try Report.printJSON([
                "input": self.input, "output": output.output, "frames": done.framesDone, "seconds": done.elapsedSeconds,
                "fps": done.framesPerSecond, "keyframes": parsedKeyframes.map(\.index), "strength": strength,
            ])
        }
    }
}

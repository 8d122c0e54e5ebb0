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

    @Option(name: .customLong("keyframe"), parsing: .unconditionalSingleValue, help: ArgumentHelp("Frame INDEX (from 0) as edited in IMAGE (an image with transparency is laid over the frame). Repeat for several keyframes: a frame between two takes both, the nearer weighing more.", valueName: "INDEX=IMAGE"))
    var keyframes: [String] = []

    @Option(name: .customLong("keyframes"), help: ArgumentHelp("A directory of edited frames, each named by its frame index alone (00012.png, key12.png; hidden files are skipped): a --keyframe for each. Two are held in memory at a time, however many there are.", valueName: "DIR"))
    var keyframeDirectory: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Scale of the edit: 1 as made, 0 none, negative the opposite edit.", valueName: "S"))
    var strength: Float = 1

    @OptionGroup var output: OutputOptions
    @OptionGroup var segment: SegmentOptions
    @OptionGroup var damage: DamageOptions
    @OptionGroup var report: ReportOptions

    /// (index, image path) pairs from the --keyframe values. (The value is taken whatever it
    /// looks like, so that -1=key.png is refused as an index, not as an unknown option.)
    var parsedKeyframes: [(index: Int, image: String)] {
        keyframes.compactMap { text in
            guard let equals = text.firstIndex(of: "="), let index = Int(text[..<equals]), index >= 0,
                  text.index(after: equals) < text.endIndex else { return nil }
            return (index, String(text[text.index(after: equals)...]))
        }
    }

    func validate() throws {
        guard !keyframes.isEmpty || keyframeDirectory != nil else { throw ValidationError("give at least one --keyframe INDEX=IMAGE, or --keyframes DIR") }
        if parsedKeyframes.count != keyframes.count {
            throw ValidationError("--keyframe takes INDEX=IMAGE, with INDEX a frame number from 0, e.g. --keyframe 0=edited.png")
        }
        guard strength.isFinite, abs(strength) <= 10 else { throw ValidationError("--strength must be between -10 and 10") }
        if parsedKeyframes.contains(where: { StandardStream.isStandard($0.image) }) { throw ValidationError("a keyframe image must be a file; only INPUT may be - (stdin)") }
    }

    /// The keyframe image at `path`; one with an alpha channel (a layer exported from an image
    /// editor) is laid over the frame it edits, so that where it is transparent the frame is
    /// unedited (its colours there, often black, are no paint).
    static func edited(_ path: String, over original: PlanarImage) throws -> (image: PlanarImage, bits: Int) {
        let (image, bits, alpha) = try ImageFile.readWithAlpha(path)
        guard let alpha, image.width == original.width, image.height == original.height else { return (image, bits) }
        var out = image
        let n = image.planeSize
        out.withUnsafeMutableBufferPointer { o in original.withUnsafeBufferPointer { f in alpha.withUnsafeBufferPointer { a in
            for c in 0..<3 { for i in 0..<n { o[c * n + i] = a[i] * o[c * n + i] + (1 - a[i]) * f[c * n + i] } }
        } } }
        return (out, bits)
    }

    /// Every keyframe, from --keyframe and --keyframes, in frame order; an index given twice is refused.
    func allKeyframes() throws -> [(index: Int, image: String)] {
        var all = parsedKeyframes
        if let directory = keyframeDirectory { all += try Self.keyframes(in: directory) }
        all.sort { $0.index < $1.index }
        for (a, b) in zip(all, all.dropFirst()) where a.index == b.index {
            throw MediaError(.invalidArgument, path: b.image, "is a keyframe for frame \(b.index), and so is \(a.image): give each frame one")
        }
        return all
    }

    /// The images in `directory`, each with the frame index its name ends in. Hidden files (an
    /// editor's temporary copy, macOS's `._00012.png` beside each file on a shared drive) are
    /// not keyframes. A name with another number before its index (`key10_v2.png`) is refused:
    /// which of its numbers is the frame is a guess (before, the last was taken, silently).
    static func keyframes(in directory: String) throws -> [(index: Int, image: String)] {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory)
        guard exists, isDirectory.boolValue else {
            throw MediaError(.missing, path: directory, exists ? "is not a directory of keyframes" : "no such directory")
        }
        // Image files (not directories, whatever their names), as a frame directory's are.
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted(by: naturalOrder).filter { name in
            var isFolder: ObjCBool = false
            return !name.hasPrefix(".") && ImageFile.extensions.contains(URL(fileURLWithPath: name).pathExtension.lowercased())
                && FileManager.default.fileExists(atPath: (directory as NSString).appendingPathComponent(name), isDirectory: &isFolder) && !isFolder.boolValue
        }
        guard !names.isEmpty else { throw MediaError(.invalidArgument, path: directory, "holds no keyframe images (\(ImageFile.extensionList))") }
        return try names.map { name in
            let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
            let stem = URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
            let digits = String(stem.reversed().prefix { $0.isASCII && $0.isNumber }.reversed())
            guard let index = Int(digits) else {
                throw MediaError(.invalidArgument, path: path, digits.isEmpty
                    ? "does not end in a frame index: name each keyframe by its frame, e.g. 00012.png"
                    : "names frame \(digits), past any video's frames")
            }
            let before = stem.dropLast(digits.count)
            if before.contains(where: { $0.isASCII && $0.isNumber }) {
                throw MediaError(.invalidArgument, path: path, "has another number before its frame index \(index): name each keyframe by its frame alone, e.g. \(String(format: "%05d", index)).png")
            }
            return (index, path)
        }
    }

    func run() throws {
        let keys = try allKeyframes()
        try report.checkProgress(sparing: [self.input, output.output] + keys.map(\.image))
        let input = try readableTwice(self.input, label: "edit", quiet: report.quiet)
        let source = try Media.openSource(input, frameRate: output.frameRate, frames: segment.range, damageLog: damage.log)
        try requireFrameSize(source.info, of: input, label: "edit")
        // Every keyframe image is read (one at a time) before the stream starts, and must have
        // the video's size. A keyframe past the end of the video is found when the stream nears
        // it, as the output is still unfinished: the job stops, and nothing is left.
        let size = (width: source.info.width, height: source.info.height)
        for (index, path) in keys {
            let edited = try ImageFile.read(path).image
            guard edited.width == size.width, edited.height == size.height else {
                // An image model's output often comes at its own size: say how to make it fit.
                let scaled = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent + "-\(size.width)x\(size.height).png"
                throw MediaError(.sizeMismatch, path: path, "is \(edited.width)×\(edited.height), but frame \(index) of \(StandardStream.shownName(input)) is \(size.width)×\(size.height); scale it first (e.g. ffmpeg -i \(path) -vf scale=\(size.width):\(size.height) \(scaled))")
            }
        }
        // The keyframes' own frames come from a second reader, which runs ahead of the stream to
        // each keyframe as the frames come to need it.
        let originals = ForwardReader(try Media.openSource(input, damageLog: damage.log), last: keys.map(\.index).max()!)
        let sources = keys.map { key in
            KeyframeSource(index: key.index) {
                let original = try originals.frame(key.index, editedIn: key.image)
                let edited = try Self.edited(key.image, over: original)
                return Keyframe(index: key.index, original: original, edited: edited.image, bits: edited.bits)
            }
        }
        let propagator = EditPropagator(sources: sources, width: size.width, height: size.height, encoder: AliasFreeCodec(), strength: strength)
        let sink = try Media.openSink(output.output, info: source.info, inputs: [input] + keys.map(\.image),
                                      overwrite: output.overwrite, options: output.encoder)
        warnAboutWhatIsLost(source.info, of: input, writing: sink)
        // A job that starts mid-span follows the span's earlier frames first, so that its frames
        // equal the whole run's (each match starts from the frames before). They are
        // decoded anyway, to count the frames before the job's.
        let history = EditPropagator.history(before: segment.range?.start ?? 0)
        // The first frame's keyframes are set up before any frame is decoded (`prepare`).
        try propagator.prepare(for: history.first ?? segment.range?.start ?? 0)
        if !history.isEmpty, let ranged = source as? FrameRangeSource {
            ranged.observe(history) { frame in try propagator.follow(frame.image, index: frame.index) }
        }
        let done = try ProgressView(label: "edit", report: report).track { update in
            try StreamingProcessor.run(source: source, sink: sink, process: { frame in
                var image = frame.takeImage()
                try propagator.apply(to: &image, index: frame.index)
                frame.image = image
            }, progress: update)
        }
        if report.json {
            try Report.printJSON([
                "input": self.input, "output": output.output, "frames": done.framesDone, "seconds": done.elapsedSeconds,
                "fps": done.framesPerSecond, "keyframes": keys.map(\.index), "strength": strength,
            ])
        }
    }
}

/// A video read forwards to the frames asked for, in increasing order. Once the last frame that
/// will be asked for is read, the reader is closed: its decoder and buffers are not held while
/// the rest of the video streams.
final class ForwardReader {
    private var source: FrameSource?
    private let path: String
    private let last: Int

    init(_ source: FrameSource, last: Int) {
        self.source = source
        path = source.path
        self.last = last
    }

    private var count = 0

    /// Frame `index` (at most `last`), which must come after every frame asked for before;
    /// `image`, the keyframe made of it, which an error names.
    func frame(_ index: Int, editedIn image: String) throws -> PlanarImage {
        precondition(index <= last, "only frames up to the last announced are asked for")
        while let source, let frame = try source.next() {
            count = frame.index + 1
            if frame.index == index {
                if index == last { self.source = nil }
                return frame.image
            }
            precondition(frame.index < index, "frames are asked for in increasing order")
        }
        throw MediaError(.invalidArgument, path: image, "is the keyframe for frame \(index), but \(StandardStream.shownName(path)) has \(count) frames (0 to \(count - 1))")
    }
}

import ArgumentParser
import Foundation
import Lockstep
import MediaIO
import Tensor

struct Deflicker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a flickering video stable: per-frame processed video, timelapse, old film.",
        discussion: """
        With --guide, motion is found on the unprocessed original; without, on the input itself. \
        Each frame keeps its own detail; its tone and colour, globally and locally, are brought to \
        the appearance the whole shot agrees on. Two passes over the input: the first learns each \
        frame's flicker, the second writes the output. A new reference is taken at scene cuts. \
        With --analysis FILE the first pass is kept in FILE and read from there the next time: \
        the parts of a split job (--frames) share one analysis.
        """)

    @Argument(help: ArgumentHelp("The flickering video, a directory of frames, or - for a stream on stdin (kept in TMPDIR for the two passes).", valueName: "INPUT"))
    var input: String

    @Option(help: ArgumentHelp("The unprocessed original, with the same frames (scaled if its size differs).", valueName: "ORIGINAL"))
    var guide: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("The reference frame: auto (the first frame, and the first after each cut) or a frame INDEX for the whole video.", valueName: "INDEX|auto"))
    var reference: String = "auto"

    @Option(name: .shortAndLong, help: ArgumentHelp(OutputOptions.outputHelp + " Leave it out with --analysis FILE to make the analysis only.", valueName: "OUTPUT"))
    var output: String?

    @Option(help: ArgumentHelp("The first pass's analysis of INPUT: read from FILE when it exists (and the first pass skipped), otherwise made and written there. Parts of a split job share one; a stream on stdin is then read once.", valueName: "FILE"))
    var analysis: String?

    @OptionGroup var writing: WritingOptions
    @OptionGroup var segment: SegmentOptions
    @OptionGroup var damage: DamageOptions
    @OptionGroup var report: ReportOptions

    var fixedReference: Int? { Int(reference) }

    func validate() throws {
        if reference != "auto", fixedReference.map({ $0 < 0 }) ?? true {
            throw ValidationError("--reference takes auto or a frame index from 0, e.g. --reference 12")
        }
        if let guide, StandardStream.isStandard(guide) { throw ValidationError("--guide must be a file; only INPUT may be - (stdin)") }
        if let analysis, StandardStream.isStandard(analysis) { throw ValidationError("--analysis must be a file") }
        guard let output else {
            guard analysis != nil else { throw ValidationError("give -o OUTPUT (or --analysis FILE alone, to make the analysis only)") }
            return
        }
        try writing.validate(output: output)
    }

    func run() throws {
        try report.checkProgress(sparing: [self.input, output, guide, analysis])
        // With the analysis at hand the input is read once, so a stream on stdin needs no copy.
        let reusing = analysis.map { FileManager.default.fileExists(atPath: $0) } ?? false
        let input = reusing ? self.input : try readableTwice(self.input, label: "deflicker", quiet: report.quiet)
        let plan: DeflickerPlan
        var outputSource: FrameSource?, sink: FrameSink?
        if reusing {
            let source = try Media.openSource(input, frameRate: writing.frameRate, frames: segment.range, damageLog: damage.log)
            plan = try DeflickerPlan.read(from: analysis!, width: source.info.width, height: source.info.height)
            try checkMadeAlike(plan)
            // Read whole, the input must have the analysed video's frames: more are refused at the
            // first one past them (by the plan), fewer when the input ends.
            outputSource = segment.range == nil
                ? CountedSource(source, expected: plan.frameCount, analysis: analysis!, input: StandardStream.shownName(input))
                : source
            sink = try output.map { _ in try openSink(for: input, info: source.info) }
            warnAboutWhatIsLost(source.info, of: input, writing: sink)
        } else {
            // Everything that can be refused is checked before the first pass.
            let analysisTarget = try analysis.map { try OutputTarget(path: $0, inputs: [input] + (guide.map { [$0] } ?? []), overwrite: false) }
            outputSource = try output.map { _ in try Media.openSource(input, frameRate: writing.frameRate, frames: segment.range, damageLog: damage.log) }
            sink = try outputSource.map { try openSink(for: input, info: $0.info) }
            if let outputSource { warnAboutWhatIsLost(outputSource.info, of: input, writing: sink) }
            do {
                plan = try firstPass(input)
                do {
                    try analysisTarget.map { try plan.write(to: $0) }
                } catch let error as MediaError where error.kind == .outputExists {
                    // Another part of the split job made the analysis meanwhile: this part goes
                    // on with its own, the same where the options are.
                    say(.warning, "\(analysis!): was made by another job meanwhile; this job used its own analysis and left that one")
                }
            } catch {
                sink?.abort()
                throw error
            }
            // The first pass's buffers are free now; give the pages back before the encoder takes
            // its own, so that the second pass does not sit on a heap fragmented by the first.
            _ = malloc_trim(0)
        }
        guard let outputSource, let sink else {
            if report.json {
                try Report.printJSON(["analysis": analysis!, "written": !reusing, "frames": plan.frameCount,
                                      "references": plan.scenes.map { ["start": $0.start, "reference": $0.reference, "reason": $0.reason.rawValue] as [String: Any] },
                                      "cuts": plan.cuts])
                return
            }
            let cuts = plan.cuts.isEmpty ? "none" : plan.cuts.map(String.init).joined(separator: ", ")
            Report.print("analysis of \(plan.frameCount) frames \(reusing ? "already in" : "written to") \(analysis!) (\(plan.scenes.count) reference\(plan.scenes.count == 1 ? "" : "s"); scene cuts: \(cuts))")
            return
        }
        try secondPass(input, source: outputSource, sink: sink, plan: plan)
    }

    /// A reused analysis answers the options it was made with; a run that asks for others is
    /// refused (it used to get the analysis's answer, without a word).
    private func checkMadeAlike(_ plan: DeflickerPlan) throws {
        if plan.guided != (guide != nil) {
            throw MediaError(.invalidArgument, path: analysis!, plan.guided
                ? "was made with --guide; give the guide again, or make the analysis again without it"
                : "was made without --guide; leave --guide out, or make the analysis again with it")
        }
        if plan.fixedReference != fixedReference {
            let made = plan.fixedReference.map { "--reference \($0)" } ?? "--reference auto"
            throw MediaError(.invalidArgument, path: analysis!, "was made with \(made); give the same, or make the analysis again")
        }
    }

    private func openSink(for input: String, info: StreamInfo) throws -> FrameSink {
        try Media.openSink(output!, info: info, inputs: [input] + (guide.map { [$0] } ?? []) + (analysis.map { [$0] } ?? []),
                           overwrite: writing.overwrite, options: writing.encoder)
    }

    /// Pass 1: every frame's flicker relative to its reference.
    private func firstPass(_ input: String) throws -> DeflickerPlan {
        let analysisSource = try Media.openSource(input, frameRate: writing.frameRate, damageLog: damage.log)
        let info = analysisSource.info
        try requireFrameSize(info, of: input, label: "deflicker")
        let guideSource = try guide.map { try Media.openSource($0, frameRate: writing.frameRate, damageLog: damage.log) }
        var fixed: (index: Int, input: PlanarImage, guide: PlanarImage?)?
        if let index = fixedReference {
            let frame = try Media.readFrames(input, indices: [index], damageLog: damage.log)[index]!.image
            let guideFrame = try guide.map { try scaled(Media.readFrames($0, indices: [index], damageLog: damage.log)[index]!.image, to: info) }
            fixed = (index, frame, guideFrame)
        }
        let analysis = try DeflickerAnalysis(width: info.width, height: info.height, fixed: fixed)
        let paired = guideSource.map { GuidedSource(input: analysisSource, guide: $0, guidePath: guide!, size: info, eager: false) }
        // The analysis reads the frames at its own size: made straight from the decoder's
        // pictures where the frame pools whole (`VideoFrame.pooledImage`), without the full-size
        // floats (a fifth of the first pass at 1080p was making and shrinking them).
        let analysed = AnalysingSource(source: paired ?? analysisSource) { frame in
            guard analysis.poolsWhole else {
                return analysis.analyse(input: frame.image, guide: paired?.guide(for: frame.index)?())
            }
            return analysis.analyse(pooledInput: frame.pooledImage(analysis.scale),
                                    guide: paired?.pooledGuide(for: frame.index, factor: analysis.scale))
        }
        // Three threads: the reader decodes and analyses each frame alone, this thread matches
        // it to its reference, and the fitting sink fits its appearance in order
        // (`DeflickerAnalysis.match`, `fit`); each frame's own part of the fit (`appraise`) runs
        // on Dispatch's workers as soon as it is matched, several frames at once. Three frames
        // between stages, not two: a reference frame has no fit, and the fits of the frames
        // after it catch up (the 720p bench clip's pass: 8.3–8.6 s with two, 8.2–8.3 with three;
        // six gave no more, and held 40 MB more).
        let fitting = FittingSink(analysis, path: input)
        _ = try ProgressView(label: "deflicker: analysing", report: report, stage: "analysing").track { update in
            try StreamingProcessor.run(source: analysed, sink: fitting, inFlight: 3, process: { frame in
                fitting.appraise(analysis.match(analysed.take(frame.index)), index: frame.index)
            }, progress: update)
        }
        if let guideSource, try guideSource.next() != nil {
            throw MediaError(.invalidArgument, path: guide!, "has more frames than \(StandardStream.shownName(input)) (\(analysis.frameCount)): the guide must have the same frames")
        }
        if let index = fixedReference, index >= analysis.frameCount {
            throw MediaError(.invalidArgument, path: StandardStream.shownName(input), "frame \(index) is outside the video, which has \(analysis.frameCount) frames")
        }
        return try analysis.finish()
    }

    /// Pass 2: each frame brought to its scene's consensus and written; with a guide, the values
    /// the input lost to clipping are taken from it (`DeflickerPlan.apply`). For --json, E_warp
    /// before and after is measured on the guide's motion, at up to 640 pixels wide, and the
    /// level drift from the guide.
    private func secondPass(_ input: String, source: FrameSource, sink: FrameSink, plan: DeflickerPlan) throws {
        var before = BrightnessFlicker(), after = BrightnessFlicker()
        var driftBefore = LevelDrift(), driftAfter = LevelDrift()
        let warping = report.json ? WarpingErrorMeter(maximumWidth: 640) : nil
        let info = source.info
        let paired = try guide.map {
            // Converted on this thread, not the reader's: each frame waiting between the two would
            // hold its guide at full size in floats (25 MB at 1080p) instead of as decoded.
            GuidedSource(input: source, guide: try Media.openSource($0, frameRate: writing.frameRate, frames: segment.range, damageLog: damage.log),
                         guidePath: $0, size: info, eager: false)
        }
        let done: JobProgress
        do {
            // A part of a split job first reads the frames before it that the whole run's frames
            // there depend on (`DeflickerPlan.recalled`), so that it makes the whole run's frames.
            if let guide, let start = segment.range?.start {
                let earlier = try plan.recalled(before: start)
                if !earlier.isEmpty {
                    let frames = FrameRange(start: earlier.lowerBound, end: earlier.upperBound)
                    let before = GuidedSource(input: try Media.openSource(input, frameRate: writing.frameRate, frames: frames, damageLog: damage.log),
                                              guide: try Media.openSource(guide, frameRate: writing.frameRate, frames: frames, damageLog: damage.log),
                                              guidePath: guide, size: info)
                    while let frame = try before.next() { _ = try plan.apply(to: frame.image, index: frame.index, guide: before.guide(for: frame.index)) }
                }
            }
            done = try ProgressView(label: "deflicker: writing", report: report, stage: "writing").track { update in
                try StreamingProcessor.run(source: paired ?? source, sink: sink, process: { frame in
                    let original = frame.image
                    let guideOfFrame = paired?.guide(for: frame.index)
                    frame.image = try plan.apply(to: original, index: frame.index, guide: guideOfFrame)
                    // The frame's mean luma, as the plan has it (`apply` checked it is this frame's).
                    before.add(luma: Double(plan.lumas[frame.index]))
                    after.add(frame.image)
                    let guideFrame = report.json ? guideOfFrame?() : nil
                    if let warping { warping.add(guide: guideFrame ?? original, outputs: [original, frame.image]) }
                    if let guideFrame {
                        driftBefore.add(original, original: guideFrame)
                        driftAfter.add(frame.image, original: guideFrame)
                    }
                }, progress: update)
            }
        } catch let other as DeflickerPlan.OtherFrame {
            throw mismatch(other, input: input)
        }

        if report.json {
            var object: [String: Any] = [
                "input": self.input, "output": output!, "frames": done.framesDone, "seconds": done.elapsedSeconds,
                "fps": done.framesPerSecond, "cuts": plan.cuts,
                "references": plan.scenes.map { ["start": $0.start, "reference": $0.reference, "reason": $0.reason.rawValue] as [String: Any] },
                "brightness_flicker": ["before": before.value, "after": after.value],
            ]
            if let guide {
                object["guide"] = guide
                object["level_drift"] = ["before": driftBefore.value, "after": driftAfter.value]
            }
            if let analysis { object["analysis"] = analysis }
            if let warping {
                object["ewarp"] = ["before": warping.ewarp(output: 0), "after": warping.ewarp(output: 1)]
                object["ewarp_first"] = ["before": warping.ewarpFirst(output: 0), "after": warping.ewarpFirst(output: 1)]
            }
            try Report.printJSON(object)
        } else {
            Report.print(String(format: "brightness flicker %.3f → %.3f (mean |ΔY|, 8-bit)", before.value, after.value))
            Report.print("scene cuts: " + (plan.cuts.isEmpty ? "none" : plan.cuts.map(String.init).joined(separator: ", ")))
        }
    }

    /// A frame the plan was not made for, said as the user sees it: an analysis file of another
    /// video, or an input that did not decode the same twice.
    private func mismatch(_ other: DeflickerPlan.OtherFrame, input: String) -> MediaError {
        let shown = StandardStream.shownName(input)
        guard let analysed = other.analysed, let given = other.given else {
            return MediaError(.invalidArgument, path: analysis ?? shown, analysis != nil
                ? "is the analysis of a video of \(other.frameCount) frames; \(shown) has more"
                : "has more frames the second time it is read (\(other.frameCount) the first)")
        }
        let levels = String(format: "mean level %.2f where the analysis saw %.2f", given, analysed)
        return MediaError(.invalidArgument, path: analysis ?? shown, analysis != nil
            ? "is the analysis of another video: frame \(other.index) of \(shown) has \(levels)"
            : "decodes differently the second time it is read: frame \(other.index) has \(levels)")
    }

    func scaled(_ image: PlanarImage, to info: StreamInfo) -> PlanarImage {
        image.resized(height: info.height, width: info.width)
    }
}

/// The input's frames, with the guide's decoded alongside on the same (reader) thread:
/// `guide(for:)` hands each frame's guide to the processing thread, scaled to the input's size.
/// `eager`: converted and scaled on the reader thread (every guide frame is used); otherwise on
/// the processing thread, for the frames whose guide is asked for.
final class GuidedSource: FrameSource {
    let input: FrameSource
    let guide: FrameSource
    var reachedInputEnd: Bool { input.reachedInputEnd }
    let guidePath: String
    let size: StreamInfo
    let eager: Bool
    private let guides = HandOver<VideoFrame>()

    init(input: FrameSource, guide: FrameSource, guidePath: String, size: StreamInfo, eager: Bool = true) {
        self.input = input
        self.guide = guide
        self.guidePath = guidePath
        self.size = size
        self.eager = eager
    }

    var info: StreamInfo { input.info }
    var path: String { input.path }

    func next() throws -> VideoFrame? {
        guard let frame = try input.next() else { return nil }
        guard let guideFrame = try guide.next() else {
            throw MediaError(.invalidArgument, path: guidePath, "has fewer frames than \(input.path) (it ends before frame \(frame.index))")
        }
        var handed = guideFrame
        if eager { handed.image = guideFrame.image.resized(height: size.height, width: size.width) }
        guides.put(handed, for: frame.index)
        return frame
    }

    /// The guide of frame `index` (each is handed out once), converted and scaled when called.
    func guide(for index: Int) -> (() -> PlanarImage)? {
        guard let frame = guides.take(index) else { return nil }
        let (height, width) = (size.height, size.width)
        return { frame.image.resized(height: height, width: width) }
    }

    /// The guide of frame `index`, scaled to the input's size and `factor` × `factor`
    /// average-pooled; straight from the decoder's picture where the guide has the input's size.
    func pooledGuide(for index: Int, factor: Int) -> PlanarImage? {
        guard let frame = guides.take(index) else { return nil }
        if guide.info.width == size.width && guide.info.height == size.height { return frame.pooledImage(factor) }
        return frame.image.resized(height: size.height, width: size.width).averagePooled(factor)
    }
}

/// Frames with the part of their analysis that needs no other frame done on the reader thread,
/// while the processing thread matches the previous frame; `take` hands each one over.
final class AnalysingSource: FrameSource {
    let source: FrameSource
    var reachedInputEnd: Bool { source.reachedInputEnd }
    let analyse: (VideoFrame) -> DeflickerAnalysis.AnalysedFrame
    private let analysed = HandOver<DeflickerAnalysis.AnalysedFrame>()

    init(source: FrameSource, analyse: @escaping (VideoFrame) -> DeflickerAnalysis.AnalysedFrame) {
        self.source = source
        self.analyse = analyse
    }

    var info: StreamInfo { source.info }
    var path: String { source.path }

    /// The next frame, analysed; its picture is let go (the analysis has what it needs of it),
    /// so that frames waiting between the stages are small.
    func next() throws -> VideoFrame? {
        guard var frame = try source.next() else { return nil }
        analysed.put(analyse(frame), for: frame.index)
        frame.image = PlanarImage(channels: 3, height: 1, width: 1, values: [0, 0, 0])
        return frame
    }

    func take(_ index: Int) -> DeflickerAnalysis.AnalysedFrame { analysed.take(index)! }
}

/// The first pass's last stage: each frame's appearance fitted (`DeflickerAnalysis.fit`), in
/// frame order, on the thread a writer would have, while the next frame is matched. What the fit
/// finds of each frame by itself (`DeflickerAnalysis.appraise`, most of its work) is found as
/// soon as the frame is matched, on Dispatch's workers, several frames at once: fitted one
/// after another on this thread alone, it was the pass's slowest stage.
final class FittingSink: FrameSink {
    let analysis: DeflickerAnalysis
    let path: String
    private let appraised = HandOver<DeflickerAnalysis.AppraisedFrame>()

    init(_ analysis: DeflickerAnalysis, path: String) {
        self.analysis = analysis
        self.path = path
    }

    /// Starts appraising frame `index`, matched; `write` waits for it.
    func appraise(_ matched: DeflickerAnalysis.MatchedFrame, index: Int) {
        DispatchQueue.global().async { [analysis, appraised] in appraised.put(analysis.appraise(matched), for: index) }
    }

    func write(_ frame: VideoFrame) throws { try analysis.fit(appraised.waitAndTake(frame.index)) }
    func finish() throws {}
    func abort() {}
    func inputEnded() {}
}

/// Values made on one stage's thread for a frame (the reader's, the matcher's, a worker's
/// appraisal), handed to the next stage's once each.
final class HandOver<Value>: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [Int: Value] = [:]

    func put(_ value: Value, for index: Int) {
        condition.lock(); pending[index] = value; condition.broadcast(); condition.unlock()
    }

    func take(_ index: Int) -> Value? {
        condition.lock(); defer { condition.unlock() }
        return pending.removeValue(forKey: index)
    }

    /// `take`, waiting until the value is put.
    func waitAndTake(_ index: Int) -> Value {
        condition.lock(); defer { condition.unlock() }
        while pending[index] == nil { condition.wait() }
        return pending.removeValue(forKey: index)!
    }
}

/// glibc's malloc_trim (malloc.h, which Glibc's module does not export): returns free heap pages
/// to the system.
@_silgen_name("malloc_trim") private func malloc_trim(_ pad: Int) -> Int32

/// A video read against an analysis of all of it: it must end where the analysis does.
final class CountedSource: FrameSource {
    private let source: FrameSource
    private let expected: Int, analysis: String, input: String
    private var count = 0

    init(_ source: FrameSource, expected: Int, analysis: String, input: String) {
        self.source = source
        self.expected = expected
        self.analysis = analysis
        self.input = input
    }

    var info: StreamInfo { source.info }
    var path: String { source.path }
    var reachedInputEnd: Bool { source.reachedInputEnd }

    func next() throws -> VideoFrame? {
        guard let frame = try source.next() else {
            if count < expected {
                throw MediaError(.invalidArgument, path: analysis, "is the analysis of a video of \(expected) frames; \(input) has \(count)")
            }
            return nil
        }
        count += 1
        return frame
    }
}

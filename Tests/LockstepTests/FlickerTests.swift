import Foundation
import Lockstep
import MediaIO
import Tensor
import Testing
import TestSupport

@Suite struct FlickerTests {
    func analyze(_ frames: [PlanarImage]) -> FlickerAnalyzer.Summary {
        let analyzer = FlickerAnalyzer()
        for (t, frame) in frames.enumerated() { analyzer.add(frame, seconds: Double(t) / 25) }
        return analyzer.summary
    }

    @Test func staticClipHasZeroFlicker() {
        let frame = SyntheticClip.movingPattern(t: 3, width: 96, height: 64)
        let summary = analyze(Array(repeating: frame, count: 10))
        #expect(summary.frames == 10)
        #expect(summary.brightnessFlicker == 0)
        #expect(summary.flickerIndex == 0)
        #expect(summary.percentFlicker == 0)
        #expect(summary.temporalDifference.count == FlickerAnalyzer.scales.count)
        for (_, value) in summary.temporalDifference { #expect(value == 0) }
    }

    /// Grey 100 and grey 110 alternating: |ΔY| is 10 every frame; the series' mean is 105, so
    /// the flicker index is 2.5/105 and the percent flicker 100·10/210. Flat frames differ by 10
    /// at every pooling scale.
    @Test func alternatingBrightnessGivesTheKnownAmount() {
        let frames = (0..<20).map { SyntheticClip.flat(level: $0 % 2 == 0 ? 100 : 110, width: 64, height: 64) }
        let s = analyze(frames)
        #expect(abs(s.brightnessFlicker - 10) < 1e-3)
        #expect(abs(s.maxBrightnessChange - 10) < 1e-3)
        #expect(abs(s.meanLuma - 105) < 1e-3)
        #expect(abs(s.flickerIndex - 2.5 / 105) < 1e-5)
        #expect(abs(s.percentFlicker - 100 * 10 / 210) < 1e-3)
        for scale in FlickerAnalyzer.scales { #expect(abs(s.temporalDifference[scale]! - 10) < 1e-3, "scale \(scale)") }
    }

    /// A textured clip whose gain alternates keeps the change at coarse scales, while pure motion
    /// leaves coarse scales nearly still: the per-scale difference tells flicker from motion.
    @Test func perScaleDifferenceSeparatesFlickerFromMotion() {
        let moving = (0..<8).map { SyntheticClip.movingPattern(t: $0, width: 128, height: 128) }
        let flickering = (0..<8).map { t -> PlanarImage in
            var image = SyntheticClip.movingPattern(t: 0, width: 128, height: 128)
            let gain: Float = t % 2 == 0 ? 1 : 0.9
            image.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] *= gain } }
            return image
        }
        let motion = analyze(moving).temporalDifference, flicker = analyze(flickering).temporalDifference
        #expect(motion[32]! < 0.5 * motion[1]!)
        #expect(flicker[32]! > 0.8 * flicker[1]!)
    }

    /// The same numbers come out of a lossless file read through the streaming loop.
    @Test func fileThroughStreamingLoopMatches() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<12).map { SyntheticClip.flat(level: $0 % 2 == 0 ? 60 : 64, width: 64, height: 48) }
        let path = try SyntheticClip.write(frames, to: dir.file("alt.mkv"), codec: "ffv1")
        let analyzer = FlickerAnalyzer()
        let source = try Media.openSource(path)
        let done = try StreamingProcessor.run(source: source, sink: nil) { frame in
            analyzer.add(frame.image, seconds: Double(frame.pts) * source.info.timeBase.value)
        }
        #expect(done.framesDone == 12)
        #expect(abs(analyzer.summary.brightnessFlicker - 4) < 1e-3)
        let report = FlickerReport(input: path, analyzer: analyzer)
        let json = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as! [String: Any]
        for key in ["frames", "brightness_flicker", "flicker_index", "percent_flicker", "temporal_difference"] {
            #expect(json[key] != nil, "missing \(key)")
        }
        #expect((json["temporal_difference"] as! [String: Double]).keys.sorted() == ["1", "16", "2", "32", "4", "8"])
        #expect(report.csv.split(separator: "\n").count == 13)
        #expect(report.svg.hasPrefix("<svg") && report.svg.contains("polyline"))
    }
}

@Suite struct StreamingProcessorTests {
    /// The processor sees every frame in order, and the output holds what it returned.
    @Test func processesEveryFrameInOrder() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<10).map { SyntheticClip.flat(level: 10 * $0, width: 32, height: 32) }
        let input = try SyntheticClip.write(frames, to: dir.file("in.mkv"), codec: "ffv1")
        let source = try Media.openSource(input)
        let output = dir.file("out")
        let sink = try Media.openSink(output, info: source.info, inputs: [input], overwrite: false)
        var seen: [Int] = []
        try StreamingProcessor.run(source: source, sink: sink) { frame in
            seen.append(frame.index)
            frame.image.withUnsafeMutableBufferPointer { b in for i in b.indices { b[i] = 1 - b[i] } }
        }
        #expect(seen == Array(0..<10))
        let (_, written) = try SyntheticClip.readAll(output)
        #expect(written.map { Int(($0.image[0, 0, 0] * 255).rounded()) } == (0..<10).map { 255 - 10 * $0 })
    }

    /// A failure mid-stream leaves nothing under the output name and no temporary file.
    @Test func failureLeavesNoOutput() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<10).map { SyntheticClip.movingPattern(t: $0, width: 64, height: 48) }
        let input = try SyntheticClip.write(frames, to: dir.file("in.mkv"), codec: "ffv1")
        let source = try Media.openSource(input)
        let sink = try Media.openSink(dir.file("out.mp4"), info: source.info, inputs: [input], overwrite: false)
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try StreamingProcessor.run(source: source, sink: sink) { frame in if frame.index == 5 { throw Boom() } }
        }
        #expect(dir.contents == ["in.mkv"])
    }

    /// A truncated input: what decodes is written in full and the damage is logged; refusing
    /// damage leaves nothing.
    @Test func damagedInputIsWrittenAsFarAsItDecodes() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("cut.mp4")
        try writeTruncatedClip(to: input, size: "160x120", seconds: 3)
        let log = DamageLog()
        let source = try Media.openSource(input, damageLog: log)
        let sink = try Media.openSink(dir.file("out.mkv"), info: source.info, inputs: [input], overwrite: false,
                                      options: EncoderOptions(codec: "ffv1"))
        let done = try StreamingProcessor.run(source: source, sink: sink) { _ in }
        #expect(log.entries.count == 1)
        #expect(log.entries.first?.framesDecoded == done.framesDone)
        #expect(try SyntheticClip.readAll(dir.file("out.mkv")).frames.count == done.framesDone)

        let strict = try Media.openSource(input, damageLog: DamageLog(policy: .refuse))
        let refused = try Media.openSink(dir.file("strict.mkv"), info: strict.info, inputs: [input], overwrite: false)
        do {
            try StreamingProcessor.run(source: strict, sink: refused) { _ in }
            Issue.record("a truncated input was processed under .refuse")
        } catch let error as MediaError {
            #expect(error.kind == .damaged)
        }
        #expect(dir.contents == ["cut.mp4", "out.mkv"])
    }
}

@Suite struct WarpingErrorTests {
    static func moving(_ t: Int, gain: Float = 1) -> PlanarImage {
        let raw = texture(channels: 3, width: 96, height: 64, dx: 0.6 * Double(t), dy: 0.3 * Double(t), seed: 4)
        return PlanarImage(channels: 3, height: 64, width: 96, values: raw.values.map { min(max(gain * (0.5 + 0.08 * $0), 0), 1) })
    }

    @Test func staticClipHasZeroWarpingError() {
        let meter = WarpingErrorMeter()
        let frame = Self.moving(0)
        for _ in 0..<4 { meter.add(guide: frame, output: frame) }
        #expect(meter.series.count == 3)
        // A frame matched with itself moves by float rounding at most (1.9e-10 here).
        #expect(meter.ewarp < 1e-8 && meter.ewarpFirst < 1e-8, "\(meter.ewarp) \(meter.ewarpFirst)")
    }

    /// Motion alone is followed by the warp and costs little; a per-frame gain on top of the same
    /// motion (guided by the clean frames) is flicker, and E_warp sees it.
    @Test func flickerRaisesTheWarpingErrorMotionDoesNot() {
        let stable = WarpingErrorMeter(), flickering = WarpingErrorMeter()
        for t in 0..<6 {
            let clean = Self.moving(t)
            stable.add(guide: clean, output: clean)
            flickering.add(guide: clean, output: Self.moving(t, gain: t % 2 == 0 ? 1 : 0.85))
        }
        #expect(stable.ewarp < 2e-4, "stable \(stable.ewarp)")
        #expect(flickering.ewarp > 10 * stable.ewarp, "flickering \(flickering.ewarp) vs stable \(stable.ewarp)")
    }
}

@Suite struct LevelDriftTests {
    /// The level drift sees a slow creep of the brightness (a ramp to +4 levels over 100 frames:
    /// its last 31 frames average 3.4 above the original), not a flicker that averages out over
    /// the window (±2 levels every other frame), and nothing where the video is its original.
    @Test func levelDriftSeesACreepNotAFlicker() {
        var drift = LevelDrift(), same = LevelDrift(), flickerOnly = LevelDrift()
        for t in 0..<100 {
            let original = PlanarImage(channels: 3, height: 8, width: 8, values: [Float](repeating: 0.5, count: 192))
            let flicker: Float = (t % 2 == 0 ? 2 : -2) / 255
            let creep = Float(4 * t) / 99 / 255
            drift.add(PlanarImage(channels: 3, height: 8, width: 8, values: [Float](repeating: 0.5 + creep + flicker, count: 192)), original: original)
            flickerOnly.add(PlanarImage(channels: 3, height: 8, width: 8, values: [Float](repeating: 0.5 + flicker, count: 192)), original: original)
            same.add(original, original: original)
        }
        #expect(abs(drift.value - 3.41) < 0.1, "\(drift.value)")
        #expect(flickerOnly.value < 0.1 && same.value == 0)
    }
}

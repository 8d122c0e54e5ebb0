import Foundation
import MediaIO
import Tensor
import Testing
import TestSupport

@Suite struct SegmentTests {
    @Test func parsesRanges() {
        #expect(FrameRange("10:20") == FrameRange(start: 10, end: 20))
        #expect(FrameRange("10:") == FrameRange(start: 10, end: nil))
        #expect(FrameRange(":5") == FrameRange(start: 0, end: 5))
        for bad in ["", "5", "5:5", "6:5", "-1:3", "a:b", "1:2:3"] { #expect(FrameRange(bad) == nil, "\(bad)") }
    }

    /// Two segments cut at the same index hold the whole video's frames, timestamps and audio,
    /// each exactly once.
    @Test func segmentsConcatenateIntoTheWhole() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.mkv")
        try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
                    "-c:v", "ffv1", "-c:a", "flac", "-shortest", input])
        func run(_ range: FrameRange?, _ name: String) throws -> String {
            let source = try Media.openSource(input, frames: range)
            let output = dir.file(name)
            let sink = try Media.openSink(output, info: source.info, inputs: [input], overwrite: false, options: EncoderOptions(codec: "ffv1"))
            while let frame = try source.next() { try sink.write(frame) }
            try sink.finish()
            return output
        }
        let whole = try SyntheticClip.readAll(try run(nil, "whole.mkv")).frames
        let first = try SyntheticClip.readAll(try run(FrameRange("0:7"), "a.mkv")).frames
        let second = try SyntheticClip.readAll(try run(FrameRange("7:"), "b.mkv")).frames
        #expect(whole.count == 20 && first.count == 7 && second.count == 13)
        for (a, b) in zip(whole, first + second) {
            #expect(a.image.isIdentical(to: b.image), "frame \(a.index)")
            #expect(a.pts == b.pts, "frame \(a.index): pts \(a.pts) vs \(b.pts)")
        }
        let audio = { (name: String) in try PacketProbe.packets(dir.file(name), kind: .audio).map(\.checksum) }
        let (all, partA, partB) = (try audio("whole.mkv"), try audio("a.mkv"), try audio("b.mkv"))
        #expect(!partA.isEmpty && !partB.isEmpty)
        #expect(partA + partB == all)
    }

    @Test func rangeOutsideTheVideoIsAnError() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<5).map { SyntheticClip.flat(level: $0, width: 16, height: 16) }
        let input = try SyntheticClip.write(frames, to: dir.file("in.mkv"), codec: "ffv1")
        do {
            let source = try Media.openSource(input, frames: FrameRange("8:10"))
            while try source.next() != nil {}
            Issue.record("a range past the end was accepted")
        } catch let error as MediaError {
            #expect(error.kind == .invalidArgument)
            #expect(error.description == "\(input): frames 8:10 are outside the video, which has 5 frames")
        }
        // END past the last frame is fine: the segment runs to the end.
        let source = try Media.openSource(input, frames: FrameRange("3:100"))
        var indices: [Int] = []
        while let frame = try source.next() { indices.append(frame.index) }
        #expect(indices == [3, 4])
    }
}

@Suite struct ReadFramesTests {
    @Test func readsChosenFramesAndRefusesIndicesPastTheEnd() throws {
        let dir = TemporaryDirectory()
        let frames = (0..<6).map { SyntheticClip.flat(level: 20 * $0, width: 16, height: 16) }
        let input = try SyntheticClip.write(frames, to: dir.file("in.mkv"), codec: "ffv1")
        let chosen = try Media.readFrames(input, indices: [1, 4])
        #expect(chosen.keys.sorted() == [1, 4])
        #expect(chosen[4]!.image.isIdentical(to: frames[4]))
        do {
            _ = try Media.readFrames(input, indices: [2, 9])
            Issue.record("index 9 of 6 frames was accepted")
        } catch let error as MediaError {
            #expect(error.description == "\(input): frame 9 is outside the video, which has 6 frames (0 to 5)")
        }
    }
}

import Foundation

/// Frames START:END of an input, by index in decode order from 0, END excluded; either side may
/// be left out ("100:" is from frame 100 to the end, ":50" the first 50 frames). Segments cut at
/// the same indices tile the video: 0:100 and 100: together hold every frame once.
public struct FrameRange: Equatable, Sendable, CustomStringConvertible {
    public var start: Int
    public var end: Int?

    public init(start: Int = 0, end: Int? = nil) {
        self.start = start
        self.end = end
    }

    /// Parses "START:END"; nil when the text is not of that form or END ≤ START.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let start = parts[0].isEmpty ? 0 : Int(parts[0])
        let end = parts[1].isEmpty ? nil : Int(parts[1])
        guard let start, start >= 0, parts[1].isEmpty || end != nil else { return nil }
        if let end, end <= start { return nil }
        self.init(start: start, end: end)
    }

    public func contains(_ index: Int) -> Bool { index >= start && (end.map { index < $0 } ?? true) }

    public var description: String { "\(start):\(end.map(String.init) ?? "")" }
}

/// The frames of `base` inside `range`, keeping their indices and timestamps. Frames before the
/// range are decoded and dropped (a frame's index is its position in decode order, which only
/// decoding from the start can tell). A range that starts past the end is an error.
public final class FrameRangeSource: FrameSource {
    public let base: FrameSource
    public let range: FrameRange
    public var path: String { base.path }
    public private(set) var info: StreamInfo
    private var finished = false

    public init(_ base: FrameSource, range: FrameRange) {
        self.base = base
        self.range = range
        var info = base.info
        if let total = info.declaredFrameCount {
            info.declaredFrameCount = max(0, min(total, range.end ?? total) - range.start)
        }
        info.segment = range
        self.info = info
    }

    /// Frames before the range that are decoded anyway, handed to whoever needs to see them
    /// (`observe`) before they are dropped.
    private var observer: (frames: Range<Int>, body: (VideoFrame) throws -> Void)?

    /// `body` sees each of `frames` (before the range) as it is decoded, in order, before the
    /// first frame of the range is returned.
    public func observe(_ frames: Range<Int>, _ body: @escaping (VideoFrame) throws -> Void) {
        observer = (frames, body)
    }

    public func next() throws -> VideoFrame? {
        if finished { return nil }
        while let frame = try base.next() {
            framesSeen = frame.index + 1
            if frame.index < range.start {
                if let observer, observer.frames.contains(frame.index) { try observer.body(frame) }
                continue
            }
            if range.contains(frame.index) { return frame }
            finished = true  // past the end: stop without decoding the rest
            return nil
        }
        finished = true
        reachedInputEnd = true
        // The input ended: fine if the range reached into it (its END may lie past the last
        // frame), an error if it started beyond it.
        if framesSeen <= range.start {
            throw MediaError(.invalidArgument, path: path, "frames \(range) are outside the video, which has \(framesSeen) frames")
        }
        return nil
    }

    private var framesSeen = 0
    public private(set) var reachedInputEnd = false
}

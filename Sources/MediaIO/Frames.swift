import Foundation
import CFFmpeg
import Tensor

/// A rational number, as FFmpeg's AVRational.
public struct Rational: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var numerator: Int32
    public var denominator: Int32
    public init(_ numerator: Int32, _ denominator: Int32) {
        self.numerator = numerator
        self.denominator = denominator
    }
    init(_ r: AVRational) { self.init(r.num, r.den) }
    var av: AVRational { AVRational(num: numerator, den: denominator) }
    public var value: Double { denominator == 0 ? 0 : Double(numerator) / Double(denominator) }
    public var isValid: Bool { numerator > 0 && denominator > 0 }
    public var description: String { "\(numerator)/\(denominator)" }
}

/// How the source's RGB relates to its coded YUV, carried to the output so that a pass-through
/// keeps the colours. Values are FFmpeg's AVColorSpace / AVColorRange / primaries / transfer.
public struct ColorInfo: Equatable, Sendable {
    public var matrix: Int32
    public var range: Int32
    public var primaries: Int32
    public var transfer: Int32

    /// BT.709 for HD and larger, BT.601 below: what players assume when a stream says nothing.
    public static func defaultFor(height: Int) -> ColorInfo {
        height >= 720
            ? ColorInfo(matrix: Int32(AVCOL_SPC_BT709.rawValue), range: Int32(AVCOL_RANGE_MPEG.rawValue),
                        primaries: Int32(AVCOL_PRI_BT709.rawValue), transfer: Int32(AVCOL_TRC_BT709.rawValue))
            : ColorInfo(matrix: Int32(AVCOL_SPC_SMPTE170M.rawValue), range: Int32(AVCOL_RANGE_MPEG.rawValue),
                        primaries: Int32(AVCOL_PRI_SMPTE170M.rawValue), transfer: Int32(AVCOL_TRC_SMPTE170M.rawValue))
    }
}

/// What a source knows about its video before the first frame.
public struct StreamInfo: Sendable {
    /// Frame size after rotation is applied: the size of every `VideoFrame.image`.
    public var width: Int
    public var height: Int
    /// The unit of `VideoFrame.pts` and `duration`.
    public var timeBase: Rational
    /// Average frame rate (nominal for frame directories).
    public var frameRate: Rational
    public var sampleAspectRatio: Rational
    /// Frames the container declares, when it does; nil when unknown.
    public var declaredFrameCount: Int?
    public var codecName: String
    public var bitsPerComponent: Int
    /// The decoded pixel format (e.g. "yuv420p"), which a writer keeps when its encoder can.
    public var pixelFormat: String?
    public var color: ColorInfo
    /// The input file, when the source is a single file (audio and subtitles are copied from it).
    public var sourceFile: String?
    /// Set when only some frames of the input are read: audio is then copied for their time span only.
    public var segment: FrameRange?
    /// Whether the decoded frames carry an alpha channel, which Lockstep does not keep: its
    /// frames are colour only, and what it writes is opaque.
    public var hasAlpha = false
    /// Whether the stream says its frames are interlaced (two fields each). Lockstep processes
    /// and writes whole frames, so the output is progressive.
    public var isInterlaced = false
    /// Streams other than the video that cannot be copied to the output ("stream 1 (aac)"): a
    /// stream on stdin is read once, and the copy of audio and subtitles reads the input again.
    public var unreadStreams: [String] = []

    public init(width: Int, height: Int, timeBase: Rational, frameRate: Rational,
                sampleAspectRatio: Rational = Rational(1, 1), declaredFrameCount: Int? = nil,
                codecName: String = "rawvideo", bitsPerComponent: Int = 8, pixelFormat: String? = nil,
                color: ColorInfo? = nil, sourceFile: String? = nil) {
        self.width = width
        self.height = height
        self.timeBase = timeBase
        self.frameRate = frameRate
        self.sampleAspectRatio = sampleAspectRatio
        self.declaredFrameCount = declaredFrameCount
        self.codecName = codecName
        self.bitsPerComponent = bitsPerComponent
        self.pixelFormat = pixelFormat
        self.color = color ?? .defaultFor(height: height)
        self.sourceFile = sourceFile
    }
}

/// One decoded frame: RGB in [0, 1] (planes R, G, B) and its timing in the stream's time base.
public struct VideoFrame: Sendable {
    private var picture: Picture
    public var pts: Int64
    public var duration: Int64
    /// Position in decode order of the input, from 0.
    public var index: Int

    /// The picture, as floats. A frame from a decoder is converted when this is first read, on
    /// the thread that reads it (see `Picture`).
    public var image: PlanarImage {
        get { picture.image }
        set {
            picture = Picture(newValue)
            // A picture prepared for the sink (`encoded`) showed the old image.
            encoded = nil
        }
    }

    /// The picture `factor` × `factor` average-pooled (`PlanarImage.averagePooled`), the same
    /// values; from a decoder, made straight from its picture where the conversion can (the
    /// full-size floats are then never made: deflicker's analysis reads only this).
    public func pooledImage(_ factor: Int) -> PlanarImage {
        factor == 1 ? picture.image : picture.pooledImage(factor)
    }

    /// The picture, which the frame no longer holds: the caller's copy is then the only one,
    /// so that it can change it in place (set it back with `image`).
    public mutating func takeImage() -> PlanarImage {
        let image = picture.take()
        picture = Picture { preconditionFailure("a frame's image is read after it was taken") }
        return image
    }

    public init(image: PlanarImage, pts: Int64, duration: Int64, index: Int) {
        self.init(picture: Picture(image), pts: pts, duration: duration, index: index)
    }

    init(picture: Picture, pts: Int64, duration: Int64, index: Int) {
        self.picture = picture
        self.pts = pts
        self.duration = duration
        self.index = index
    }

    /// The picture in the sink's own format, made by `FrameSink.prepare`; the float picture is
    /// let go then, and is not to be read again.
    var encoded: OwnedFrame?

    mutating func replaceImage(by encoded: OwnedFrame) {
        self.encoded = encoded
        picture = Picture { preconditionFailure("a frame prepared for its sink is not read again") }
    }
}

/// A frame's picture: floats, or still the decoder's own picture, converted the first time it
/// is asked for. A frame waiting in a queue then holds the coded picture (at 8-bit 4:2:0, an
/// eighth of the floats' size: 3 MB rather than 25 at 1080p), and a frame nobody looks at (one
/// skipped to reach a segment or a keyframe) is never converted.
final class Picture: @unchecked Sendable {
    private let lock = NSLock()
    private var converted: PlanarImage?
    private var convert: (() -> PlanarImage)?
    /// The picture pooled by a factor straight from the decoder's, or nil where it cannot be.
    private var pool: ((Int) -> PlanarImage?)?

    init(_ image: PlanarImage) { converted = image }

    /// `convert` is called at most once, and released (with what it holds) once it has been.
    init(converting convert: @escaping () -> PlanarImage, pooling pool: ((Int) -> PlanarImage?)? = nil) {
        self.convert = convert
        self.pool = pool
    }

    /// `image.averagePooled(factor)`, without converting the full-size picture where it has not
    /// been converted yet and `pool` can make it.
    func pooledImage(_ factor: Int) -> PlanarImage {
        lock.lock()
        if converted == nil, let pool, let pooled = pool(factor) {
            lock.unlock()
            return pooled
        }
        lock.unlock()
        return image.averagePooled(factor)
    }

    var image: PlanarImage {
        lock.lock()
        defer { lock.unlock() }
        if let converted { return converted }
        let image = convert!()
        converted = image
        convert = nil
        pool = nil
        return image
    }

    /// The image, no longer held here: a copy of the frame that shares this picture (the
    /// stream's own, until it moves on) would otherwise keep a second reference, and the
    /// taker's first write would copy the whole image (11 MB at 720p, 2% of an edit's samples).
    func take() -> PlanarImage {
        let image = self.image
        lock.lock()
        defer { lock.unlock() }
        converted = nil
        convert = { preconditionFailure("a frame's image is read after it was taken") }
        return image
    }
}

/// Where frames come from: a video file or a directory of images.
public protocol FrameSource: AnyObject {
    var info: StreamInfo { get }
    var path: String { get }
    /// The next frame, or nil at the end. Throws `MediaError` for damage found at the end.
    func next() throws -> VideoFrame?
    /// Once `next` has returned nil: whether the frames given reach the input's last frame (a
    /// segment that stops before it does not). A writer then copies the audio to the input's end.
    var reachedInputEnd: Bool { get }
}

extension FrameSource {
    public var reachedInputEnd: Bool { true }
}

/// Where frames go: a video file or a directory of images. Nothing appears under the final
/// name until `finish()` returns; `abort()` removes everything written so far.
public protocol FrameSink: AnyObject {
    var path: String { get }
    /// Called on the producing thread before the frame waits for `write`: a sink may turn the
    /// picture into what it writes (a video writer, its coded pixel format), so that frames
    /// waiting in a queue are small and the conversion runs beside the encoder, not in its way.
    func prepare(_ frame: inout VideoFrame) throws
    func write(_ frame: VideoFrame) throws
    func finish() throws
    func abort()
    /// Called before `finish` when the frames written reach the input's last frame: a segment
    /// that does keeps the audio that runs on past it, as the whole run does.
    func inputEnded()
}

extension FrameSink {
    public func prepare(_ frame: inout VideoFrame) throws {}
    public func inputEnded() {}
}

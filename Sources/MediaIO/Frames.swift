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
    public var image: PlanarImage
    public var pts: Int64
    public var duration: Int64
    /// Position in decode order of the input, from 0.
    public var index: Int

    public init(image: PlanarImage, pts: Int64, duration: Int64, index: Int) {
        self.image = image
        self.pts = pts
        self.duration = duration
        self.index = index
    }
}

/// Where frames come from: a video file or a directory of images.
public protocol FrameSource: AnyObject {
    var info: StreamInfo { get }
    var path: String { get }
    /// The next frame, or nil at the end. Throws `MediaError` for damage found at the end.
    func next() throws -> VideoFrame?
}

/// Where frames go: a video file or a directory of images. Nothing appears under the final
/// name until `finish()` returns; `abort()` removes everything written so far.
public protocol FrameSink: AnyObject {
    var path: String { get }
    func write(_ frame: VideoFrame) throws
    func finish() throws
    func abort()
}

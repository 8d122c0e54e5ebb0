import Foundation
import MediaIO
import Tensor

/// A temporary directory, removed when the value is released.
public final class TemporaryDirectory {
    public let path: String

    public init() {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("lockstep-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        path = base.path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Names in the directory, hidden ones included, sorted.
    public var contents: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}

/// Synthetic clips made at test time: smooth moving patterns with values on the 8-bit grid,
/// so lossless paths can be checked bit for bit.
public enum SyntheticClip {
    /// Frame `t` of a colourful pattern drifting by (1, 0.5) pixels per frame.
    public static func movingPattern(t: Int, width: Int, height: Int) -> PlanarImage {
        var values = [Float](repeating: 0, count: 3 * width * height)
        for c in 0..<3 {
            for y in 0..<height {
                for x in 0..<width {
                    let u = Double(x) - Double(t), v = Double(y) - 0.5 * Double(t)
                    let value = 0.5 + 0.3 * sin(0.21 * u + 1.7 * Double(c)) * cos(0.17 * v - 0.9 * Double(c))
                        + 0.15 * sin(0.05 * (u + v))
                    values[(c * height + y) * width + x] = quantized(value)
                }
            }
        }
        return PlanarImage(channels: 3, height: height, width: width, values: values)
    }

    /// A flat grey frame at the 8-bit level `level`.
    public static func flat(level: Int, width: Int, height: Int) -> PlanarImage {
        PlanarImage(channels: 3, height: height, width: width,
                    values: [Float](repeating: Float(level) / 255, count: 3 * width * height))
    }

    /// `value` clamped to [0, 1] and rounded to the nearest multiple of 1/255.
    public static func quantized(_ value: Double) -> Float {
        Float((min(max(value, 0), 1) * 255).rounded()) / 255
    }

    /// Writes `frames` to `path` at `fps` (timestamps `pts` in a 1/1000 time base when given),
    /// in `pixelFormat` when the encoder takes it.
    @discardableResult
    public static func write(_ frames: [PlanarImage], to path: String, codec: String? = nil, crf: Int? = nil,
                             fps: Int32 = 25, pts: [Int64]? = nil, pixelFormat: String? = nil) throws -> String {
        let first = frames[0]
        let timeBase = pts == nil ? Rational(1, fps) : Rational(1, 1000)
        let info = StreamInfo(width: first.width, height: first.height, timeBase: timeBase, frameRate: Rational(fps, 1),
                              pixelFormat: pixelFormat)
        let sink = try Media.openSink(path, info: info, inputs: [], overwrite: true, options: EncoderOptions(codec: codec, crf: crf))
        for (i, image) in frames.enumerated() {
            let stamp = pts?[i] ?? Int64(i)
            let next = pts.map { i + 1 < $0.count ? $0[i + 1] : $0[i] + 40 } ?? stamp + 1
            try sink.write(VideoFrame(image: image, pts: stamp, duration: next - stamp, index: i))
        }
        try sink.finish()
        return path
    }

    /// Every frame of the video or frame directory at `path`.
    public static func readAll(_ path: String) throws -> (info: StreamInfo, frames: [VideoFrame]) {
        let source = try Media.openSource(path)
        var frames: [VideoFrame] = []
        while let frame = try source.next() { frames.append(frame) }
        return (source.info, frames)
    }
}

/// PSNR in dB between two images with values in [0, 1].
public func psnr(_ a: PlanarImage, _ b: PlanarImage) -> Double {
    let x = a.values, y = b.values
    precondition(x.count == y.count)
    var sum = 0.0
    for i in 0..<x.count { let d = Double(x[i] - y[i]); sum += d * d }
    let mse = sum / Double(x.count)
    return mse == 0 ? .infinity : 10 * log10(1 / mse)
}

/// Runs the `ffmpeg` command-line tool (for fixtures made from lavfi sources); throws on failure.
public func ffmpeg(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"] + arguments
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let message = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    if process.terminationStatus != 0 {
        throw NSError(domain: "ffmpeg", code: Int(process.terminationStatus),
                      userInfo: [NSLocalizedDescriptionKey: String(decoding: message, as: UTF8.self)])
    }
}

/// An H.264 clip of FFmpeg's testsrc2 (index at the front, so it opens) cut to its first
/// `fraction` of bytes: a download that stopped half-way.
public func writeTruncatedClip(to path: String, size: String, seconds: Int, keeping fraction: Double = 0.6) throws {
    try ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=\(size):rate=25:duration=\(seconds)", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                "-g", "25", "-movflags", "+faststart", path])
    try truncate(path, keeping: fraction)
}

/// Cuts `path` to its first `fraction` of bytes, as an interrupted download would.
public func truncate(_ path: String, keeping fraction: Double) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    try data.prefix(Int(Double(data.count) * fraction)).write(to: URL(fileURLWithPath: path))
}

/// A deterministic generator (SplitMix64), so fixtures are the same on every run.
public struct SeededRandom {
    public var state: UInt64
    public init(_ seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

/// A pipe read to its end on a thread of its own; `data()` waits for that end.
public final class DrainedPipe: @unchecked Sendable {
    private var contents = Data()
    private let done = DispatchSemaphore(value: 0)

    public init(_ pipe: Pipe) {
        DispatchQueue.global().async { [self] in
            contents = pipe.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
    }

    /// Everything the pipe carried; `contents` is written once, before the signal this waits on.
    public func data() -> Data {
        done.wait()
        return contents
    }
}

/// A scene for the synthesis: red discs of radius 10.5 over a background; `outlined`, the
/// background within 4 px of each disc darkened to a quarter (a style no function of colour can
/// give: the same background colour is darkened beside a disc and not elsewhere).
public enum DiscScene {
    public static func discs(_ at: [(Double, Double)], outlined: Bool, over background: PlanarImage) -> PlanarImage {
        var values = background.values
        let n = background.planeSize, w = background.width
        for y in 0..<background.height { for x in 0..<w {
            let d = at.map { hypot(Double(x) - $0.0, Double(y) - $0.1) }.min()!
            let inside = Float(min(max(10.5 - d, 0), 1))  // antialiased edge
            let colours: [Float] = [0.85, 0.25, 0.2]
            for ch in 0..<3 {
                let i = ch * n + y * w + x
                var v = values[i]
                v += inside * (colours[ch] - v)
                if outlined && d >= 10.5 && d < 14.5 { v *= 0.25 }
                values[i] = v
            }
        } }
        return PlanarImage(channels: 3, height: background.height, width: w, values: values)
    }

    /// `image` under fresh uniform noise (σ = 0.02), the same for the same seed.
    public static func noisy(_ image: PlanarImage, seed: UInt64) -> PlanarImage {
        var random = SeededRandom(seed)
        return PlanarImage(channels: 3, height: image.height, width: image.width,
                           values: image.values.map { min(max($0 + 0.07 * Float(random.uniform() - 0.5), 0), 1) })
    }
}

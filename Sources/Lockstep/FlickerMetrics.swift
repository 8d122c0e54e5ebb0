import Tensor

/// Temporal flicker of a frame sequence, measured as in DESIGN.md ("Flicker metrics"):
/// - the mean luma per frame (BT.709 weights, 8-bit units) and its frame-to-frame change;
/// - the flicker index and percent flicker of that series (IES definitions, as for lamps);
/// - the temporal difference mean |x_t − x_{t−1}| after s×s average pooling, per scale s:
///   flicker lives at coarse scales, motion at fine ones.
/// Frames are fed one at a time; only the previous frame's pooled pyramid is kept.
public final class FlickerAnalyzer {
    /// Pooling sizes of the temporal difference.
    public static let scales = [1, 2, 4, 8, 16, 32]

    public struct FrameRecord: Sendable {
        public var index: Int
        public var seconds: Double
        /// Mean luma in 8-bit units.
        public var meanLuma: Double
        /// Change of mean luma from the previous frame (nil for the first frame).
        public var lumaChange: Double?
        /// Mean |x_t − x_{t−1}| per scale in 8-bit units, in `scales` order (empty for the first frame).
        public var temporalDifference: [Double]
    }

    public struct Summary: Sendable {
        public var frames: Int
        public var width: Int
        public var height: Int
        /// Mean |ΔY| between consecutive frames, 8-bit units.
        public var brightnessFlicker: Double
        /// Largest |ΔY| between consecutive frames, 8-bit units.
        public var maxBrightnessChange: Double
        public var meanLuma: Double
        /// Area of the luma series above its mean over its total area (0 for a constant series).
        public var flickerIndex: Double
        /// 100 · (max − min) / (max + min) of the luma series.
        public var percentFlicker: Double
        /// Mean temporal difference per pooling scale, keyed by the scale.
        public var temporalDifference: [Int: Double]
    }

    public private(set) var records: [FrameRecord] = []
    private var previous: [PlanarImage] = []
    private var width = 0, height = 0

    public init() {}

    /// Adds the next frame (RGB in [0, 1]) shown at `seconds`; `index`, its place in the input
    /// (a `--frames` segment's frames keep theirs), by default the next.
    public func add(_ image: PlanarImage, seconds: Double, index: Int? = nil) {
        let pyramid = Self.pyramid(image)
        let luma = Self.meanLuma(image) * 255
        var record = FrameRecord(index: index ?? (records.last.map { $0.index + 1 } ?? 0), seconds: seconds, meanLuma: luma, lumaChange: nil, temporalDifference: [])
        if let last = records.last, previous.count == pyramid.count {
            record.lumaChange = luma - last.meanLuma
            record.temporalDifference = zip(pyramid, previous).map { Self.meanAbsoluteDifference($0, $1) * 255 }
        }
        width = image.width
        height = image.height
        records.append(record)
        previous = pyramid
    }

    public var summary: Summary {
        let lumas = records.map(\.meanLuma)
        let changes = records.compactMap(\.lumaChange).map(abs)
        let mean = lumas.isEmpty ? 0 : lumas.reduce(0, +) / Double(lumas.count)
        let total = lumas.reduce(0, +)
        let above = lumas.reduce(0) { $0 + max($1 - mean, 0) }
        let (lo, hi) = (lumas.min() ?? 0, lumas.max() ?? 0)
        var tdiff: [Int: Double] = [:]
        let withDiff = records.filter { !$0.temporalDifference.isEmpty }
        for (k, scale) in Self.scales.enumerated() {
            let values = withDiff.compactMap { k < $0.temporalDifference.count ? $0.temporalDifference[k] : nil }
            if !values.isEmpty { tdiff[scale] = values.reduce(0, +) / Double(values.count) }
        }
        return Summary(
            frames: records.count, width: width, height: height,
            brightnessFlicker: changes.isEmpty ? 0 : changes.reduce(0, +) / Double(changes.count),
            maxBrightnessChange: changes.max() ?? 0,
            meanLuma: mean,
            flickerIndex: total > 0 ? above / total : 0,
            percentFlicker: hi + lo > 0 ? 100 * (hi - lo) / (hi + lo) : 0,
            temporalDifference: tdiff)
    }

    // MARK: - Kernels

    /// BT.709 luma averaged over the frame, in [0, 1].
    static func meanLuma(_ image: PlanarImage) -> Double {
        let n = image.planeSize
        return image.withUnsafeBufferPointer { buffer in
            let r = buffer.baseAddress!, g = r + n, b = g + n
            return parallelSum(n) { lo, hi in
                // Eight partial sums, in vector lanes: one running sum is a chain of additions
                // each waiting on the last, which the compiler may not reorder.
                var lanes = SIMD8<Float>()
                var j = lo
                while j &+ 8 <= hi {
                    lanes += 0.2126 * load8(r + j) + 0.7152 * load8(g + j) + 0.0722 * load8(b + j)
                    j &+= 8
                }
                var block = lanes.sum()
                while j < hi { block += 0.2126 * r[j] + 0.7152 * g[j] + 0.0722 * b[j]; j &+= 1 }
                return block
            } / Double(n)
        }
    }

    /// The frame and its 2×2 average-pooled reductions: level k is the 2^k × 2^k pooling.
    static func pyramid(_ image: PlanarImage) -> [PlanarImage] {
        var levels = [image]
        for _ in 1..<scales.count {
            let last = levels.last!
            guard last.width >= 2, last.height >= 2 else { break }
            levels.append(last.averagePooled2())
        }
        return levels
    }

    /// Mean |a − b| over all samples.
    static func meanAbsoluteDifference(_ a: PlanarImage, _ b: PlanarImage) -> Double {
        precondition(a.count == b.count)
        let n = a.count
        return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in
            let x = pa.baseAddress!, y = pb.baseAddress!
            return parallelSum(n) { lo, hi in
                var lanes = SIMD8<Float>()  // as in `meanLuma`
                var j = lo
                while j &+ 8 <= hi {
                    let d = load8(x + j) - load8(y + j)
                    lanes += d.replacing(with: -d, where: d .< 0)
                    j &+= 8
                }
                var block = lanes.sum()
                while j < hi { block += abs(x[j] - y[j]); j &+= 1 }
                return block
            } / Double(n)
        } }
    }
}

/// Brightness flicker alone, kept as a running figure: the mean |ΔY| between consecutive frames'
/// mean luma, on the 8-bit scale (as `FlickerAnalyzer.Summary.brightnessFlicker`).
public struct BrightnessFlicker: Sendable {
    private var last: Double?
    private var total = 0.0
    private var changes = 0

    public init() {}

    public mutating func add(_ image: PlanarImage) {
        add(luma: FlickerAnalyzer.meanLuma(image))
    }

    /// Adds a frame by its mean luma, in [0, 1].
    public mutating func add(luma: Double) {
        let level = luma * 255
        if let last { total += abs(level - last); changes += 1 }
        last = level
    }

    public var value: Double { changes > 0 ? total / Double(changes) : 0 }
}

/// How far a video's brightness wanders from its original's: the largest |mean over `window`
/// consecutive frames of (mean luma − the original's mean luma)|, in 8-bit levels (over the
/// whole video when it is shorter). Flicker averages out over the window; a drift (errors that
/// add up along a chain of references, a tone that creeps) does not.
public struct LevelDrift: Sendable {
    /// About a second of video.
    public static let window = 31
    private var differences: [Double] = []

    public init() {}

    /// Adds the next frame and its original (the same size).
    public mutating func add(_ image: PlanarImage, original: PlanarImage) {
        differences.append((FlickerAnalyzer.meanLuma(image) - FlickerAnalyzer.meanLuma(original)) * 255)
    }

    public var value: Double {
        guard !differences.isEmpty else { return 0 }
        let span = min(Self.window, differences.count)
        var sum = differences[..<span].reduce(0, +), largest = abs(sum)
        for end in stride(from: span, to: differences.count, by: 1) {
            sum += differences[end] - differences[end - span]
            largest = max(largest, abs(sum))
        }
        return largest / Double(span)
    }
}

/// Eight values from `p` on, as one vector.
@inline(__always) private func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

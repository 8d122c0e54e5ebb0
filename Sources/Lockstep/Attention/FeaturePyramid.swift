import Tensor

/// Features for matching, one level of a pyramid. Each position is described by its 3×3
/// neighbourhood of feature vectors (C·9 values, unit length): single positions of smooth
/// features are too alike to match reliably; their neighbourhoods are not. The descriptors are
/// stored position-major, for windowed dot products and (as the transposed operand) for the
/// matrix product of global attention. The unit-length C-vector of each position alone is kept
/// too, for sub-sample refinement.
public struct FeatureLevel: Sendable {
    public let channels: Int
    public let height: Int
    public let width: Int
    /// Values per descriptor: channels × 9, padded with zeros to a multiple of 8 so that dot
    /// products run in whole SIMD8 steps.
    public var descriptorLength: Int { (channels * 9 + 7) / 8 * 8 }
    /// (y·width + x)·descriptorLength + d
    let positionMajor: [Float]
    /// (y·width + x)·channels + c: each position's own features, unit length.
    let pointFeatures: [Float]

    public var count: Int { height * width }
    /// The share of positions whose neighbourhood is above the contrast floor: 1 without one.
    /// What is below it has nothing to be matched by.
    public let detailedShare: Float

    /// Removes each channel's mean, so dot products are correlations and flat regions score
    /// near 0, then builds the normalised descriptors (edges mirrored).
    ///
    /// `contrastFloor`: the rms value per descriptor entry below which a neighbourhood counts as
    /// flat. Its descriptor is then scaled by the floor instead of its own length, so it stays
    /// short and scores near 0 against every key: the attention's motion prior decides where it
    /// goes, not whatever its noise happens to correlate with. 0 normalises every descriptor.
    public init(_ features: PlanarImage, contrastFloor: Float = 0) {
        channels = features.channels
        height = features.height
        width = features.width
        let n = features.planeSize, c = features.channels, w = width, h = height
        var planar = features.values
        for ch in 0..<c {
            var mean: Double = 0
            for i in 0..<n { mean += Double(planar[ch * n + i]) }
            let m = Float(mean / Double(n))
            for i in 0..<n { planar[ch * n + i] -= m }
        }
        let length = (c * 9 + 7) / 8 * 8
        let floor = max(contrastFloor * Float(c * 9).squareRoot(), 1e-6)
        var descriptors = [Float](repeating: 0, count: n * length)
        var points = [Float](repeating: 0, count: n * c)
        var detailedRows = [Int](repeating: 0, count: h)
        planar.withUnsafeBufferPointer { src in
        descriptors.withUnsafeMutableBufferPointer { dst in
        points.withUnsafeMutableBufferPointer { pts in
        detailedRows.withUnsafeMutableBufferPointer { rowCounts in
            let s = src.baseAddress!, d = dst.baseAddress!, pp = pts.baseAddress!, detailed = rowCounts.baseAddress!
            parallelChunks(h, minimumChunk: 4) { rows in
                for y in rows {
                    for x in 0..<w {
                        let i = y &* w &+ x
                        let out = d + i &* length
                        var k = 0
                        for dy in -1...1 {
                            let yy = min(max(y + dy, 0), h - 1)
                            for dx in -1...1 {
                                let xx = min(max(x + dx, 0), w - 1)
                                for ch in 0..<c { out[k] = s[ch &* n &+ yy &* w &+ xx]; k &+= 1 }
                            }
                        }
                        var norm: Float = 0
                        for j in 0..<length { norm += out[j] * out[j] }
                        if norm.squareRoot() >= floor { detailed[y] += 1 }
                        let scale = 1 / max(norm.squareRoot(), floor)
                        for j in 0..<length { out[j] *= scale }
                        var pointNorm: Float = 0
                        for ch in 0..<c { let v = s[ch &* n &+ i]; pointNorm += v * v }
                        let pointScale = 1 / max(pointNorm.squareRoot(), 1e-6)
                        for ch in 0..<c { pp[i &* c &+ ch] = s[ch &* n &+ i] * pointScale }
                    }
                }
            }
        } } } }
        positionMajor = descriptors
        pointFeatures = points
        detailedShare = contrastFloor > 0 ? Float(detailedRows.reduce(0, +)) / Float(max(n, 1)) : 1
    }
}

/// A feature map and its 2×2-pooled reductions, finest first. Coarse levels only steer the
/// search; the finest level searched decides the sub-pixel result. Sample X of level l+1 pools
/// samples 2X and 2X+1 of level l, so it sits at 2X + ½ in level-l coordinates. Levels finer
/// than the finest the search reaches are not built: level 0's descriptors alone are three
/// quarters of the work and, at 720p, 4 MB a frame.
public struct FeaturePyramid: Sendable {
    /// Levels `finest`, `finest` + 1, …, finest first.
    private let built: [FeatureLevel]
    /// The finest level built.
    public let finest: Int
    /// Level 0's grid, built or not.
    public let width: Int, height: Int

    /// How many levels there are, counting those not built.
    public var depth: Int { finest + built.count }

    /// Level `level` (from 0, the finest), which must be built.
    public subscript(level: Int) -> FeatureLevel {
        precondition(level >= finest, "level \(level) of a pyramid built from level \(finest)")
        return built[level - finest]
    }

    /// Up to `levels` levels, stopping before a level would be smaller than `minimumSide`, built
    /// from level `finest` (or the coarsest there is, if there are fewer); `contrastFloor` as
    /// `FeatureLevel` takes it, on every level.
    public init(_ features: PlanarImage, levels: Int, from finest: Int = 0, minimumSide: Int = 6, contrastFloor: Float = 0) {
        var maps = [features]
        while maps.count < levels, let last = maps.last, min(last.width, last.height) / 2 >= minimumSide {
            maps.append(last.averagePooled2())
        }
        self.finest = min(max(finest, 0), maps.count - 1)
        built = maps[self.finest...].map { FeatureLevel($0, contrastFloor: contrastFloor) }
        width = features.width
        height = features.height
    }
}
